"""The integer instruction set gcc -m32 emits: data movement, arithmetic,
logic, shifts and rotates, bit operations, flag operations, CPUID, RDTSC.

Semantics and flags: SDM Vol. 2 (each instruction's Operation and Flags
Affected sections).  Every compile function returns a closure specialised
for its operand forms; stores happen before register and flag updates so a
faulting instruction has no effect.
"""

from __future__ import annotations

import iced_x86 as iced

from . import flags as F
from .constants import AF, CF, DE, OF, PF, SF, ZF, SS
from .flags import CONDITIONS, PARITY, arith_flags, get_cf
from .operands import (
    GPR, K, MASK, SIGN, Unsupported, ea_fn, imm_value, mem_segment, op_size,
    reader, reg_reader, reg_writer, writer,
)
from .cpu import CpuFault
from .registry import END, NORMAL, handles

M = iced.Mnemonic


def _rmw(cpu, ins, size):
    """(read, write) closures for a read-modify-write destination operand 0.

    For memory the effective address is computed once per execution and
    shared between the read and the write through a one-element cell.
    """
    if ins.op0_kind == K.REGISTER:
        return reg_reader(cpu, ins.op0_register), reg_writer(cpu, ins.op0_register), None
    ea = ea_fn(cpu, ins)
    seg = mem_segment(ins)
    rd = {1: cpu.rd8, 2: cpu.rd16, 4: cpu.rd32}[size]
    wr = {1: cpu.wr8, 2: cpu.wr16, 4: cpu.wr32}[size]
    return (rd, wr, (seg, ea))


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
        from .ops_system import compile_mov_to_special
        return compile_mov_to_special(cpu, ins)
    if k1 == K.REGISTER and ins.op1_register not in GPR:
        from .ops_system import compile_mov_from_special
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
    rd, wr, mem = _rmw(cpu, ins, size)
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
    rd, wr, mem = _rmw(cpu, ins, size)
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


# ----------------------------------------------------------------- PUSH/POP
@handles(M.PUSH)
def c_push(cpu, ins):
    kind = ins.op0_kind
    if kind == K.REGISTER and ins.op0_register not in GPR:
        from .ops_system import compile_push_sreg
        return compile_push_sreg(cpu, ins)
    size = 2 if ins.code in (iced.Code.PUSH_R16, iced.Code.PUSH_RM16, iced.Code.PUSHW_IMM8,
                             iced.Code.PUSH_IMM16) else 4
    if kind in (K.IMMEDIATE8TO16, K.IMMEDIATE8TO32, K.IMMEDIATE16, K.IMMEDIATE32, K.IMMEDIATE8):
        v = imm_value(ins, 0) & MASK[size]
        push = cpu.push32 if size == 4 else cpu.push16

        def push_imm():
            push(v)
        return push_imm, NORMAL
    src = reader(cpu, ins, 0, size)
    if size == 4 and kind == K.REGISTER:
        idx = GPR[ins.op0_register][0]
        regs = cpu.regs

        def push_r():
            # PUSH ESP pushes the value before the decrement (SDM Vol. 2 PUSH).
            v = regs[idx]
            if cpu.ss32:
                esp = (regs[4] - 4) & 0xFFFFFFFF
                cpu.wr32(SS, esp, v)
                regs[4] = esp
            else:
                cpu.push32(v)
        return push_r, NORMAL
    push = cpu.push32 if size == 4 else cpu.push16

    def push_any():
        push(src())
    return push_any, NORMAL


@handles(M.POP)
def c_pop(cpu, ins):
    kind = ins.op0_kind
    if kind == K.REGISTER and ins.op0_register not in GPR:
        from .ops_system import compile_pop_sreg
        return compile_pop_sreg(cpu, ins)
    size = op_size(ins, 0)
    regs = cpu.regs
    if kind == K.REGISTER:
        dst = reg_writer(cpu, ins.op0_register)
        pop = cpu.pop32 if size == 4 else cpu.pop16

        def pop_r():
            dst(pop())
        return pop_r, NORMAL
    # POP r/m with ESP in the address: the address is computed after ESP is
    # incremented (SDM Vol. 2 POP).  Read, then compute, then write, then commit ESP.
    ea, seg = ea_fn(cpu, ins), mem_segment(ins)
    wr = cpu.wr32 if size == 4 else cpu.wr16
    rd = cpu.rd32 if size == 4 else cpu.rd16

    def pop_m():
        old = regs[4]
        sp = old if cpu.ss32 else old & 0xFFFF
        v = rd(SS, sp)
        new = (old + size) & 0xFFFFFFFF if cpu.ss32 else (old & 0xFFFF0000) | ((old + size) & 0xFFFF)
        regs[4] = new
        try:
            wr(seg, ea(), v)
        except CpuFault:
            regs[4] = old
            raise
    return pop_m, NORMAL


@handles(M.PUSHAD, M.PUSHA)
def c_pusha(cpu, ins):
    size = 4 if ins.mnemonic == M.PUSHAD else 2
    regs = cpu.regs
    mask = MASK[size]

    def pusha():
        # The eight stores go from the lowest address (EDI) up, as QEMU does:
        # a stack growing into a not-present page faults on the first store
        # with nothing written.  ESP changes only after all of them.
        old = regs[4]
        wr = cpu.wr32 if size == 4 else cpu.wr16
        m = 0xFFFFFFFF if cpu.ss32 else 0xFFFF
        low = (old - 8 * size) & m
        for i in range(7, -1, -1):      # EDI at the lowest address, EAX at the highest
            wr(SS, (low + (7 - i) * size) & m, regs[i] & mask)
        regs[4] = low if cpu.ss32 else (old & 0xFFFF0000) | low
    return pusha, NORMAL


@handles(M.POPAD, M.POPA)
def c_popa(cpu, ins):
    size = 4 if ins.mnemonic == M.POPAD else 2
    regs = cpu.regs
    mask = MASK[size]

    def popa():
        m = 0xFFFFFFFF if cpu.ss32 else 0xFFFF
        sp = regs[4] & m
        rd = cpu.rd32 if size == 4 else cpu.rd16
        vals = []
        for i in range(8):
            vals.append(rd(SS, sp))
            sp = (sp + size) & m
        for i, v in zip((7, 6, 5, 4, 3, 2, 1, 0), vals):
            if i == 4:
                continue   # the saved ESP is discarded
            regs[i] = v if size == 4 else (regs[i] & 0xFFFF0000) | v
        regs[4] = sp if cpu.ss32 else (regs[4] & 0xFFFF0000) | sp
    return popa, NORMAL


@handles(M.LEAVE)
def c_leave(cpu, ins):
    regs = cpu.regs
    size = 2 if ins.code == iced.Code.LEAVEW else 4

    def leave():
        bp = regs[5] if cpu.ss32 else regs[5] & 0xFFFF
        v = cpu.rd32(SS, bp) if size == 4 else cpu.rd16(SS, bp)
        if cpu.ss32:
            regs[4] = (bp + size) & 0xFFFFFFFF
        else:
            regs[4] = (regs[4] & 0xFFFF0000) | ((bp + size) & 0xFFFF)
        regs[5] = v if size == 4 else (regs[5] & 0xFFFF0000) | v
    return leave, NORMAL


@handles(M.ENTER)
def c_enter(cpu, ins):
    alloc = ins.immediate16
    level = ins.immediate8_2nd & 31
    size = 2 if ins.code == iced.Code.ENTERW_IMM16_IMM8 else 4
    regs = cpu.regs

    def enter():
        # SDM Vol. 2 ENTER: the stack size (SS.B), not the operand size,
        # selects SP or ESP and BP or EBP; the operand size selects what is pushed.
        m = 0xFFFFFFFF if cpu.ss32 else 0xFFFF
        wr = cpu.wr32 if size == 4 else cpu.wr16
        rd = cpu.rd32 if size == 4 else cpu.rd16
        vmask = MASK[size]
        sp = regs[4] & m
        sp = (sp - size) & m
        wr(SS, sp, regs[5] & vmask)
        frame = sp
        bp = regs[5] & m
        for _ in range(1, level):
            bp = (bp - size) & m
            sp = (sp - size) & m
            wr(SS, sp, rd(SS, bp))
        if level > 0:
            sp = (sp - size) & m
            wr(SS, sp, frame & vmask)
        sp = (sp - alloc) & m
        # ENTER ends with a write check of the final stack pointer (the memory
        # is touched, not changed; Bochs does the same, QEMU does not): a
        # frame that runs into a not-present page faults here, not later.
        wr(SS, sp, rd(SS, sp))
        if cpu.ss32:
            regs[5], regs[4] = frame, sp
        else:
            regs[5] = (regs[5] & 0xFFFF0000) | frame
            regs[4] = (regs[4] & 0xFFFF0000) | sp
    return enter, NORMAL


# --------------------------------------------------------- ALU: 2 operands
def _alu_kernel(op, mask, sign):
    """(a, b, cpu) -> result or None; sets cpu.lf."""
    if op == M.ADD:
        def k(a, b, cpu):
            r = (a + b) & mask
            cpu.lf = (F.ADD, a, b, r, sign)
            return r
    elif op == M.SUB or op == M.CMP:
        def k(a, b, cpu):
            r = (a - b) & mask
            cpu.lf = (F.SUB, a, b, r, sign)
            return r
    elif op == M.AND or op == M.TEST:
        def k(a, b, cpu):
            r = a & b
            cpu.lf = (F.LOGIC, 0, 0, r, sign)
            return r
    elif op == M.OR:
        def k(a, b, cpu):
            r = a | b
            cpu.lf = (F.LOGIC, 0, 0, r, sign)
            return r
    elif op == M.XOR:
        def k(a, b, cpu):
            r = a ^ b
            cpu.lf = (F.LOGIC, 0, 0, r, sign)
            return r
    elif op == M.ADC:
        def k(a, b, cpu):
            if get_cf(cpu.lf):
                r = (a + b + 1) & mask
                cpu.lf = (F.ADC, a, b, r, sign)
            else:
                r = (a + b) & mask
                cpu.lf = (F.ADD, a, b, r, sign)
            return r
    elif op == M.SBB:
        def k(a, b, cpu):
            if get_cf(cpu.lf):
                r = (a - b - 1) & mask
                cpu.lf = (F.SBB, a, b, r, sign)
            else:
                r = (a - b) & mask
                cpu.lf = (F.SUB, a, b, r, sign)
            return r
    else:
        raise Unsupported(op)
    return k


@handles(M.ADD, M.OR, M.ADC, M.SBB, M.AND, M.SUB, M.XOR, M.CMP, M.TEST)
def c_alu(cpu, ins):
    op = ins.mnemonic
    size = op_size(ins, 0)
    mask, sign = MASK[size], SIGN[size]
    k = _alu_kernel(op, mask, sign)
    writes = op not in (M.CMP, M.TEST)
    src = reader(cpu, ins, 1, size)
    regs = cpu.regs
    if ins.op0_kind == K.REGISTER:
        d = GPR[ins.op0_register]
        if d[1] == 4:
            di = d[0]
            # Fast forms for the most common 32-bit register destinations.
            if op == M.CMP:
                if ins.op1_kind == K.REGISTER:
                    si = GPR[ins.op1_register][0]

                    def cmp_rr():
                        a, b = regs[di], regs[si]
                        cpu.lf = (F.SUB, a, b, (a - b) & 0xFFFFFFFF, 0x80000000)
                    return cmp_rr, NORMAL
                if ins.op1_kind != K.MEMORY:
                    b = imm_value(ins, 1)

                    def cmp_ri():
                        a = regs[di]
                        cpu.lf = (F.SUB, a, b, (a - b) & 0xFFFFFFFF, 0x80000000)
                    return cmp_ri, NORMAL
            if op == M.ADD and ins.op1_kind != K.MEMORY and ins.op1_kind != K.REGISTER:
                b = imm_value(ins, 1)

                def add_ri():
                    a = regs[di]
                    r = (a + b) & 0xFFFFFFFF
                    regs[di] = r
                    cpu.lf = (F.ADD, a, b, r, 0x80000000)
                return add_ri, NORMAL
            if op == M.SUB and ins.op1_kind != K.MEMORY and ins.op1_kind != K.REGISTER:
                b = imm_value(ins, 1)

                def sub_ri():
                    a = regs[di]
                    r = (a - b) & 0xFFFFFFFF
                    regs[di] = r
                    cpu.lf = (F.SUB, a, b, r, 0x80000000)
                return sub_ri, NORMAL
            if op == M.TEST and ins.op1_kind == K.REGISTER:
                si = GPR[ins.op1_register][0]

                def test_rr():
                    cpu.lf = (F.LOGIC, 0, 0, regs[di] & regs[si], 0x80000000)
                return test_rr, NORMAL
            if op == M.XOR and ins.op1_kind == K.REGISTER and ins.op1_register == ins.op0_register:
                def xor_zero():
                    regs[di] = 0
                    cpu.lf = (F.LOGIC, 0, 0, 0, 0x80000000)
                return xor_zero, NORMAL
            if writes:
                def alu_r32():
                    regs[di] = k(regs[di], src(), cpu)
                return alu_r32, NORMAL

            def alu_r32_nw():
                k(regs[di], src(), cpu)
            return alu_r32_nw, NORMAL
        rd, wr = reg_reader(cpu, ins.op0_register), reg_writer(cpu, ins.op0_register)
        if writes:
            def alu_r():
                wr(k(rd(), src(), cpu))
            return alu_r, NORMAL

        def alu_r_nw():
            k(rd(), src(), cpu)
        return alu_r_nw, NORMAL
    ea, seg = ea_fn(cpu, ins), mem_segment(ins)
    rdm = {1: cpu.rd8, 2: cpu.rd16, 4: cpu.rd32}[size]
    wrm = {1: cpu.wr8, 2: cpu.wr16, 4: cpu.wr32}[size]
    if writes:
        def alu_m():
            a = ea()
            v = rdm(seg, a)
            b = src()
            old = cpu.lf
            r = k(v, b, cpu)
            try:
                wrm(seg, a, r)
            except CpuFault:
                cpu.lf = old
                raise
        return alu_m, NORMAL

    def alu_m_nw():
        k(rdm(seg, ea()), src(), cpu)
    return alu_m_nw, NORMAL


# ----------------------------------------------------- ALU: 1 operand
@handles(M.INC, M.DEC, M.NEG, M.NOT)
def c_unary(cpu, ins):
    op = ins.mnemonic
    size = op_size(ins, 0)
    mask, sign = MASK[size], SIGN[size]
    rd, wr, mem = _rmw(cpu, ins, size)
    if op == M.INC:
        def kern(a):
            r = (a + 1) & mask
            return r, (F.INC, a, get_cf(cpu.lf), r, sign)
    elif op == M.DEC:
        def kern(a):
            r = (a - 1) & mask
            return r, (F.DEC, a, get_cf(cpu.lf), r, sign)
    elif op == M.NEG:
        def kern(a):
            r = (-a) & mask
            return r, (F.SUB, 0, a, r, sign)
    else:
        def kern(a):
            return a ^ mask, None
    if mem is None:
        if size == 4 and op in (M.INC, M.DEC):
            di = GPR[ins.op0_register][0]
            regs = cpu.regs
            delta = 1 if op == M.INC else -1
            fop = F.INC if op == M.INC else F.DEC

            def incdec_r32():
                a = regs[di]
                r = (a + delta) & 0xFFFFFFFF
                regs[di] = r
                cpu.lf = (fop, a, get_cf(cpu.lf), r, 0x80000000)
            return incdec_r32, NORMAL

        def unary_r():
            r, lf = kern(rd())
            wr(r)
            if lf is not None:
                cpu.lf = lf
        return unary_r, NORMAL
    seg, ea = mem

    def unary_m():
        a = ea()
        r, lf = kern(rd(seg, a))
        wr(seg, a, r)
        if lf is not None:
            cpu.lf = lf
    return unary_m, NORMAL


# ------------------------------------------------------- MUL / IMUL / DIV
def _mul_flags(cpu, overflow: bool, r_low: int, sign: int) -> None:
    # CF=OF=overflow; SF, ZF, PF follow the low half as unicorn/QEMU computes
    # them; AF is cleared (all four are undefined by Intel: docs/undefined-flags.md).
    f = (CF | OF) if overflow else 0
    f |= PARITY[r_low & 0xFF]
    if r_low == 0:
        f |= ZF
    if r_low & sign:
        f |= SF
    cpu.lf = (F.EAGER, f, 0, 0, 0)


@handles(M.MUL)
def c_mul(cpu, ins):
    size = op_size(ins, 0)
    src = reader(cpu, ins, 0, size)
    regs = cpu.regs
    mask, sign = MASK[size], SIGN[size]

    def mul():
        b = src()
        if size == 1:
            r = (regs[0] & 0xFF) * b
            regs[0] = (regs[0] & 0xFFFF0000) | r
            _mul_flags(cpu, r > 0xFF, r & 0xFF, sign)
        elif size == 2:
            r = (regs[0] & 0xFFFF) * b
            regs[0] = (regs[0] & 0xFFFF0000) | (r & 0xFFFF)
            regs[2] = (regs[2] & 0xFFFF0000) | (r >> 16)
            _mul_flags(cpu, r > 0xFFFF, r & 0xFFFF, sign)
        else:
            r = regs[0] * b
            regs[0] = r & 0xFFFFFFFF
            regs[2] = r >> 32
            _mul_flags(cpu, r > 0xFFFFFFFF, r & 0xFFFFFFFF, sign)
    return mul, NORMAL


@handles(M.IMUL)
def c_imul(cpu, ins):
    regs = cpu.regs
    n = ins.op_count
    if n == 1:
        size = op_size(ins, 0)
        src = reader(cpu, ins, 0, size)
        sign, mask = SIGN[size], MASK[size]
        bits = size * 8

        def imul1():
            b = (src() ^ sign) - sign
            a = ((regs[0] & mask) ^ sign) - sign
            r = a * b
            lo = r & mask
            hi = (r >> bits) & mask
            if size == 1:
                regs[0] = (regs[0] & 0xFFFF0000) | (r & 0xFFFF)
            elif size == 2:
                regs[0] = (regs[0] & 0xFFFF0000) | lo
                regs[2] = (regs[2] & 0xFFFF0000) | hi
            else:
                regs[0], regs[2] = lo, hi
            _mul_flags(cpu, r != ((lo ^ sign) - sign), lo, sign)
        return imul1, NORMAL
    size = op_size(ins, 0)
    sign, mask = SIGN[size], MASK[size]
    if n == 2:
        a_rd = reg_reader(cpu, ins.op0_register)
        b_rd = reader(cpu, ins, 1, size)
    else:
        a_rd = reader(cpu, ins, 1, size)
        imm = imm_value(ins, 2) & mask
        b_rd = lambda: imm  # noqa: E731
    dst = reg_writer(cpu, ins.op0_register)

    def imul():
        a = (a_rd() ^ sign) - sign
        b = (b_rd() ^ sign) - sign
        r = a * b
        lo = r & mask
        dst(lo)
        _mul_flags(cpu, r != ((lo ^ sign) - sign), lo, sign)
    return imul, NORMAL


@handles(M.DIV, M.IDIV)
def c_div(cpu, ins):
    size = op_size(ins, 0)
    src = reader(cpu, ins, 0, size)
    regs = cpu.regs
    signed = ins.mnemonic == M.IDIV
    sign, mask = SIGN[size], MASK[size]
    bits = size * 8

    def div():
        d = src()
        if size == 1:
            n = regs[0] & 0xFFFF
        elif size == 2:
            n = ((regs[2] & 0xFFFF) << 16) | (regs[0] & 0xFFFF)
        else:
            n = (regs[2] << 32) | regs[0]
        if d == 0:
            raise CpuFault(DE)
        if signed:
            d = (d ^ sign) - sign
            nsign = 1 << (2 * bits - 1)
            n = (n ^ nsign) - nsign
            q = abs(n) // abs(d)
            if (n < 0) != (d < 0):
                q = -q
            rem = n - q * d
            if q >= sign or q < -sign:
                raise CpuFault(DE)
        else:
            q, rem = divmod(n, d)
            if q > mask:
                raise CpuFault(DE)
        q &= mask
        rem &= mask
        if size == 1:
            regs[0] = (regs[0] & 0xFFFF0000) | (rem << 8) | q
        elif size == 2:
            regs[0] = (regs[0] & 0xFFFF0000) | q
            regs[2] = (regs[2] & 0xFFFF0000) | rem
        else:
            regs[0], regs[2] = q, rem
        # Flags are undefined after DIV/IDIV; the oracle leaves them unchanged.
    return div, NORMAL


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


# ------------------------------------------------------ shifts and rotates
# SDM Vol. 2 SAL/SAR/SHL/SHR, RCL/RCR/ROL/ROR.  The count is masked to 5 bits;
# a masked count of 0 changes nothing, not even the flags.  Flags Intel leaves
# undefined (AF; OF for counts other than 1) follow QEMU, see
# docs/undefined-flags.md.  Each kernel takes (value, count 1..31, lazy
# flags) and returns (result, eager flags); the closure stores the result
# before it commits the flags, so a faulting store leaves the flags alone.
def _szp(r, sign):
    f = PARITY[r & 0xFF]
    if r == 0:
        f |= ZF
    if r & sign:
        f |= SF
    return f


def _shift_kernel(op, bits):
    mask = (1 << bits) - 1
    sign = 1 << (bits - 1)
    top = bits - 1
    if op == M.SHL or op == M.SAL:
        def shl(a, c, lf):
            r = (a << c) & mask
            cf = (a >> (bits - c)) & 1 if c <= bits else 0
            f = _szp(r, sign) | cf      # AF = 0
            if (r >> top) ^ cf:         # OF = MSB(result) ^ CF, for every count
                f |= OF
            return r, f
        return shl
    if op == M.SHR:
        def shr(a, c, lf):
            r = a >> c
            f = _szp(r, sign) | ((a >> (c - 1)) & 1)
            if c == 1 and a & sign:     # OF = MSB(original) for 1, 0 for larger counts
                f |= OF
            return r, f
        return shr
    if op == M.SAR:
        def sar(a, c, lf):
            sa = (a ^ sign) - sign
            r = (sa >> c) & mask
            return r, _szp(r, sign) | ((sa >> (c - 1)) & 1)   # OF = 0
        return sar
    if op == M.ROL:
        def rol(a, c, lf):
            c %= bits
            r = ((a << c) | (a >> (bits - c))) & mask if c else a
            cf = r & 1
            f = (arith_flags(lf) & ~(CF | OF)) | cf
            if (r >> top) ^ cf:
                f |= OF
            return r, f
        return rol
    if op == M.ROR:
        def ror(a, c, lf):
            c %= bits
            r = ((a >> c) | (a << (bits - c))) & mask if c else a
            f = arith_flags(lf) & ~(CF | OF)
            if r & sign:
                f |= CF
            if ((r >> top) ^ (r >> (top - 1))) & 1:
                f |= OF
            return r, f
        return ror
    # RCL/RCR rotate through CF: a (bits+1)-bit rotation, the count taken
    # mod 9 / 17 / 33.  OF (defined for count 1) is MSB(src) ^ MSB(result).
    wmask = (mask << 1) | 1
    left = op == M.RCL

    def rcx(a, c, lf):
        c %= bits + 1
        old = arith_flags(lf)
        if c == 0:
            return a, old
        wide = a | ((old & CF) << bits)
        if left:
            w = ((wide << c) | (wide >> (bits + 1 - c))) & wmask
        else:
            w = ((wide >> c) | (wide << (bits + 1 - c))) & wmask
        r = w & mask
        f = (old & ~(CF | OF)) | (w >> bits)
        if (a ^ r) & sign:
            f |= OF
        return r, f
    return rcx


@handles(M.SHL, M.SAL, M.SHR, M.SAR, M.ROL, M.ROR, M.RCL, M.RCR)
def c_shift(cpu, ins):
    size = op_size(ins, 0)
    kern = _shift_kernel(ins.mnemonic, size * 8)
    regs = cpu.regs
    by_cl = ins.op1_kind == K.REGISTER
    cimm = 0 if by_cl else imm_value(ins, 1) & 0x1F
    EAGER = F.EAGER
    if ins.op0_kind == K.REGISTER:
        idx = GPR[ins.op0_register][0]
        if size == 4:
            if not by_cl:
                if cimm == 0:
                    def shift_nop():
                        pass
                    return shift_nop, NORMAL

                def shift_r32_imm():
                    r, f = kern(regs[idx], cimm, cpu.lf)
                    regs[idx] = r
                    cpu.lf = (EAGER, f, 0, 0, 0)
                return shift_r32_imm, NORMAL

            def shift_r32_cl():
                c = regs[1] & 0x1F
                if c:
                    r, f = kern(regs[idx], c, cpu.lf)
                    regs[idx] = r
                    cpu.lf = (EAGER, f, 0, 0, 0)
            return shift_r32_cl, NORMAL
        rd, wr = reg_reader(cpu, ins.op0_register), reg_writer(cpu, ins.op0_register)

        def shift_r():
            c = regs[1] & 0x1F if by_cl else cimm
            if c:
                r, f = kern(rd(), c, cpu.lf)
                wr(r)
                cpu.lf = (EAGER, f, 0, 0, 0)
        return shift_r, NORMAL
    ea, seg = ea_fn(cpu, ins), mem_segment(ins)
    rdm = {1: cpu.rd8, 2: cpu.rd16, 4: cpu.rd32}[size]
    wrm = {1: cpu.wr8, 2: cpu.wr16, 4: cpu.wr32}[size]

    def shift_m():
        c = regs[1] & 0x1F if by_cl else cimm
        a = ea()
        v = rdm(seg, a)      # read (and fault) even when the count is 0
        if c:
            r, f = kern(v, c, cpu.lf)
            wrm(seg, a, r)
            cpu.lf = (EAGER, f, 0, 0, 0)
    return shift_m, NORMAL


@handles(M.SHLD, M.SHRD)
def c_shxd(cpu, ins):
    size = op_size(ins, 0)
    mask, sign = MASK[size], SIGN[size]
    bits = size * 8
    rd, wr, mem = _rmw(cpu, ins, size)
    src = reg_reader(cpu, ins.op1_register)
    if ins.op2_kind == K.REGISTER:
        regs = cpu.regs
        count = lambda: regs[1] & 0x1F  # noqa: E731
    else:
        cimm = ins.immediate8 & 0x1F
        count = lambda: cimm  # noqa: E731
    left = ins.mnemonic == M.SHLD

    def compute(a, b, c):
        # The count is taken mod 32 for both sizes.  A 16-bit shift by 17..31 is
        # undefined by Intel; like QEMU we shift the 48-bit A:B:A (SHLD) or
        # A:B:A (SHRD, A in the low bits) so the result is what Intel CPUs give.
        # CF is the last bit shifted out; OF (defined for count 1 only) is
        # MSB(result) ^ MSB(value shifted by count-1), as QEMU computes it.
        if left:
            wide = (a << 32) | (b << 16) | a if bits == 16 else (a << 32) | b
            r = (wide >> (32 - c)) & mask
            cf = (wide >> (bits + 32 - c)) & 1
            of = cf ^ (r >> (bits - 1))
        else:
            wide = (a << 32) | (b << 16) | a if bits == 16 else (b << 32) | a
            r = (wide >> c) & mask
            cf = (wide >> (c - 1)) & 1
            of = ((wide >> (c + bits - 2)) ^ (r >> (bits - 1))) & 1
        return r, _szp(r, sign) | (CF if cf else 0) | (OF if of else 0)

    def shxd():
        c = count()
        if mem:
            seg, ea = mem
            a_ = ea()
            a = rd(seg, a_)
            if c == 0:
                return
            r, f = compute(a, src(), c)
            wr(seg, a_, r)
        else:
            if c == 0:
                return
            r, f = compute(rd(), src(), c)
            wr(r)
        cpu.lf = (F.EAGER, f, 0, 0, 0)
    return shxd, NORMAL


# ------------------------------------------------------------- bit ops
@handles(M.BT, M.BTS, M.BTR, M.BTC)
def c_bt(cpu, ins):
    """BT/BTS/BTR/BTC (SDM Vol. 2 BT).  CF = the selected bit; OF SF AF PF are
    undefined and ZF is unchanged on current CPUs: we keep all five, which is
    what QEMU does when the flags were last set from EFLAGS (see
    docs/undefined-flags.md)."""
    op = ins.mnemonic
    size = op_size(ins, 0)
    bits = size * 8
    mask = MASK[size]
    reg_index = ins.op1_kind == K.REGISTER
    bitsrc = reader(cpu, ins, 1, size)
    modify = None if op == M.BT else op

    def set_cf(bit):
        f = arith_flags(cpu.lf) & ~CF
        cpu.lf = (F.EAGER, f | bit, 0, 0, 0)

    if ins.op0_kind == K.REGISTER:
        rd, wr = reg_reader(cpu, ins.op0_register), reg_writer(cpu, ins.op0_register)

        def bt_r():
            n = bitsrc() & (bits - 1)
            v = rd()
            if modify is not None:
                if modify == M.BTS:
                    wr(v | (1 << n))
                elif modify == M.BTR:
                    wr(v & ~(1 << n) & mask)
                else:
                    wr(v ^ (1 << n))
            set_cf((v >> n) & 1)
        return bt_r, NORMAL
    ea, seg = ea_fn(cpu, ins), mem_segment(ins)
    rdm = {2: cpu.rd16, 4: cpu.rd32}[size]
    wrm = {2: cpu.wr16, 4: cpu.wr32}[size]
    sgn = SIGN[size]
    shift = 5 if size == 4 else 4
    # The effective address wraps at the address size (QEMU does the same).
    amask = 0xFFFF if ins.memory_base in _A16 or ins.memory_index in _A16 or \
        (ins.memory_base == iced.Register.NONE and ins.memory_index == iced.Register.NONE
         and ins.memory_displ_size == 2) else 0xFFFFFFFF

    def bt_m():
        n = bitsrc()
        a = ea()
        if reg_index:
            # A register bit offset is signed and reaches beyond the operand:
            # the word at EA + (offset >> 4 or 5) * size (SDM Vol. 2 BT).
            a = (a + (((n ^ sgn) - sgn) >> shift) * size) & amask
        n &= bits - 1
        v = rdm(seg, a)
        if modify is not None:
            if modify == M.BTS:
                r = v | (1 << n)
            elif modify == M.BTR:
                r = v & ~(1 << n) & mask
            else:
                r = v ^ (1 << n)
            wrm(seg, a, r)
        set_cf((v >> n) & 1)
    return bt_m, NORMAL


_A16 = {iced.Register.BX, iced.Register.BP, iced.Register.SI, iced.Register.DI}


@handles(M.BSF, M.BSR)
def c_bsf(cpu, ins):
    size = op_size(ins, 0)
    src = reader(cpu, ins, 1, size)
    dst = reg_writer(cpu, ins.op0_register)
    forward = ins.mnemonic == M.BSF
    sign = SIGN[size]

    def bsf():
        v = src()
        # ZF = (source == 0) is the only defined flag.  QEMU sets the others as
        # a logic operation on the source (CF=OF=AF=0, SF and PF from the
        # source), and so do we: it is one tuple.  A zero source leaves the
        # destination unchanged (what real CPUs and QEMU do).
        cpu.lf = (F.LOGIC, 0, 0, v, sign)
        if v:
            dst((v & -v).bit_length() - 1 if forward else v.bit_length() - 1)
    return bsf, NORMAL


# ---------------------------------------------------- SETcc / CMOVcc
@handles(*[getattr(M, "SET" + c) for c in ("O", "NO", "B", "AE", "E", "NE", "BE", "A",
                                           "S", "NS", "P", "NP", "L", "GE", "LE", "G")])
def c_setcc(cpu, ins):
    cond = CONDITIONS[ins.condition_code - 1]
    dst = writer(cpu, ins, 0, 1)

    def setcc():
        dst(1 if cond(cpu.lf) else 0)
    return setcc, NORMAL


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


# ------------------------------------------------------------ flag ops
@handles(M.CLC, M.STC, M.CMC)
def c_carry(cpu, ins):
    op = ins.mnemonic

    def carry():
        f = arith_flags(cpu.lf)
        if op == M.CLC:
            f &= ~CF
        elif op == M.STC:
            f |= CF
        else:
            f ^= CF
        cpu.lf = (F.EAGER, f, 0, 0, 0)
    return carry, NORMAL


@handles(M.CLD, M.STD)
def c_direction(cpu, ins):
    from .constants import DF
    if ins.mnemonic == M.CLD:
        def cld():
            cpu.eflags_rest &= ~DF
        return cld, NORMAL

    def std():
        cpu.eflags_rest |= DF
    return std, NORMAL


@handles(M.LAHF)
def c_lahf(cpu, ins):
    regs = cpu.regs

    def lahf():
        ah = (arith_flags(cpu.lf) & (SF | ZF | AF | PF | CF)) | 2
        regs[0] = (regs[0] & 0xFFFF00FF) | (ah << 8)
    return lahf, NORMAL


@handles(M.SAHF)
def c_sahf(cpu, ins):
    regs = cpu.regs

    def sahf():
        ah = (regs[0] >> 8) & (SF | ZF | AF | PF | CF)
        cpu.lf = (F.EAGER, (arith_flags(cpu.lf) & OF) | ah, 0, 0, 0)
    return sahf, NORMAL


@handles(M.NOP, M.PAUSE, M.FNOP if hasattr(M, "FNOP") else M.NOP)
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


# ------------------------------------------------------------ BCD adjust
# SDM Vol. 2 AAA, AAS, DAA, DAS, AAM, AAD.  gcc never emits them; the flags
# Intel leaves undefined follow QEMU (docs/undefined-flags.md): AAA/AAS keep
# OF SF ZF PF, DAA/DAS clear OF, AAM/AAD set the flags as a logic op on AL.
@handles(M.AAA, M.AAS, M.DAA, M.DAS, M.AAM, M.AAD)
def c_bcd(cpu, ins):
    regs = cpu.regs
    op = ins.mnemonic
    if op in (M.AAM, M.AAD):
        base = ins.immediate8

        def aam_aad():
            ax = regs[0]
            if op == M.AAM:
                if base == 0:
                    raise CpuFault(DE)
                al = ax & 0xFF
                ah, al = divmod(al, base)
            else:
                al = ((((ax >> 8) & 0xFF) * base) + (ax & 0xFF)) & 0xFF
                ah = 0
            regs[0] = (ax & 0xFFFF0000) | (ah << 8) | al
            cpu.lf = (F.LOGIC, 0, 0, al, 0x80)
        return aam_aad, NORMAL

    def adjust():
        f = arith_flags(cpu.lf)
        ax = regs[0]
        al, ah = ax & 0xFF, (ax >> 8) & 0xFF
        if op == M.AAA or op == M.AAS:
            if (al & 0xF) > 9 or f & AF:
                if op == M.AAA:
                    ah = (ah + 1 + (al > 0xF9)) & 0xFF
                    al = (al + 6) & 0xF
                else:
                    ah = (ah - 1 - (al < 6)) & 0xFF
                    al = (al - 6) & 0xF
                f |= CF | AF
            else:
                f &= ~(CF | AF)
                al &= 0xF
            regs[0] = (ax & 0xFFFF0000) | (ah << 8) | al
            cpu.lf = (F.EAGER, f, 0, 0, 0)
            return
        old, nf = al, 0
        if op == M.DAA:
            if (al & 0xF) > 9 or f & AF:
                al = (al + 6) & 0xFF
                nf |= AF
            if old > 0x99 or f & CF:
                al = (al + 0x60) & 0xFF
                nf |= CF
        else:
            if (al & 0xF) > 9 or f & AF:
                nf |= AF
                if al < 6 or f & CF:
                    nf |= CF
                al = (al - 6) & 0xFF
            if old > 0x99 or f & CF:
                al = (al - 0x60) & 0xFF
                nf |= CF
        regs[0] = (ax & 0xFFFFFF00) | al
        cpu.lf = (F.EAGER, nf | _szp(al, 0x80), 0, 0, 0)
    return adjust, NORMAL
