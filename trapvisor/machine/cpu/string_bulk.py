"""Bulk execution of REP string instructions over RAM, with the per-iteration result.

A REP MOVS/STOS/LODS/CMPS/SCAS repeats one element operation ECX times
(SDM Vol. 2, REP/REPE/REPNE).  ``ops_string`` runs it element by element
(the reference); this module runs a *run* of iterations as one operation
on the bytes of guest RAM, where that gives exactly the same architectural
state as the iterations one by one.  A run is the longest stretch of
iterations, from the current ECX/ESI/EDI on, in which

* every element passes its segment checks (SDM Vol. 3A §5.3-5.5) -- the
  allowed offsets of a segment are worked out once (``seg_window``), and a
  segment that needs per-access checks (alignment checking, data breakpoints,
  a null or unusable selector) gives no run;
* the elements of each operand lie in one linear page and do not wrap the
  16- or 32-bit address size, so one translation (TLB or page walk, in the
  order the iterations would make them: source, then destination) covers the
  run, and a #PF is raised at the first iteration that would raise it, with
  CR2 and the registers of that iteration (SDM Vol. 3A §6.5: string
  instructions are restartable at the element that faulted);
* the memory is RAM (MMIO goes element by element: a device sees each
  access) and, for a store, not a page holding decoded code (the element
  path drops that page's blocks at the first store, then the runs go on);
* for REPE/REPNE, the run ends at the first element whose comparison ends
  the loop; the flags are those of the last comparison performed.

The caller (``ops_string``) bounds a run by ECX and by the iterations left
in the current execution (``REP_CHUNK``: the instruction is re-executed,
and interrupts and budgets are seen, exactly where the element path would
see them), and falls back to one element when no run is possible (a
page-crossing or MMIO element, a segment limit, a code page), so faults,
I/O and self-modifying code keep the reference behaviour.

Overlapping MOVS follows the element order, not ``memmove``: copying
upwards onto a destination above the source (or downwards onto one below
it) replicates the first ``distance`` bytes, which is what the element
loop produces when the distance is at least the element size; a smaller
distance is copied element by element.
"""

from __future__ import annotations

from . import flags as F
from .constants import CR0_PE, CS, DF, ES

M32 = 0xFFFFFFFF
PAGE = 0x1000

MOVS, STOS, LODS, CMPS, SCAS = range(5)


def seg_window(cpu, s: int, size: int, write: bool):
    """(base, lo, hi): every offset in [lo, hi] passes the segment checks of a ``size``-byte
    access (SDM Vol. 3A §5.3 limit, §5.4-5.5 type), with no side effect; or None when the
    segment needs the per-access path (which raises the fault, if any)."""
    if cpu.slow_data:            # alignment checking or data breakpoints: per access
        return None
    attr = cpu.attr[s]
    if not attr & 0x80 or (cpu.sel[s] & ~3 == 0 and s != CS and cpu.cr0 & CR0_PE):
        return None
    typ = attr & 0x1F
    if write:
        if typ & 0x18 != 0x10 or not typ & 2:
            return None
    elif typ & 0x18 == 0x18 and not typ & 2:
        return None
    limit = cpu.limit[s]
    if typ & 0x1C == 0x14:       # expand-down data: (limit, upper]
        lo, hi = limit + 1, (0xFFFFFFFF if attr & 0x4000 else 0xFFFF) - size + 1
    else:
        lo, hi = 0, limit - size + 1
    if hi < lo:
        return None
    return cpu.base[s], lo, hi


def _span(cpu, s: int, off: int, size: int, down: bool, amask: int, write: bool, n: int):
    """(iterations, linear address of the first element) that one run can cover from ``off``."""
    w = seg_window(cpu, s, size, write)
    if w is None:
        return 0, 0
    base, lo, hi = w
    if off < lo or off > hi or off + size - 1 > amask:
        return 0, 0
    lin = (base + off) & M32
    po = lin & 0xFFF
    if po + size > PAGE:
        return 0, 0
    if down:
        n = min(n, (off - lo) // size + 1, po // size + 1)
    else:
        n = min(n, (min(hi, amask - size + 1) - off) // size + 1, (PAGE - po) // size)
    return n, lin


def _ram_range(cpu, lin: int, write: bool, size: int, n: int, down: bool):
    """Translate the run's page (faults as the first element would) and give its physical
    byte range (lo, hi), or None when it is not plain RAM (MMIO, a code page for a store)."""
    if cpu.paging:
        pa = cpu.translate_lin(lin, write)
    else:
        pa = lin
    if down:
        lo, hi = pa - (n - 1) * size, pa + size
    else:
        lo, hi = pa, pa + n * size
    if hi > cpu.ram_size:
        return None
    if write and cpu.code_pages[pa >> 12]:
        return None
    return lo, hi


def _first_diff(a: bytes, b: bytes) -> int:
    lo, hi = 0, len(a)
    while hi - lo > 32:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    for i in range(lo, hi):
        if a[i] != b[i]:
            return i
    raise AssertionError("no difference")


def _last_diff(a: bytes, b: bytes) -> int:
    lo, hi = 0, len(a)
    while hi - lo > 32:
        mid = (lo + hi) // 2
        if a[mid:hi] == b[mid:hi]:
            hi = mid
        else:
            lo = mid
    for i in range(hi - 1, lo - 1, -1):
        if a[i] != b[i]:
            return i
    raise AssertionError("no difference")


def _copy(ram, s_lo: int, d_lo: int, length: int, size: int, down: bool) -> None:
    """MOVS of ``length`` bytes as the element loop does it (see the module docstring)."""
    if s_lo == d_lo:
        return
    if not (s_lo < d_lo + length and d_lo < s_lo + length) or (d_lo < s_lo) != down:
        # Disjoint, or the destination trails the source: each element reads bytes no
        # earlier element has written, which is memmove's result.
        ram[d_lo:d_lo + length] = bytes(ram[s_lo:s_lo + length])
        return
    k = abs(d_lo - s_lo)
    if k < size:                 # an element overlaps its own source: element by element
        order = range(length - size, -1, -size) if down else range(0, length, size)
        for o in order:
            ram[d_lo + o:d_lo + o + size] = bytes(ram[s_lo + o:s_lo + o + size])
        return
    if not down:
        pattern = bytes(ram[s_lo:s_lo + k])
        ram[d_lo:d_lo + length] = (pattern * (length // k + 1))[:length]
    else:
        top = bytes(ram[d_lo + length:s_lo + length])      # the source's last k bytes
        o = (k - length % k) % k
        ram[d_lo:d_lo + length] = (top * (length // k + 2))[o:o + length]


def make_bulk(cpu, kind: int, size: int, amask: int, src_seg, repe: bool, repne: bool):
    """The bulk runner of one REP string instruction: ``bulk(limit)`` performs up to
    ``limit`` iterations as one run and returns (iterations, ended by the condition), or
    (0, False) when no run is possible from here (the caller does one element)."""
    regs = cpu.regs
    mask = (1 << (8 * size)) - 1
    sign = 1 << (8 * size - 1)
    keep = ~amask & M32
    uses_src = kind in (MOVS, LODS, CMPS)
    uses_dst = kind != LODS
    dst_write = kind in (MOVS, STOS)

    def bulk(limit: int):
        down = bool(cpu.eflags_rest & DF)
        n = limit
        if uses_src:
            n, slin = _span(cpu, src_seg, regs[6] & amask, size, down, amask, False, n)
            if not n:
                return 0, False
        if uses_dst:
            n, dlin = _span(cpu, ES, regs[7] & amask, size, down, amask, dst_write, n)
            if not n:
                return 0, False
        # Translations in the order of the first iteration's accesses: source, destination.
        if uses_src:
            sr = _ram_range(cpu, slin, False, size, n, down)
            if sr is None:
                return 0, False
        if uses_dst:
            dr = _ram_range(cpu, dlin, dst_write, size, n, down)
            if dr is None:
                return 0, False
        ram = cpu.ram
        stopped = False
        if kind == STOS:
            ram[dr[0]:dr[1]] = (regs[0] & mask).to_bytes(size, "little") * n
        elif kind == MOVS:
            _copy(ram, sr[0], dr[0], n * size, size, down)
        elif kind == LODS:
            o = sr[0] if down else sr[1] - size
            v = int.from_bytes(ram[o:o + size], "little")
            regs[0] = v if size == 4 else (regs[0] & ~mask & M32) | v
        else:
            d = bytes(ram[dr[0]:dr[1]])
            if kind == SCAS:
                pat = (regs[0] & mask).to_bytes(size, "little")
                a = pat * n
            else:
                a = bytes(ram[sr[0]:sr[1]])
            k = n - 1                                   # the element that ends the run
            if repe:
                if a != d:
                    i = _last_diff(a, d) if down else _first_diff(a, d)
                    k = n - 1 - i // size if down else i // size
                    stopped = True
            elif kind == SCAS:
                if down:
                    i = d.rfind(pat)
                    while i != -1 and i % size:
                        i = d.rfind(pat, 0, i + size - 1)
                else:
                    i = d.find(pat)
                    while i != -1 and i % size:
                        i = d.find(pat, i + 1)
                if i != -1:
                    k = n - 1 - i // size if down else i // size
                    stopped = True
            else:                                       # REPNE CMPS: rare, element by element
                for j in range(n):
                    o = (n - 1 - j) * size if down else j * size
                    if a[o:o + size] == d[o:o + size]:
                        k, stopped = j, True
                        break
            o = (n - 1 - k) * size if down else k * size
            av = int.from_bytes(a[o:o + size], "little")
            bv = int.from_bytes(d[o:o + size], "little")
            cpu.lf = (F.SUB, av, bv, (av - bv) & mask, sign)
            n = k + 1
        step = -n * size if down else n * size
        if uses_src:
            regs[6] = (regs[6] & keep) | ((regs[6] + step) & amask)
        if uses_dst:
            regs[7] = (regs[7] & keep) | ((regs[7] + step) & amask)
        regs[1] = (regs[1] & keep) | ((regs[1] - n) & amask)
        return n, stopped

    return bulk
