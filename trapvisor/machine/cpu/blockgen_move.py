"""Block-tier forms of data movement: MOV, MOVZX/MOVSX, LEA, XCHG, BSWAP,
CDQ/CWDE, SETcc, CMOVcc, and NOP and CLD/STD.

The semantics of the closures in ``ops_move.py``, ``ops_bits.py`` (SETcc)
and ``ops_eflags.py`` (CLD/STD), from SDM Vol. 2, inlined as straight-line
Python through the emitter (``blockgen_emit.py``).  SETcc and CMOVcc test the
live producer's condition directly (``Prod.cond``).  Memory is read before
any register local is assigned, so a faulting access leaves the state exact.
"""

from __future__ import annotations

import iced_x86 as iced

from .blockgen_emit import REG, form, gpr
from .constants import DF
from .operands import GPR, K, MASK, SIGN, Unsupported, op_size
from .ops_move import HINT_NOPS

Mn = iced.Mnemonic


@form(*HINT_NOPS)
def g_nop(g, ins, i):
    return None


@form(Mn.MOV)
def g_mov(g, ins, i):
    k0, k1 = ins.op0_kind, ins.op1_kind
    if (k0 == K.REGISTER and ins.op0_register not in GPR) or (k1 == K.REGISTER and ins.op1_register not in GPR):
        raise Unsupported("special register")
    size = op_size(ins, 0)
    if k0 == K.REGISTER:
        if k1 == K.MEMORY and size == 4:
            # Load straight into the register local: the read faults before the assignment.
            a = g.addr(ins)
            dst = REG[GPR[ins.op0_register][0]]
            g.load(4, g.seg(ins), a, dst)
            g.written.add(GPR[ins.op0_register][0])
            g.dirty.add(GPR[ins.op0_register][0])
            return None
        g.wreg(ins.op0_register, g.read_op(ins, 1, size, "V"))
        return None
    a = g.addr(ins)
    v = g.read_op(ins, 1, size, "V")
    g.store(size, g.seg(ins), a, v)
    return None


@form(Mn.MOVZX, Mn.MOVSX)
def g_movx(g, ins, i):
    ssize, dsize = op_size(ins, 1), op_size(ins, 0)
    v = g.read_op(ins, 1, ssize, "V")
    if ins.mnemonic == Mn.MOVSX:
        s = SIGN[ssize]
        v = f"((({v}) ^ {s}) - {s}) & {MASK[dsize]}"
    g.wreg(ins.op0_register, v)
    return None


@form(Mn.LEA)
def g_lea(g, ins, i):
    e = g.ea(ins)
    dsize = op_size(ins, 0)
    if dsize != 4:
        e = f"({e}) & 0xFFFF"
    g.wreg(ins.op0_register, e)
    return None


@form(Mn.BSWAP)
def g_bswap(g, ins, i):
    idx, size, _ = GPR[ins.op0_register]
    if size != 4:
        raise Unsupported("bswap16")
    x = REG[idx]
    g.wreg32(idx, f"(({x} & 0xFF) << 24) | (({x} & 0xFF00) << 8) | (({x} >> 8) & 0xFF00) | ({x} >> 24)")
    return None


@form(Mn.CLD, Mn.STD)
def g_direction(g, ins, i):
    g.L(f"cpu.eflags_rest {'&= ~' if ins.mnemonic == Mn.CLD else '|= '}{DF}")
    return None


@form(Mn.CDQ, Mn.CWDE)
def g_convert(g, ins, i):
    if ins.mnemonic == Mn.CDQ:
        g.wreg32(2, "0xFFFFFFFF if eax & 0x80000000 else 0")
    else:
        g.wreg32(0, "(((eax & 0xFFFF) ^ 0x8000) - 0x8000) & 0xFFFFFFFF")
    return None


@form(Mn.XCHG)
def g_xchg(g, ins, i):
    size = op_size(ins, 0)
    if ins.op0_kind == K.MEMORY or ins.op1_kind == K.MEMORY:
        mi, ri = (0, 1) if ins.op0_kind == K.MEMORY else (1, 0)
        if not gpr(ins, ri):
            raise Unsupported("xchg")
        a = g.addr(ins)
        seg = g.seg(ins)
        g.load(size, seg, a, "V")
        g.store(size, seg, a, g.rreg(ins.op_register(ri)))
        g.wreg(ins.op_register(ri), "V")
        return None
    if not (gpr(ins, 0) and gpr(ins, 1)):
        raise Unsupported("xchg")
    g.L(f"T = {g.rreg(ins.op0_register)}")
    g.L(f"U = {g.rreg(ins.op1_register)}")
    g.wreg(ins.op0_register, "U")
    g.wreg(ins.op1_register, "T")
    return None


_SETCC = [getattr(Mn, "SET" + c) for c in ("O", "NO", "B", "AE", "E", "NE", "BE", "A",
                                           "S", "NS", "P", "NP", "L", "GE", "LE", "G")]
_CMOV = [getattr(Mn, "CMOV" + c) for c in ("O", "NO", "B", "AE", "E", "NE", "BE", "A",
                                           "S", "NS", "P", "NP", "L", "GE", "LE", "G")]


@form(*_SETCC)
def g_setcc(g, ins, i):
    cond = g.live.cond(ins.condition_code - 1)
    v = f"(1 if {cond} else 0)"
    if ins.op0_kind == K.MEMORY:
        a = g.addr(ins)
        g.L(f"V = {v}")
        g.store(1, g.seg(ins), a, "V")
    else:
        g.wreg(ins.op0_register, v)
    return None


@form(*_CMOV)
def g_cmov(g, ins, i):
    size = op_size(ins, 0)
    v = g.read_op(ins, 1, size, "V")   # the source is read (and may fault) even when false
    cond = g.live.cond(ins.condition_code - 1)
    g.L(f"if {cond}:")
    g.ind += 1
    n = len(g.body)
    g.wreg(ins.op0_register, v)
    if len(g.body) == n:
        g.L("pass")         # CMOVcc r32 to itself
    g.ind -= 1
    return None
