"""Block-tier forms of the stack and of near control transfers: PUSH, POP,
LEAVE, JMP, Jcc, CALL, RET.

The semantics of the closures in ``ops_stack.py`` and ``ops_control.py``,
from SDM Vol. 2, for a 32-bit stack and 32-bit operands (the other forms run
their closures).  A control transfer ends the block: its form returns the
terminator (``("jmp", target)``, ``("ind", local)`` or ``("jcc", condition,
target, fall-through)``) from which ``blockgen._assemble`` makes the exit,
a self-loop's back edge and chaining.  A run-time target is checked against a
truncated CS limit at the jump, a static one when the block is generated
(``Gen.check_target``/``static_target``, SDM Vol. 3A §5.3).
"""

from __future__ import annotations

import iced_x86 as iced

from .blockgen_emit import M32, form
from .constants import SS
from .operands import GPR, K, Unsupported, imm_value, op_size

Mn = iced.Mnemonic


JCC = [getattr(Mn, "J" + c) for c in ("O", "NO", "B", "AE", "E", "NE", "BE", "A",
                                       "S", "NS", "P", "NP", "L", "GE", "LE", "G")]


def _stack(g) -> None:
    if not g.ss32:
        raise Unsupported("16-bit stack")     # the closures handle SP wrapping
    g.uses_stack = True


def _push_value(g, v: str) -> None:
    _stack(g)
    g.L("B = (esp - 4) & 0xFFFFFFFF")
    g.store(4, SS, "B", v)
    g.wreg32(4, "B")


@form(Mn.PUSH)
def g_push(g, ins, i):
    k = ins.op0_kind
    if ins.code in (iced.Code.PUSH_R16, iced.Code.PUSH_RM16, iced.Code.PUSHW_IMM8, iced.Code.PUSH_IMM16):
        raise Unsupported("push16")
    if k == K.REGISTER:
        if ins.op0_register not in GPR:
            raise Unsupported("push sreg")
        v = g.rreg(ins.op0_register)
    elif k == K.MEMORY:
        v = g.read_op(ins, 0, 4, "V")
    else:
        v = hex(imm_value(ins, 0) & M32)
    _push_value(g, v)
    return None


@form(Mn.POP)
def g_pop(g, ins, i):
    if ins.op0_kind != K.REGISTER or ins.op0_register not in GPR or op_size(ins, 0) != 4:
        raise Unsupported("pop form")
    _stack(g)
    g.load(4, SS, "esp", "V")
    g.wreg32(4, "(esp + 4) & 0xFFFFFFFF")
    g.wreg(ins.op0_register, "V")
    return None


@form(Mn.LEAVE)
def g_leave(g, ins, i):
    if ins.code == iced.Code.LEAVEW:
        raise Unsupported("leave16")
    _stack(g)
    g.load(4, SS, "ebp", "V")
    g.wreg32(4, "(ebp + 4) & 0xFFFFFFFF")
    g.wreg32(5, "V")
    return None


# Control transfers return the expression for the next EIP (terminators).
def _opsize16(ins) -> bool:
    return ins.op0_kind == K.NEAR_BRANCH16 or ins.code in (
        iced.Code.CALL_RM16, iced.Code.JMP_RM16, iced.Code.RETNW, iced.Code.RETNW_IMM16,
        iced.Code.CALL_REL16, iced.Code.JMP_REL16)


@form(Mn.JMP)
def g_jmp(g, ins, i):
    if ins.is_jmp_far or ins.is_jmp_far_indirect or _opsize16(ins):
        raise Unsupported("far/16-bit jmp")
    if ins.op0_kind == K.NEAR_BRANCH32:
        return ("jmp", g.static_target(ins.near_branch_target & M32))
    t = g.read_op(ins, 0, 4, "T")
    if t != "T":
        g.L(f"T = {t}")
    g.check_target("T")
    return ("ind", "T")


@form(*JCC)
def g_jcc(g, ins, i):
    if _opsize16(ins):
        raise Unsupported("16-bit jcc")
    return ("jcc", g.live.cond(ins.condition_code - 1), g.static_target(ins.near_branch_target & M32),
            ins.next_ip & M32)


@form(Mn.CALL)
def g_call(g, ins, i):
    if ins.is_call_far or ins.is_call_far_indirect or _opsize16(ins):
        raise Unsupported("far/16-bit call")
    nxt = hex(ins.next_ip & M32)
    if ins.op0_kind == K.NEAR_BRANCH32:
        target = g.static_target(ins.near_branch_target & M32)
        _push_value(g, nxt)
        return ("jmp", target)
    t = g.read_op(ins, 0, 4, "T")
    if t != "T":
        g.L(f"T = {t}")
    g.check_target("T")
    _push_value(g, nxt)
    return ("ind", "T")


@form(Mn.RET)
def g_ret(g, ins, i):
    if ins.code not in (iced.Code.RETND, iced.Code.RETND_IMM16):
        raise Unsupported("16-bit ret")
    extra = ins.immediate16 if ins.op_count else 0
    _stack(g)
    g.load(4, SS, "esp", "T")
    g.check_target("T")
    g.wreg32(4, f"(esp + {4 + extra}) & 0xFFFFFFFF")
    return ("ind", "T")
