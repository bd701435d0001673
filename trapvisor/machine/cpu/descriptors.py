"""Segment descriptors and segment-register loads with the protection checks.

Rules: SDM Vol. 3A §3.4 (selectors, descriptor tables), §3.4.5 (descriptor
format), §5.5-5.8 (privilege checks for data, stack and code segments), and
the Operation sections of MOV/POP (segment register), LDS/LES/LFS/LGS/LSS,
LAR, LSL, VERR, VERW in SDM Vol. 2.

A descriptor is handled as the raw 64-bit integer read from the table.

Caches.  Every use reads the descriptor's 8 bytes from its table again
(``read_descriptor``, through the supervisor TLB fast path of ``sys_read``),
so a store into a descriptor table, LGDT/LLDT/LTR, a mode change or a new
paging mapping is seen at the next load with nothing to invalidate; what is
cached is what is a pure function of those bits: the decoded base, limit and
attributes (``decoded``), and, for MOV/POP to DS/ES/FS/GS/SS, the fact that
the checks of SDM Vol. 3A §5.5-5.6 pass for (register, selector, CPL,
descriptor) with the accessed bit already set (so the load writes nothing).
"""

from __future__ import annotations

from .constants import (
    CS, DESC_P, DESC_S, GP, NP, SEG_CODE, SEG_CONFORMING, SEG_READABLE,
    SEG_WRITABLE, SS, SS_VEC, TS, CR0_PE,
)
from .cpu import CpuFault


def d_base(d: int) -> int:
    return ((d >> 16) & 0xFFFFFF) | ((d >> 32) & 0xFF000000)


def d_limit(d: int) -> int:
    """The byte-granular limit (the G bit scales the 20-bit field by 4 KiB)."""
    raw = (d & 0xFFFF) | ((d >> 32) & 0xF0000)
    if d & (1 << 55):
        return (raw << 12) | 0xFFF
    return raw


def d_attr(d: int) -> int:
    """Descriptor bits 40..55: type, S, DPL, P (low byte), AVL, L, D/B, G (bits 12..15)."""
    return (d >> 40) & 0xF0FF


def d_dpl(d: int) -> int:
    return (d >> 45) & 3


def d_type(d: int) -> int:
    return (d >> 40) & 0xF


def d_present(d: int) -> bool:
    return bool((d >> 40) & DESC_P)


def d_is_system(d: int) -> bool:
    return not (d >> 40) & DESC_S


def d_is_code(d: int) -> bool:
    return bool((d >> 40) & DESC_S) and bool(d_type(d) & SEG_CODE)


def d_is_data(d: int) -> bool:
    return bool((d >> 40) & DESC_S) and not d_type(d) & SEG_CODE


# Raw descriptor -> (base, limit, attr | accessed): a pure function of the 64 bits.
_DECODED: dict[int, tuple[int, int, int]] = {}
# (register, selector, CPL, raw descriptor) of data-segment loads whose checks passed and
# whose descriptor had its accessed bit set: the same load passes again, writing nothing;
# likewise (-1, selector, CPL, descriptor) for the code segment of a far return or IRET
# and (-2, selector, RPL, descriptor) for its outer stack segment.
_LOAD_OK: set = set()
_CACHE_MAX = 4096


def decoded(d: int) -> tuple[int, int, int]:
    t = _DECODED.get(d)
    if t is None:
        if len(_DECODED) >= _CACHE_MAX:
            _DECODED.clear()
        t = _DECODED[d] = (d_base(d), d_limit(d), d_attr(d) | 1)
    return t


def descriptor_address(cpu, sel: int) -> int | None:
    """Linear address of the descriptor for ``sel``, or None if outside its table."""
    index = sel & ~7
    if sel & 4:
        if cpu.ldtr & ~3 == 0 or index + 7 > cpu.ldt_limit:
            return None
        return cpu.ldt_base + index
    base, limit = cpu.gdtr
    if index + 7 > limit:
        return None
    return base + index


def read_descriptor(cpu, sel: int, vector: int = GP, ext: int = 0) -> int:
    """Fetch the descriptor for a non-null selector; #GP/#TS(selector) if outside the table."""
    addr = descriptor_address(cpu, sel)
    if addr is None:
        raise CpuFault(vector, (sel & 0xFFFC) | ext)
    return cpu.sys_read(addr, 8)


def set_accessed(cpu, sel: int, d: int) -> None:
    """Set the descriptor's accessed bit in memory, as the processor does on a load."""
    if not (d >> 40) & 1:
        addr = descriptor_address(cpu, sel)
        cpu.sys_write(addr + 5, 1, ((d >> 40) & 0xFF) | 1)


def load_cache(cpu, s: int, sel: int, d: int) -> None:
    base, limit, attr = decoded(d)
    cpu.set_segment_cache(s, sel, base, limit, attr)


def load_null(cpu, s: int, sel: int) -> None:
    cpu.set_segment_cache(s, sel, 0, 0, 0)


def load_data_segment(cpu, s: int, sel: int) -> None:
    """MOV/POP/LxS into DS, ES, FS, GS or SS with the checks of SDM Vol. 2 (MOV: Operation)."""
    if not cpu.cr0 & CR0_PE:
        cpu.set_segment_cache(s, sel, sel << 4, cpu.limit[s], cpu.attr[s])
        return
    rpl = sel & 3
    cpl = cpu.cpl
    if sel & ~3:
        d = read_descriptor(cpu, sel)
        key = (s, sel, cpl, d)
        if key in _LOAD_OK:          # the checks below passed for exactly this load
            load_cache(cpu, s, sel, d)
            return
        _check_data_load(cpu, s, sel, d, rpl, cpl)
        if (d >> 40) & 1:
            _remember(key)
        return
    if s == SS:
        raise CpuFault(GP, 0)
    load_null(cpu, s, sel)


def _check_data_load(cpu, s: int, sel: int, d: int, rpl: int, cpl: int) -> None:
    """The checks and the load of a non-null selector into a data segment register."""
    if s == SS:
        if rpl != cpl or d_dpl(d) != cpl or not d_is_data(d) or not d_type(d) & SEG_WRITABLE:
            raise CpuFault(GP, sel & 0xFFFC)
        if not d_present(d):
            raise CpuFault(SS_VEC, sel & 0xFFFC)
        set_accessed(cpu, sel, d)
        load_cache(cpu, SS, sel, d)
        return
    t = d_type(d)
    if not (d_is_data(d) or (d_is_code(d) and t & SEG_READABLE)):
        raise CpuFault(GP, sel & 0xFFFC)
    # Data and non-conforming code: both RPL and CPL must be <= DPL (SDM Vol. 3A §5.6).
    if d_is_data(d) or not t & SEG_CONFORMING:
        if rpl > d_dpl(d) or cpl > d_dpl(d):
            raise CpuFault(GP, sel & 0xFFFC)
    if not d_present(d):
        raise CpuFault(NP, sel & 0xFFFC)
    set_accessed(cpu, sel, d)
    load_cache(cpu, s, sel, d)


def check_code_for_transfer(cpu, sel: int, d: int) -> None:
    """Checks on a code-segment descriptor named directly by a far JMP/CALL (SDM Vol. 3A §5.8.1)."""
    rpl, dpl, cpl = sel & 3, d_dpl(d), cpu.cpl
    if not d_is_code(d):
        raise CpuFault(GP, sel & 0xFFFC)
    if d_type(d) & SEG_CONFORMING:
        if dpl > cpl:
            raise CpuFault(GP, sel & 0xFFFC)
    elif rpl > cpl or dpl != cpl:
        raise CpuFault(GP, sel & 0xFFFC)
    if not d_present(d):
        raise CpuFault(NP, sel & 0xFFFC)


def load_cs(cpu, sel: int, d: int, cpl: int) -> None:
    """Load CS with a checked descriptor; the selector's RPL becomes the new CPL."""
    set_accessed(cpu, sel, d)
    sel = (sel & ~3) | cpl
    base, limit, attr = decoded(d)
    cpu.set_segment_cache(CS, sel, base, limit, attr)
    if cpl != cpu.cpl:
        cpu.set_cpl(cpl)


def check_return_cs(cpu, sel: int) -> int:
    """The code segment a far RET or IRET returns to (SDM Vol. 2 RET, IRET):
    RPL >= CPL, conforming DPL <= RPL or non-conforming DPL == RPL, present."""
    if sel & ~3 == 0:
        raise CpuFault(GP, 0)
    d = read_descriptor(cpu, sel)
    key = (-1, sel, cpu.cpl, d)
    if key in _LOAD_OK:                  # these checks passed for exactly this return
        return d
    rpl = sel & 3
    if not d_is_code(d) or rpl < cpu.cpl:
        raise CpuFault(GP, sel & 0xFFFC)
    if d_type(d) & SEG_CONFORMING:
        if d_dpl(d) > rpl:
            raise CpuFault(GP, sel & 0xFFFC)
    elif d_dpl(d) != rpl:
        raise CpuFault(GP, sel & 0xFFFC)
    if not d_present(d):
        raise CpuFault(NP, sel & 0xFFFC)
    _remember(key)
    return d


def _remember(key) -> None:
    if len(_LOAD_OK) >= _CACHE_MAX:
        _LOAD_OK.clear()
    _LOAD_OK.add(key)


def check_return_ss(cpu, sel: int, rpl: int, not_present: int) -> int:
    """The stack segment popped on a return to an outer ring: a writable data
    segment whose RPL and DPL equal the new CPL.  ``not_present`` is the vector
    for a not-present one (#SS for RET far, #NP for IRET)."""
    if sel & ~3 == 0:
        raise CpuFault(GP, 0)
    d = read_descriptor(cpu, sel)
    key = (-2, sel, rpl, d)
    if key in _LOAD_OK:                  # these checks passed for exactly this stack
        return d
    if (sel & 3) != rpl or d_dpl(d) != rpl or not d_is_data(d) or not d_type(d) & SEG_WRITABLE:
        raise CpuFault(GP, sel & 0xFFFC)
    if not d_present(d):
        raise CpuFault(not_present, sel & 0xFFFC)
    _remember(key)
    return d


def invalidate_outer_segments(cpu) -> None:
    """After a return to an outer ring, null DS/ES/FS/GS that the new CPL may not use
    (SDM Vol. 2 RET/IRET: data or non-conforming code with DPL < CPL).  A register
    that already holds a null selector is set to 0 as well (the pseudo-code tests
    "SegmentSelector = NULL OR ..."; Bochs does the same, QEMU keeps a null FS/GS
    with its RPL: docs/system-differential.md)."""
    from .constants import DS, ES, FS, GS
    for s in (ES, DS, FS, GS):
        attr = cpu.attr[s]
        if cpu.sel[s] & ~3 == 0:
            if cpu.sel[s]:
                load_null(cpu, s, 0)
            continue
        dpl = (attr >> 5) & 3
        is_code = attr & 0x18 == 0x18
        conforming = is_code and attr & 4
        if (not is_code or not conforming) and dpl < cpu.cpl:
            load_null(cpu, s, 0)


def tss_stack(cpu, dpl: int, ext: int = 0) -> tuple[int, int]:
    """SS:ESP for privilege level ``dpl`` from the current 32-bit TSS (SDM Vol. 3A §7.2.1)."""
    if not cpu.tr_attr & 0x80:
        raise CpuFault(TS, (cpu.tr & 0xFFFC) | ext)
    if cpu.tr_attr & 0x8:   # 32-bit TSS
        # The SS:ESP slot is 8 bytes; the whole slot must be inside the TSS
        # limit.  (The SDM's INT n pseudo-code says "+ 5" for the protected-
        # mode path but "+ 7" for the virtual-8086 path; QEMU and Bochs both
        # check 8 bytes, and so do we: docs/system-differential.md.)
        off = 4 + dpl * 8
        if off + 7 > cpu.tr_limit:
            raise CpuFault(TS, (cpu.tr & 0xFFFC) | ext)
        esp = cpu.sys_read(cpu.tr_base + off, 4)
        ss = cpu.sys_read(cpu.tr_base + off + 4, 2)
    else:                   # 16-bit TSS
        off = 2 + dpl * 4
        if off + 3 > cpu.tr_limit:
            raise CpuFault(TS, (cpu.tr & 0xFFFC) | ext)
        esp = cpu.sys_read(cpu.tr_base + off, 2)
        ss = cpu.sys_read(cpu.tr_base + off + 2, 2)
    return ss, esp


def check_stack_room(ssd: int, ss: int, esp: int, nbytes: int, ext: int = 0) -> int:
    """The new ESP after pushing ``nbytes`` below ``esp`` on the stack segment
    ``ssd`` (selector ``ss``), or #SS(ss + EXT) if they do not fit inside the
    segment's limit (expand-down segments included): SDM Vol. 2 INT n and
    CALL, "new stack does not have room"."""
    mask = 0xFFFFFFFF if d_attr(ssd) & 0x4000 else 0xFFFF
    new = (esp - nbytes) & mask
    last = (new + nbytes - 1) & mask
    limit = d_limit(ssd)
    if d_is_data(ssd) and d_type(ssd) & 4:     # expand-down: valid offsets are (limit, mask]
        bad = new <= limit or last <= limit
    else:
        bad = new > limit or last > limit
    if bad:
        raise CpuFault(SS_VEC, (ss & 0xFFFC) | ext)
    return new


def check_new_stack(cpu, ss: int, dpl: int, ext: int = 0) -> int:
    """Validate the inner stack segment taken from the TSS; returns its descriptor.
    Errors are #TS(SS selector), or #SS(SS selector) if not present (SDM Vol. 3A §6.12.1)."""
    if ss & ~3 == 0:
        raise CpuFault(TS, ext)
    addr = descriptor_address(cpu, ss)
    if addr is None:
        raise CpuFault(TS, (ss & 0xFFFC) | ext)
    d = cpu.sys_read(addr, 8)
    if (ss & 3) != dpl or d_dpl(d) != dpl or not d_is_data(d) or not d_type(d) & SEG_WRITABLE:
        raise CpuFault(TS, (ss & 0xFFFC) | ext)
    if not d_present(d):
        raise CpuFault(SS_VEC, (ss & 0xFFFC) | ext)
    return d
