"""REP string instructions in bulk (string_bulk.py) give exactly the element loop's result.

Two oracles:

* unicorn (QEMU TCG) on long REP MOVS/STOS/LODS/CMPS/SCAS with random
  counts up to thousands of elements, pointers near page boundaries and
  misaligned, both directions, 16- and 32-bit addressing, overlapping MOVS
  at every small distance, equal runs that REPE/REPNE stop inside, and paging
  with a page not present so that the #PF comes at the exact element (ECX,
  ESI, EDI, CR2 and memory as the element loop leaves them);
* our own element loop (``ops_string.BULK = False``), for what unicorn cannot
  see: the instruction count after every budget (the REP_CHUNK re-executions
  and the budget's end come at the same counts), MMIO-like open bus beyond
  RAM, stores into the page of the running code, segments with a base,
  expand-down segments and segment-limit faults.
"""

from __future__ import annotations

import random

import iced_x86 as iced
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trapvisor.machine.bus import IoBus
from trapvisor.machine.cpu import CPU, enter_flat_protected_mode, ops_string
from trapvisor.machine.cpu.constants import DS, ES
from trapvisor.machine.cpu.exits import ExceptionExit
from trapvisor.machine.memory import PhysicalMemory

from . import oracle as O
from .oracle import CODE, DATA, DATA_SIZE, Case

I = iced.Instruction
R = iced.Register
M32 = 0xFFFFFFFF
OPS = ("movs", "stos", "lods", "cmps", "scas")
SUFFIX = {1: "b", 2: "w", 4: "d"}


def settings_(n):
    return settings(max_examples=O.scaled_examples(n), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def string_ins(op, size, rep, a16=False, seg=R.NONE):
    kw = {"rep_prefix": rep}
    if op in ("movs", "lods", "cmps"):
        kw["segment_prefix"] = seg
    return getattr(I, f"create_{op}{SUFFIX[size]}")(16 if a16 else 32, **kw)


@st.composite
def long_rep(draw):
    """A long REP string instruction over DATA, as a Case (and what to know of it)."""
    op = draw(st.sampled_from(OPS))
    size = draw(st.sampled_from((1, 2, 4)))
    down = draw(st.booleans())
    a16 = draw(st.integers(0, 4)) == 0
    rep = iced.RepPrefixKind.REPE
    if op in ("cmps", "scas"):
        rep = draw(st.sampled_from((iced.RepPrefixKind.REPE, iced.RepPrefixKind.REPNE)))
    span = DATA_SIZE // 2 - 64                   # bytes a pointer may run over
    count = draw(st.one_of(st.integers(0, span // size), st.sampled_from((1, 2, 1023, 1024, 1025))))
    count = min(count, span // size)
    # Pointers: near page boundaries (DATA is four pages), misaligned at times.
    def pointer():
        page = DATA + 0x1000 * draw(st.integers(0, 3))
        return page + draw(st.one_of(st.integers(-8, 8), st.integers(0, 0xFFF)))
    lo, hi = DATA + 16, DATA + DATA_SIZE - 16
    def clamp(p):                                # keep the whole run inside DATA
        length = count * size
        return max(lo + (length if down else 0), min(p, hi - (0 if down else length)))
    dst = clamp(pointer())
    if op == "movs" and draw(st.booleans()):
        src = clamp(dst + draw(st.integers(-40, 40)))        # overlapping copies
    else:
        src = clamp(pointer())
    regs = [0x11111111 * i & M32 for i in range(8)]
    regs[1], regs[6], regs[7] = count, src, dst
    writes = []
    # Memory: random bytes, or equal runs for CMPS/SCAS so that REPE goes far.
    fill = draw(st.sampled_from(("random", "equal", "equal")))
    if fill == "random":
        writes.append((DATA, random.Random(draw(st.integers(0, 2 ** 32))).randbytes(DATA_SIZE)))
    else:
        elem = draw(st.integers(0, (1 << (8 * size)) - 1)).to_bytes(size, "little")
        # Both regions hold the element at every multiple of the size from their start, so a
        # CMPS of two regions equal modulo alignment runs long.
        writes.append((DATA, (elem * (DATA_SIZE // size + 1))[:DATA_SIZE]))
        for _ in range(draw(st.integers(0, 3))):
            writes.append((DATA + draw(st.integers(0, DATA_SIZE - 4)),
                           draw(st.binary(min_size=1, max_size=4))))
        regs[0] = int.from_bytes(elem, "little") if draw(st.booleans()) else draw(st.integers(0, M32))
        # Line both pointers up on the element grid.
        regs[6] -= (regs[6] - DATA) % size
        regs[7] -= (regs[7] - DATA) % size
    if a16:
        hi16 = draw(st.sampled_from((0, 0xFFFF0000, 0x00010000)))
        regs[1] |= hi16
        regs[6] |= hi16
        regs[7] |= hi16
    paging = draw(st.integers(0, 2)) == 0
    hole = None
    if paging and draw(st.booleans()):
        hole = DATA + 0x1000 * draw(st.integers(0, 3))
    eflags = 0x400 if down else 0
    ins = string_ins(op, size, rep, a16, draw(st.sampled_from((R.NONE, R.DS, R.ES, R.SS))))
    case = Case(code=O.assemble([ins]), regs=regs, eflags=eflags, writes=writes,
                max_steps=count + 50, paging=paging, hole=hole)
    return case


@settings_(300)
@given(long_rep())
def test_long_rep_strings_match_unicorn(case):
    O.check(case)


# ------------------------------------------------------ against the element loop
MEM = 0x40000


def make_cpu(code: bytes, regs, eflags=0, writes=(), paging=False, hole=None):
    mem = PhysicalMemory(MEM)
    mem.write(CODE, code)
    case = Case(code=code, regs=list(regs), paging=paging, hole=hole)
    for addr, b in list(writes) + case.page_tables():
        mem.write(addr, b)
    cpu = CPU(mem, IoBus())
    enter_flat_protected_mode(cpu)
    if paging:
        cpu.set_cr3(O.PD)
        cpu.set_cr0(cpu.cr0 | 0x80000001)
    cpu.regs[:] = regs
    cpu.set_eflags(eflags | 2)
    cpu.eip = CODE
    ic = cpu.intercepts
    ic.exception_bitmap = 0xFFFFFFFF
    return cpu


def trace(bulk: bool, setup, budgets):
    """Run ``setup()``'s CPU with each budget in turn; the state after every run()."""
    old = ops_string.BULK
    ops_string.BULK = bulk
    try:
        cpu = setup()
        out = []
        for b in budgets:
            ex = cpu.run(b)
            out.append((type(ex).__name__, getattr(ex, "vector", None), cpu.icount, cpu.eip,
                        list(cpu.regs), cpu.get_eflags(), cpu.cr2, cpu.halted))
            if isinstance(ex, ExceptionExit) or cpu.halted or cpu.stop is not None:
                break
        out.append(bytes(cpu.mem.ram))
        return out
    finally:
        ops_string.BULK = old


def same_as_element_loop(setup, budgets):
    ref = trace(False, setup, budgets)
    got = trace(True, setup, budgets)
    assert got[:-1] == ref[:-1]
    assert got[-1] == ref[-1], "memory differs"
    return ref


@settings_(150)
@given(st.data())
def test_counts_after_every_budget_match_the_element_loop(data):
    """The REP_CHUNK re-executions and a budget ending inside a REP come at the same
    instruction counts, with the same registers, as with the element loop."""
    op = data.draw(st.sampled_from(OPS))
    size = data.draw(st.sampled_from((1, 2, 4)))
    rep = iced.RepPrefixKind.REPE if op not in ("cmps", "scas") else \
        data.draw(st.sampled_from((iced.RepPrefixKind.REPE, iced.RepPrefixKind.REPNE)))
    code = O.assemble([string_ins(op, size, rep), string_ins(op, size, rep)])
    count = data.draw(st.integers(0, 12000 // size))
    down = data.draw(st.booleans())
    base = 0x20000 if not down else 0x20000 + count * size
    regs = [0, count, 0, 0, 0x1F000, 0, base + data.draw(st.integers(0, 7)),
            base + 0x4000 + data.draw(st.integers(0, 7))]
    budgets = data.draw(st.lists(st.integers(1, 9000), min_size=1, max_size=8)) + [10 ** 6]
    fill = bytes(0x8000) if data.draw(st.booleans()) else bytes(range(256)) * 128
    paging = data.draw(st.booleans())
    same_as_element_loop(lambda: make_cpu(code, regs, 0x400 if down else 0, [(0x20000 - 0x4000, fill)],
                                          paging=paging), budgets)


def test_runs_into_open_bus_beyond_ram_like_the_element_loop():
    """Source elements beyond the end of RAM read as all ones, one element at a time."""
    code = O.assemble([string_ins("movs", 4, iced.RepPrefixKind.REPE)])
    regs = [0, 3000, 0, 0, 0x1F000, 0, MEM - 0x800 + 2, 0x20000]
    ref = same_as_element_loop(lambda: make_cpu(code, regs), [10 ** 6])
    ram = ref[-1]
    assert ram[0x20000 + 0x800 - 2:0x20000 + 0x800 + 2] == b"\xff" * 4


def test_stos_over_its_own_code_page_like_the_element_loop():
    """A REP STOSB that overwrites the page it runs from: the blocks of that page are
    dropped at the first store, the instruction completes, the new bytes run next."""
    code = O.assemble([string_ins("stos", 1, iced.RepPrefixKind.REPE)])
    # Fill from just after the instruction with HLT (0xF4) to the end of the page and beyond.
    regs = [0xF4, 0x2000, 0, 0, 0x1F000, 0, 0, CODE + len(code) - 1]
    ref = same_as_element_loop(lambda: make_cpu(code, regs), [10 ** 6])
    assert ref[0][7] is True                      # halted on an HLT it wrote


@pytest.mark.parametrize("case", ["base", "expand-down", "limit"])
def test_segments_with_a_base_or_limit_like_the_element_loop(case):
    """Runs through a segment with a base, an expand-down segment, and a limit that
    faults part-way (#GP at the element that crosses it)."""
    code = O.assemble([string_ins("movs", 2, iced.RepPrefixKind.REPE)])
    regs = [0, 2500, 0, 0, 0x1F000, 0, 0x100, 0x3001]

    def setup():
        cpu = make_cpu(code, regs, writes=[(0x20000, bytes(range(256)) * 64)])
        if case == "base":
            cpu.set_segment_cache(DS, 0x18, 0x1FF00, 0xFFFFF, 0xC093)
            cpu.set_segment_cache(ES, 0x20, 0x8000, 0xFFFFF, 0xC093)
        elif case == "expand-down":
            cpu.set_segment_cache(DS, 0x18, 0x20000, 0xFF, 0xC097)     # valid offsets above 0xFF
        else:
            cpu.set_segment_cache(ES, 0x20, 0x8000, 0x3FFF, 0x4093)    # faults near 0x4000
        return cpu
    ref = same_as_element_loop(setup, [10 ** 6])
    if case == "limit":
        assert ref[0][1] == 13 and ref[0][4][7] == 0x3FFF   # #GP at the element crossing the limit
