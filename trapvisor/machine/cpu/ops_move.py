"""Data movement: MOV, MOVZX/MOVSX, LEA, XCHG, BSWAP, CMPXCHG, CMPXCHG8B, XADD,
CMOVcc, CBW/CWDE/CWD/CDQ, XLATB, NOP.

SDM Vol. 1 §7.3.1 (data transfer: moves, exchanges, type conversions) and
the Miscellaneous Instructions of §7.3 (LEA, XLAT, NOP); semantics and
flags: SDM Vol. 2 (each instruction's Operation and Flags Affected
sections).  MOV to or from a segment register is compiled by ``ops_far.py``,
to or from a control or debug register by ``ops_sysregs.py``; PUSH and POP
are in ``ops_stack.py``.  Every compile function returns a closure
specialised for its operand forms; stores happen before register and flag
updates so a faulting instruction has no effect.
"""

from __future__ import annotations

import iced_x86 as iced

from . import flags as F
from .constants import ZF
from .flags import CONDITIONS
from .operands import (
    GPR, K, MASK, SIGN, ea_fn, mem_segment, op_size, reader, reg_reader, reg_writer, rmw,
    writer,
)
from .registry import NORMAL, handles

M = iced.Mnemonic


# --------------------------------------------------------------------- MOV
@handles(M.MOV)
def c_mov(cpu, ins):
    k0, k1 = ins.op0_kind, ins.op1_kind
    if k0 == K.REGISTER and ins.op0_register in GPR and (k1 == K.REGISTER and ins.op1_register in GPR):
        d, s = GPR[ins.op0_register], GPR[ins.op1_register]
        regs = cpu.regs
        if d[1] == 4:
            di, si = d[0], s[0]

            def mov_rr():
                regs[di] = regs[si]
            return mov_rr, NORMAL
    if k0 == K.REGISTER and ins.op0_register not in GPR:
        from .ops_sysregs import compile_mov_to_special
        return compile_mov_to_special(cpu, ins)
    if k1 == K.REGISTER and ins.op1_register not in GPR:
        from .ops_sysregs import compile_mov_from_special
        return compile_mov_from_special(cpu, ins)
    size = op_size(ins, 0)
    if k0 == K.REGISTER and size == 4 and k1 == K.MEMORY:
        di = GPR[ins.op0_register][0]
        ea, seg, regs, rd32 = ea_fn(cpu, ins), mem_segment(ins), cpu.regs, cpu.rd32

        def mov_rm():
            regs[di] = rd32(seg, ea())
        return mov_rm, NORMAL
    if k0 == K.MEMORY and size == 4 and k1 == K.REGISTER:
        si = GPR[ins.op1_register][0]
        ea, seg, regs, wr32 = ea_fn(cpu, ins), mem_segment(ins), cpu.regs, cpu.wr32

        def mov_mr():
            wr32(seg, ea(), regs[si])
        return mov_mr, NORMAL
    src = reader(cpu, ins, 1, size)
    dst = writer(cpu, ins, 0, size)

    def mov():
        dst(src())
    return mov, NORMAL


@handles(M.MOVZX, M.MOVSX)
def c_movx(cpu, ins):
    ssize = op_size(ins, 1)
    src = reader(cpu, ins, 1, ssize)
    dst = reg_writer(cpu, ins.op0_register)
    dmask = MASK[op_size(ins, 0)]
    if ins.mnemonic == M.MOVZX:
        def movzx():
            dst(src())
        return movzx, NORMAL
    s = SIGN[ssize]

    def movsx():
        dst(((src() ^ s) - s) & dmask)
    return movsx, NORMAL


@handles(M.LEA)
def c_lea(cpu, ins):
    ea = ea_fn(cpu, ins)
    dst = reg_writer(cpu, ins.op0_register)
    mask = MASK[op_size(ins, 0)]

    def lea():
        dst(ea() & mask)
    return lea, NORMAL


@handles(M.XCHG)
def c_xchg(cpu, ins):
    size = op_size(ins, 0)
    if ins.op0_kind == K.MEMORY or ins.op1_kind == K.MEMORY:
        mi, ri = (0, 1) if ins.op0_kind == K.MEMORY else (1, 0)
        ea, seg = ea_fn(cpu, ins), mem_segment(ins)
        rd = {1: cpu.rd8, 2: cpu.rd16, 4: cpu.rd32}[size]
        wr = {1: cpu.wr8, 2: cpu.wr16, 4: cpu.wr32}[size]
        rr = reg_reader(cpu, ins.op_register(ri))
        rw = reg_writer(cpu, ins.op_register(ri))

        def xchg_m():
            a = ea()
            m = rd(seg, a)
            wr(seg, a, rr())
            rw(m)
        return xchg_m, NORMAL
    r0, w0 = reg_reader(cpu, ins.op0_register), reg_writer(cpu, ins.op0_register)
    r1, w1 = reg_reader(cpu, ins.op1_register), reg_writer(cpu, ins.op1_register)

    def xchg_r():
        a, b = r0(), r1()
        w0(b)
        w1(a)
    return xchg_r, NORMAL


@handles(M.BSWAP)
def c_bswap(cpu, ins):
    idx, size, _ = GPR[ins.op0_register]
    regs = cpu.regs
    if size != 4:
        # BSWAP with a 16-bit operand is undefined; the oracle (and real CPUs) give 0.
        def bswap16():
            regs[idx] &= 0xFFFF0000
        return bswap16, NORMAL

    def bswap():
        regs[idx] = int.from_bytes(regs[idx].to_bytes(4, "little"), "big")
    return bswap, NORMAL


@handles(M.CMPXCHG)
def c_cmpxchg(cpu, ins):
    size = op_size(ins, 0)
    mask, sign = MASK[size], SIGN[size]
    rd, wr, mem = rmw(cpu, ins, size)
    src = reg_reader(cpu, ins.op1_register)
    regs = cpu.regs
    acc_w = reg_writer(cpu, {1: iced.Register.AL, 2: iced.Register.AX, 4: iced.Register.EAX}[size])

    def cmpxchg():
        if mem:
            seg, ea = mem
            a = ea()
            d = rd(seg, a)
        else:
            d = rd()
        acc = regs[0] & mask
        r = (acc - d) & mask
        if acc == d:
            if mem:
                wr(seg, a, src())
            else:
                wr(src())
        else:
            if mem:
                wr(seg, a, d)   # the destination is always written (SDM: locked RMW)
            acc_w(d)
        cpu.lf = (F.SUB, acc, d, r, sign)
    return cmpxchg, NORMAL


@handles(M.CMPXCHG8B)
def c_cmpxchg8b(cpu, ins):
    ea, seg = ea_fn(cpu, ins), mem_segment(ins)
    regs = cpu.regs

    def cmpxchg8b():
        a = ea()
        a4 = (a + 4) & 0xFFFFFFFF
        lo, hi = cpu.rd32(seg, a), cpu.rd32(seg, a4)
        # The destination is always written.  Write the old value back first:
        # if the second dword's page faults, memory is unchanged and the
        # instruction restarts cleanly (an operand may straddle two pages).
        cpu.wr32(seg, a4, hi)
        cpu.wr32(seg, a, lo)
        rest = F.arith_flags(cpu.lf) & ~ZF
        if lo == regs[0] and hi == regs[2]:
            cpu.wr32(seg, a, regs[3])
            cpu.wr32(seg, a4, regs[1])
            cpu.lf = (F.EAGER, rest | ZF, 0, 0, 0)
        else:
            regs[0], regs[2] = lo, hi
            cpu.lf = (F.EAGER, rest, 0, 0, 0)
    return cmpxchg8b, NORMAL


@handles(M.XADD)
def c_xadd(cpu, ins):
    size = op_size(ins, 0)
    mask, sign = MASK[size], SIGN[size]
    rd, wr, mem = rmw(cpu, ins, size)
    src = reg_reader(cpu, ins.op1_register)
    srcw = reg_writer(cpu, ins.op1_register)

    def xadd():
        b = src()
        if mem:
            seg, ea = mem
            a_ = ea()
            a = rd(seg, a_)
            r = (a + b) & mask
            wr(seg, a_, r)
        else:
            a = rd()
            r = (a + b) & mask
        srcw(a)
        if not mem:
            wr(r)
        cpu.lf = (F.ADD, a, b, r, sign)
    return xadd, NORMAL


# --------------------------------------------------------- type conversion
@handles(M.CBW, M.CWDE, M.CWD, M.CDQ)
def c_convert(cpu, ins):
    regs = cpu.regs
    op = ins.mnemonic
    if op == M.CBW:
        def cbw():
            al = regs[0] & 0xFF
            regs[0] = (regs[0] & 0xFFFF0000) | (((al ^ 0x80) - 0x80) & 0xFFFF)
        return cbw, NORMAL
    if op == M.CWDE:
        def cwde():
            ax = regs[0] & 0xFFFF
            regs[0] = ((ax ^ 0x8000) - 0x8000) & 0xFFFFFFFF
        return cwde, NORMAL
    if op == M.CWD:
        def cwd():
            regs[2] = (regs[2] & 0xFFFF0000) | (0xFFFF if regs[0] & 0x8000 else 0)
        return cwd, NORMAL

    def cdq():
        regs[2] = 0xFFFFFFFF if regs[0] & 0x80000000 else 0
    return cdq, NORMAL


# ------------------------------------------------------------------ CMOVcc
@handles(*[getattr(M, "CMOV" + c) for c in ("O", "NO", "B", "AE", "E", "NE", "BE", "A",
                                            "S", "NS", "P", "NP", "L", "GE", "LE", "G")])
def c_cmovcc(cpu, ins):
    cond = CONDITIONS[ins.condition_code - 1]
    size = op_size(ins, 0)
    src = reader(cpu, ins, 1, size)
    dst = reg_writer(cpu, ins.op0_register)

    def cmov():
        v = src()   # the source is read (and may fault) even when the condition is false
        if cond(cpu.lf):
            dst(v)
    return cmov, NORMAL


# --------------------------------------------------------------- NOP, XLAT
# The hint NOPs: the whole 0F 18-0F 1F opcode block executes as NOP on P6-family
# and later processors, whatever its ModR/M byte or prefixes, and never touches its
# memory operand (SDM Vol. 2B, NOP, and Vol. 2 Appendix A, opcode map, "0F 18-0F 1F
# reserved NOP").  iced-x86 names the encodings later processors gave a meaning
# (prefetch hints, CET, CLDEMOTE); on this CPU every one of them is a NOP.
HINT_NOPS = tuple(getattr(M, n) for n in (
    "NOP", "RESERVEDNOP", "PREFETCHNTA", "PREFETCHT0", "PREFETCHT1", "PREFETCHT2",
    "PREFETCHIT0", "PREFETCHIT1", "CLDEMOTE", "ENDBR32", "ENDBR64", "RDSSPD") if hasattr(M, n))


@handles(M.PAUSE, M.FNOP if hasattr(M, "FNOP") else M.NOP, *HINT_NOPS)
def c_nop(cpu, ins):
    def nop():
        pass
    return nop, NORMAL


@handles(M.XLATB)
def c_xlat(cpu, ins):
    regs = cpu.regs
    seg = mem_segment(ins)
    amask = 0xFFFF if ins.memory_base == iced.Register.BX else 0xFFFFFFFF

    def xlat():
        a = (regs[3] + (regs[0] & 0xFF)) & amask
        regs[0] = (regs[0] & 0xFFFFFF00) | cpu.rd8(seg, a)
    return xlat, NORMAL
