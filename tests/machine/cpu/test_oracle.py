"""The differential harness itself: it must see differences, and only excuse
what it is allowed to excuse."""

from __future__ import annotations

import dataclasses

import iced_x86 as iced
import pytest

from . import oracle as O

C, R, I = iced.Code, iced.Register, iced.Instruction


def _case(instrs, regs=None, eflags=0, writes=()):
    return O.Case(O.assemble(instrs), list(regs or [0] * 8), eflags, list(writes))


def test_identical_runs_have_no_differences():
    case = _case([I.create_reg_reg(C.ADD_RM32_R32, R.EAX, R.EBX),
                  I.create_mem_reg(C.MOV_RM32_R32, iced.MemoryOperand(displ=O.DATA_MID, displ_size=4), R.EAX)],
                 regs=[1, 0, 0, 0xFFFFFFFF, O.STACK_TOP, 0, 0, 0])
    ref = O.check(case)
    assert ref.regs[0] == 0 and ref.eflags & O.ZF and ref.eflags & O.CF


@pytest.mark.parametrize("field, change, expect", [
    ("regs", lambda o: o.regs[:3] + [o.regs[3] ^ 1] + o.regs[4:], "EBX"),
    ("eip", lambda o: o.eip + 1, "EIP"),
    ("eflags", lambda o: o.eflags ^ O.CF, "flags differ in CF"),
    ("eflags", lambda o: o.eflags ^ O.DF, "flags differ in DF"),
    ("fault", lambda o: 0, "exception"),
    ("data", lambda o: o.data[:5] + b"\x99" + o.data[6:], "data"),
    ("stack", lambda o: b"\x01" + o.stack[1:], "stack"),
])
def test_every_difference_is_reported(field, change, expect):
    case = _case([I.create_reg_reg(C.SUB_RM32_R32, R.EAX, R.EBX)], regs=[5, 0, 0, 7, O.STACK_TOP, 0, 0, 0])
    ref = O.run_unicorn(case)
    ours = O.run_ours(case)
    assert O.compare(case, ref, ours) == []
    bad = dataclasses.replace(ours, **{field: change(ours)})
    diffs = O.compare(case, ref, bad)
    assert any(expect in d for d in diffs), diffs


def test_deliberate_table_never_excuses_a_defined_flag(monkeypatch):
    # CF is defined for ADD: an entry excusing it must have no effect; AF is
    # undefined for AND: an entry excusing it does.
    monkeypatch.setitem(O.DELIBERATE, iced.Mnemonic.ADD, O.CF)
    monkeypatch.setitem(O.DELIBERATE, iced.Mnemonic.AND, O.AF)
    add = _case([I.create_reg_reg(C.ADD_RM32_R32, R.EAX, R.EBX)], regs=[1, 0, 0, 0xFFFFFFFF, 0, 0, 0, 0])
    ref, ours = O.run_unicorn(add), O.run_ours(add)
    assert O.compare(add, ref, dataclasses.replace(ours, eflags=ours.eflags ^ O.CF))
    and_ = _case([I.create_reg_reg(C.AND_RM32_R32, R.EAX, R.EBX)], regs=[1, 0, 0, 3, 0, 0, 0, 0])
    ref, ours = O.run_unicorn(and_), O.run_ours(and_)
    assert O.compare(and_, ref, dataclasses.replace(ours, eflags=ours.eflags ^ O.AF)) == []
    assert O.compare(and_, ref, dataclasses.replace(ours, eflags=ours.eflags ^ O.ZF))


def test_divide_error_is_compared():
    case = _case([I.create_reg(C.DIV_RM32, R.ECX)], regs=[1, 0, 0, 0, O.STACK_TOP, 0, 0, 0])
    ref = O.check(case)
    assert ref.fault == 0 and ref.eip == O.CODE


def test_labels_and_fixup():
    """Branches to labels, and a fixup that needs a label's address as an immediate."""
    target = I.create_reg_u32(C.MOV_R32_IMM32, R.EBX, 7)
    target.ip = 50

    def snippet(addrs):
        return [I.create_reg_u32(C.MOV_R32_IMM32, R.EAX, addrs.get(50, 0)),
                I.create_reg(C.JMP_RM32, R.EAX),
                I.create_reg_u32(C.MOV_R32_IMM32, R.ECX, 1),
                target]

    code = O.assemble(snippet({}), fixup=snippet)
    ref = O.check(O.Case(code, [0] * 8))
    assert ref.regs[1] == 0 and ref.regs[3] == 7
