"""Shifts and rotates: SHL/SAL, SHR, SAR, ROL, ROR, RCL, RCR, and the double
shifts SHLD and SHRD.

SDM Vol. 1 §7.3.6; semantics and flags: SDM Vol. 2 (SAL/SAR/SHL/SHR,
RCL/RCR/ROL/ROR, SHLD, SHRD).  Their flags are computed eagerly
(``(EAGER, flags, 0, 0, 0)``, see ``flags.py``); the rules for the flags
Intel leaves undefined are with the kernels below.
"""

from __future__ import annotations

import iced_x86 as iced

from . import flags as F
from .constants import CF, OF
from .flags import arith_flags, szp
from .operands import (
    GPR, K, MASK, SIGN, ea_fn, imm_value, mem_segment, op_size, reg_reader, reg_writer, rmw,
)
from .registry import NORMAL, handles

M = iced.Mnemonic


# ------------------------------------------------------ shifts and rotates
# SDM Vol. 2 SAL/SAR/SHL/SHR, RCL/RCR/ROL/ROR.  The count is masked to 5 bits;
# a masked count of 0 changes nothing, not even the flags.  Flags Intel leaves
# undefined (AF; OF for counts other than 1) follow QEMU, see
# docs/undefined-flags.md.  Each kernel takes (value, count 1..31, lazy
# flags) and returns (result, eager flags); the closure stores the result
# before it commits the flags, so a faulting store leaves the flags alone.
def _shift_kernel(op, bits):
    mask = (1 << bits) - 1
    sign = 1 << (bits - 1)
    top = bits - 1
    if op == M.SHL or op == M.SAL:
        def shl(a, c, lf):
            r = (a << c) & mask
            cf = (a >> (bits - c)) & 1 if c <= bits else 0
            f = szp(r, sign) | cf      # AF = 0
            if (r >> top) ^ cf:         # OF = MSB(result) ^ CF, for every count
                f |= OF
            return r, f
        return shl
    if op == M.SHR:
        def shr(a, c, lf):
            r = a >> c
            f = szp(r, sign) | ((a >> (c - 1)) & 1)
            if c == 1 and a & sign:     # OF = MSB(original) for 1, 0 for larger counts
                f |= OF
            return r, f
        return shr
    if op == M.SAR:
        def sar(a, c, lf):
            sa = (a ^ sign) - sign
            r = (sa >> c) & mask
            return r, szp(r, sign) | ((sa >> (c - 1)) & 1)   # OF = 0
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
    rd, wr, mem = rmw(cpu, ins, size)
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
        return r, szp(r, sign) | (CF if cf else 0) | (OF if of else 0)

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
