"""The x87 FPU's control instructions: WAIT/FWAIT, FNINIT, FNCLEX, FNSTSW, FNSTCW, FLDCW,
and the environment and state images FNSTENV, FLDENV, FNSAVE, FRSTOR (SDM Vol. 2A/2B; the
image layouts: Vol. 1 Figures 8-9 and 8-10, 32-bit protected mode, or the 16-bit layout
with a 16-bit operand size).  The FPU itself and the rules around every instruction are
``ops_x87.py``'s.
"""

from __future__ import annotations

import iced_x86 as iced

from . import fpu_x87 as X
from .constants import CR0_MP, CR0_TS, NM, UD
from .cpu import CpuFault
from .operands import ea_fn, mem_segment, op_size
from .ops_x87 import X87, fpu, mem_ops, report_pending, x87
from .registry import END, NORMAL, handles

M = iced.Mnemonic
K = iced.OpKind


# -- control ----------------------------------------------------------------------------------
@handles(M.WAIT)
def c_wait(cpu, ins):
    def wait():
        if cpu.cr0 & CR0_TS and cpu.cr0 & CR0_MP:
            raise CpuFault(NM)
        report_pending(cpu, fpu(cpu))
    return wait, NORMAL


@handles(M.FNINIT, M.FNCLEX)
def c_fninit(cpu, ins):
    init = ins.mnemonic == M.FNINIT

    @x87(waiting=False, control=True)
    def build(cpu, ins):
        def fninit(f):
            if init:
                f.init()
            else:
                f.sw &= ~(X.EXCEPTIONS | X.SF | X.ES | X.BUSY)
        return fninit
    return build(cpu, ins)


@handles(M.FNSTSW)
def c_fnstsw(cpu, ins):
    to_ax = ins.op0_kind == K.REGISTER
    if not to_ax:
        ea, seg, _, write = mem_ops(cpu, ins)
    regs = cpu.regs

    @x87(waiting=False, control=True)
    def build(cpu, ins):
        def fnstsw(f):
            sw = f.status_word()
            if to_ax:
                regs[0] = (regs[0] & 0xFFFF0000) | sw
            else:
                write(2, sw)
        return fnstsw
    return build(cpu, ins)


@handles(M.FNSTCW, M.FLDCW)
def c_fcw(cpu, ins):
    store = ins.mnemonic == M.FNSTCW
    ea, seg, read, write = mem_ops(cpu, ins)

    @x87(waiting=not store, control=True)
    def build(cpu, ins):
        def fcw(f):
            if store:
                write(2, f.cw)
                return
            f.cw = read(2) | 0x40                  # bit 6 reads as 1 (SDM Vol. 1 Figure 8-6)
            # Unmasking an already flagged exception makes it pending (SDM Vol. 1 8.7).
            if f.sw & ~f.cw & X.EXCEPTIONS:
                f.sw |= X.ES | X.BUSY
            else:
                f.sw &= ~(X.ES | X.BUSY)
        return fcw
    return build(cpu, ins)


def _env_fields(f: X87) -> list[int]:
    return [f.cw, f.status_word(), f.tag_word(), f.fip, f.fcs | (f.fop << 16), f.fdp, f.fds]


def _store_env(f: X87, write_at, wide: bool) -> int:
    """FNSTENV's image: seven 32-bit fields (28 bytes), or seven 16-bit ones (14 bytes)."""
    step = 4 if wide else 2
    for n, v in enumerate(_env_fields(f)):
        if wide and n in (0, 1, 2, 6):
            v &= 0xFFFF
            v |= 0xFFFF0000                        # reserved halves read as ones on P6 cores
        write_at(n * step, step, v & ((1 << (8 * step)) - 1))
    return 7 * step


def _load_env(f: X87, read_at, wide: bool) -> int:
    step = 4 if wide else 2
    vals = [read_at(n * step, step) for n in range(7)]
    f.cw = (vals[0] & 0xFFFF) | 0x40
    f.set_status_word(vals[1] & 0xFFFF)
    f.set_tag_word(vals[2] & 0xFFFF)
    f.fip, f.fcs = vals[3], vals[4] & 0xFFFF
    f.fop = (vals[4] >> 16) & 0x7FF if wide else 0
    f.fdp, f.fds = vals[5], vals[6] & 0xFFFF
    if f.sw & ~f.cw & X.EXCEPTIONS:
        f.sw |= X.ES | X.BUSY
    else:
        f.sw &= ~(X.ES | X.BUSY)
    return 7 * step


@handles(M.FNSTENV, M.FLDENV, M.FNSAVE, M.FRSTOR)
def c_fenv(cpu, ins):
    m = ins.mnemonic
    size = op_size(ins, 0)
    wide = size in (28, 108)
    ea, seg = ea_fn(cpu, ins), mem_segment(ins)

    def at(base):
        def read_at(off, n):
            a = (base + off) & 0xFFFFFFFF
            return cpu.rd32(seg, a) if n == 4 else (cpu.rd16(seg, a) if n == 2 else 0)

        def write_at(off, n, v):
            a = (base + off) & 0xFFFFFFFF
            if n == 4:
                cpu.wr32(seg, a, v)
            else:
                cpu.wr16(seg, a, v)
        return read_at, write_at

    @x87(kind=END if m in (M.FLDENV, M.FRSTOR) else NORMAL,
         waiting=m in (M.FLDENV, M.FRSTOR), control=True)
    def build(cpu, ins):
        def fenv(f):
            base = ea()
            read_at, write_at = at(base)
            if m in (M.FNSTENV, M.FNSAVE):
                n = _store_env(f, write_at, wide)
                if m == M.FNSAVE:
                    for i in range(8):
                        v = f.get(i)
                        write_at(n + 10 * i, 4, v & 0xFFFFFFFF)
                        write_at(n + 10 * i + 4, 4, (v >> 32) & 0xFFFFFFFF)
                        write_at(n + 10 * i + 8, 2, v >> 64)
                    f.init()
                else:
                    f.cw |= X.EXCEPTIONS           # FNSTENV masks all exceptions
            else:
                n = 7 * (4 if wide else 2)
                regs = []
                if m == M.FRSTOR:          # all reads before any change (a fault leaves the FPU as it was)
                    for i in range(8):
                        lo = read_at(n + 10 * i, 4) | (read_at(n + 10 * i + 4, 4) << 32)
                        regs.append(lo | (read_at(n + 10 * i + 8, 2) << 64))
                    top = (read_at(4 if wide else 2, 2) >> X.TOP_SHIFT) & 7
                    for i, v in enumerate(regs):    # ST(i) in stack order from the new TOP
                        f.regs[(top + i) & 7] = v
                _load_env(f, read_at, wide)     # the tags follow the registers' contents
        return fenv
    return build(cpu, ins)


# The 8087/80287 controls FENI, FDISI and FSETPM are no-ops on the 80387 and later (SDM Vol. 1
# 8.3.11 and Appendix; they still take #NM, and the waiting forms report a pending exception).
@handles(M.FNENI, M.FNDISI, M.FNSETPM, M.FENI, M.FDISI, M.FSETPM)
def c_fnsetpm(cpu, ins):
    waiting = ins.mnemonic in (M.FENI, M.FDISI, M.FSETPM)

    @x87(waiting=waiting, control=True)
    def build(cpu, ins):
        def noop(f):
            pass
        return noop
    return build(cpu, ins)


# Opcodes of other vendors' or the 287XL's x87 units (FRSTPM, FSTDW, FSTSG, FRINT2, FRICHOP,
# FRINEAR, FSTPNCE, FTSTP): not instructions of this P6 core, #UD (SDM Vol. 2, opcode map).
@handles(M.FRSTPM, M.FNSTDW, M.FNSTSG, M.FSTDW, M.FSTSG, M.FRINT2, M.FRICHOP, M.FRINEAR, M.FSTPNCE,
         M.FTSTP)
def c_foreign_x87(cpu, ins):
    def undefined():
        raise CpuFault(UD)
    return undefined, NORMAL
