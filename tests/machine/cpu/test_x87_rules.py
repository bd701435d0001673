"""The x87 rules unicorn cannot check: exception flags, #NM from CR0.EM/TS/MP, #MF from a
pending unmasked exception (CR0.NE = 1), and the constants rounded by RC (SDM Vol. 1 8.3.8,
8.7; Vol. 3A 2.5 Table 2-2)."""

from __future__ import annotations

import struct

import pytest

from trapvisor.machine.cpu import fpu_x87 as X
from trapvisor.machine.cpu.constants import MF, NM

from . import oracle as O

D = struct.pack("<I", O.DATA)
SET_CR0 = b"\x0f\x20\xc0" + b"\x0d{bits}" + b"\x0f\x22\xc0"    # mov eax,cr0; or eax,imm32; mov cr0,eax


def cr0_or(bits: int) -> bytes:
    return b"\x0f\x20\xc0" + b"\x0d" + struct.pack("<I", bits) + b"\x0f\x22\xc0"


def run(code: bytes, writes=()):
    return O.run_ours(O.Case(code + b"\xf4", [0, 0, 0, 0, O.STACK_TOP, 0, 0, 0], writes=list(writes)))


@pytest.mark.parametrize("cr0, code, faults", [
    (1 << 2, b"\xd9\xe8", True),            # EM: fld1 -> #NM
    (1 << 3, b"\xd9\xe8", True),            # TS: fld1 -> #NM
    (1 << 3, b"\x9b", False),               # TS without MP: wait is not an x87 instruction
    ((1 << 3) | (1 << 1), b"\x9b", True),   # TS and MP: wait -> #NM
    (1 << 2, b"\x9b", False),               # EM alone does not affect WAIT
])
def test_cr0_em_ts_mp_raise_nm(cr0, code, faults):
    r = run(cr0_or(cr0) + code)
    assert (r.fault == NM) == faults


def test_an_unmasked_exception_is_reported_at_the_next_waiting_instruction():
    # CR0.NE; fninit; fldcw [DATA] (ZE unmasked); fldz; fld1; fdiv st,st(1) -> ZE pending;
    # fnstsw ax (no fault: non-waiting); fwait -> #MF
    code = (cr0_or(1 << 5) + b"\xdb\xe3" + b"\xd9\x2d" + D + b"\xd9\xee\xd9\xe8" + b"\xd8\xf1"
            + b"\xdf\xe0" + b"\x9b")
    r = run(code, [(O.DATA, struct.pack("<H", 0x37F & ~X.ZE))])
    assert r.fault == MF
    assert r.regs[0] & (X.ZE | X.ES) == X.ZE | X.ES
    # Masked, the same division gives infinity and no fault, ZE flagged only.
    r = run(cr0_or(1 << 5) + b"\xdb\xe3\xd9\xee\xd9\xe8\xd8\xf1\xdf\xe0\x9b")
    assert r.fault is None and r.regs[0] & (X.ZE | X.ES) == X.ZE


def test_precision_and_invalid_flags():
    # fninit; fld1; fld [3.0]; fdivp -> 1/3 inexact: PE; fnstsw ax
    r = run(b"\xdb\xe3\xd9\xe8\xdd\x05" + D + b"\xde\xf9\xdf\xe0", [(O.DATA, struct.pack("<d", 3.0))])
    assert r.regs[0] & X.EXCEPTIONS == X.PE
    # fninit; fld [-1.0]; fsqrt -> IE, the indefinite
    r = run(b"\xdb\xe3\xdd\x05" + D + b"\xd9\xfa\xdf\xe0\xdb\x3d" + struct.pack("<I", O.DATA + 16),
            [(O.DATA, struct.pack("<d", -1.0))])
    assert r.regs[0] & X.EXCEPTIONS == X.IE
    assert int.from_bytes(r.data[16:26], "little") == X.INDEFINITE


def test_stack_overflow_sets_sf_and_c1():
    r = run(b"\xdb\xe3" + b"\xd9\xe8" * 9 + b"\xdf\xe0")
    assert r.regs[0] & (X.IE | X.SF | X.C1) == X.IE | X.SF | X.C1


@pytest.mark.parametrize("rc, delta", [(X.RC_NEAREST, 0), (X.RC_DOWN, -1), (X.RC_ZERO, -1), (X.RC_UP, 0)])
def test_pi_is_rounded_by_the_rounding_control(rc, delta):
    # SDM Vol. 1 8.3.8: pi's 66-bit value rounds up to nearest, so RC down and zero give one less.
    assert X.constant("pi", X.CW_DEFAULT | (rc << X.RC_SHIFT)) == X.CONSTANTS["pi"] + delta


def test_fnsave_initialises_and_frstor_restores():
    save = O.DATA + 0x100
    s = struct.pack("<I", save)
    # fninit; fldpi; fld1; fnsave [save]; fnstsw ax -> TOP 0 (initialised); frstor; fstp m80 x2
    code = b"\xdb\xe3\xd9\xeb\xd9\xe8\xdd\x35" + s + b"\xdf\xe0" + b"\xdd\x25" + s + \
        b"\xdb\x3d" + struct.pack("<I", O.DATA) + b"\xdb\x3d" + struct.pack("<I", O.DATA + 10)
    r = run(code)
    assert (r.regs[0] >> 11) & 7 == 0
    assert int.from_bytes(r.data[0:10], "little") == X.CONSTANTS["one"]
    assert int.from_bytes(r.data[10:20], "little") == X.CONSTANTS["pi"]
    assert r.data[0x100:0x102] == b"\x7f\x03"                       # the saved control word


def test_fisttp_and_fxsave_are_undefined_on_this_core():
    from trapvisor.machine.cpu.constants import UD
    assert run(b"\xdb\xe3\xd9\xe8\xdb\x0d" + D).fault == UD          # fisttp (SSE3)
    assert run(b"\x0f\xae\x05" + D).fault == UD                      # fxsave (no FXSR)
