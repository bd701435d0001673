"""F3 0F BC/BD (TZCNT/LZCNT) on a CPU without BMI1/LZCNT execute as BSF/BSR (SDM Vol. 2B,
TZCNT and LZCNT: "executed as BSF [BSR]"); checked against unicorn running plain BSF/BSR
on the same operands (Linux's __ffs() is "rep; bsf")."""

from __future__ import annotations

import random

import pytest

from . import oracle as O

HLT = b"\xf4"


@pytest.mark.parametrize("op, name", [(0xBC, "bsf"), (0xBD, "bsr")])
def test_rep_prefixed_bit_scan_is_the_plain_bit_scan(op, name):
    rng = random.Random(op)
    values = [0, 1, 0x80000000, 0xFFFFFFFF] + [rng.getrandbits(rng.randint(1, 32)) for _ in range(40)]
    for v in values:
        for width in (b"", b"\x66"):        # 32- and 16-bit operand size
            plain = O.Case(width + bytes([0x0F, op, 0xC1]) + HLT, [0xDEAD_BEEF, v, 0, 0, O.STACK_TOP, 0, 0, 0])
            prefixed = O.Case(b"\xf3" + width + bytes([0x0F, op, 0xC1]) + HLT, list(plain.regs))
            ref = O.run_unicorn(plain)
            ours = O.run_ours(prefixed)
            assert ours.regs == ref.regs, f"rep {name} of {v:#x}"
            assert ours.eflags & O.CF == 0 and ours.eflags & O.ZF == ref.eflags & O.ZF, f"rep {name} of {v:#x}"
