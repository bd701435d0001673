"""The hint NOPs 0F 18-0F 1F execute as NOP, checked against unicorn.

SDM Vol. 2 Appendix A (opcode map): the 0F 18-0F 1F block is reserved NOP on
P6-family and later processors, so software written for later processors
(prefetch hints, CET's ENDBR32, the long NOP 0F 1F) runs on them.  The memory
operand is never accessed: here it points at a not-present page, so an access
would give #PF.
"""

from __future__ import annotations

import pytest

from .oracle import DATA, Case, check

HOLE = DATA                  # the not-present page (Case.paging)
MODRMS = (0x05, 0x0D, 0x15, 0x1D, 0x25, 0x2D, 0x35, 0x3D)   # [disp32], reg field 0..7
ENCODINGS = [bytes(p) + bytes([0x0F, op, m]) + HOLE.to_bytes(4, "little")
             for p in ((), (0x66,), (0xF3,), (0xF2,))
             for op in range(0x18, 0x20) for m in MODRMS]
ENCODINGS += [bytes([0xF3, 0x0F, 0x1E, 0xFB]),       # endbr32
              bytes([0x0F, 0x1F, 0x44, 0x00, 0x00]),  # the 5-byte NOP compilers emit
              bytes([0x0F, 0x19, 0xC0])]              # register form


@pytest.mark.parametrize("code", ENCODINGS, ids=lambda b: b.hex())
def test_hint_nop_is_a_nop_that_touches_no_memory(code):
    # Twice, so the block tier sees the instruction in a block of its own and in a loop body.
    case = Case(code + code + b"\xf4", [0x11, 0x22, 0x33, 0x44, 0x28000, 0x55, 0x66, 0x77],
                eflags=0x8D5, paging=True, hole=HOLE)
    ref = check(case)
    assert ref.fault is None
