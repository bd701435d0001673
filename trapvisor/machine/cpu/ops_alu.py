"""The arithmetic and logic instructions: ADD ADC SUB SBB CMP, AND OR XOR TEST,
INC DEC NEG NOT, MUL IMUL DIV IDIV, and the BCD adjustments AAA AAS DAA DAS
AAM AAD.

SDM Vol. 1 §7.3.2 (binary arithmetic), §7.3.3 (decimal arithmetic) and
§7.3.5 (logical); semantics and flags: SDM Vol. 2 (each instruction's
Operation and Flags Affected sections).  The two-operand arithmetic and
logic instructions share one compile function (their operand forms are the
same; only the kernel differs), and so do the one-operand ones.  Flags are
lazy (``flags.py``) except where they are awkward to describe that way (MUL,
IMUL, the BCD adjustments); flags Intel leaves undefined follow QEMU
(docs/undefined-flags.md).  Stores happen before register and flag updates
so a faulting instruction has no effect.
"""

from __future__ import annotations

import iced_x86 as iced

from . import flags as F
from .constants import AF, CF, DE
from .cpu import CpuFault
from .flags import arith_flags, get_cf, mul_flags, szp
from .operands import (
    GPR, K, MASK, SIGN, Unsupported, ea_fn, imm_value, mem_segment, op_size, reader, reg_reader,
    reg_writer, rmw,
)
from .registry import NORMAL, handles

M = iced.Mnemonic


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
    rd, wr, mem = rmw(cpu, ins, size)
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
            cpu.lf = (F.EAGER, mul_flags(r > 0xFF, r & 0xFF, sign), 0, 0, 0)
        elif size == 2:
            r = (regs[0] & 0xFFFF) * b
            regs[0] = (regs[0] & 0xFFFF0000) | (r & 0xFFFF)
            regs[2] = (regs[2] & 0xFFFF0000) | (r >> 16)
            cpu.lf = (F.EAGER, mul_flags(r > 0xFFFF, r & 0xFFFF, sign), 0, 0, 0)
        else:
            r = regs[0] * b
            regs[0] = r & 0xFFFFFFFF
            regs[2] = r >> 32
            cpu.lf = (F.EAGER, mul_flags(r > 0xFFFFFFFF, r & 0xFFFFFFFF, sign), 0, 0, 0)
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
            cpu.lf = (F.EAGER, mul_flags(r != ((lo ^ sign) - sign), lo, sign), 0, 0, 0)
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
        cpu.lf = (F.EAGER, mul_flags(r != ((lo ^ sign) - sign), lo, sign), 0, 0, 0)
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
        cpu.lf = (F.EAGER, nf | szp(al, 0x80), 0, 0, 0)
    return adjust, NORMAL
