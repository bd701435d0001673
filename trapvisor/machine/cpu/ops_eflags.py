"""Flag control: CLC STC CMC, CLD STD, LAHF SAHF, CLI STI, PUSHF POPF.

SDM Vol. 1 §7.3 (Flag Control (EFLAG) Instructions); semantics: SDM Vol. 2
(each instruction's Operation section).  CLI and STI are IOPL-sensitive
(#GP(0) when CPL > IOPL, SDM Vol. 2 CLI/STI); STI holds interrupts off for
one more instruction.  PUSHF and POPF are sensitive but unprivileged (Robin
and Irvine, see ``privilege.py``): POPF silently keeps the flags the current
privilege may not change (``interrupts.set_flags_by_privilege``), and on the
strict CPU both trap outside ring 0.
"""

from __future__ import annotations

import iced_x86 as iced

from . import flags as F
from .constants import AF, CF, GP, IF, OF, PF, RF, SF, VM, ZF
from .cpu import CpuFault
from .flags import arith_flags
from .interrupts import set_flags_by_privilege
from .privilege import strict_trap
from .registry import END, NORMAL, handles

M = iced.Mnemonic


# ---------------------------------- carry and direction flags, LAHF / SAHF
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


# --------------------------------------------------------------- CLI / STI
@handles(M.CLI)
def c_cli(cpu, ins):
    def cli():
        if cpu.cpl > cpu.iopl:
            raise CpuFault(GP, 0)
        cpu.eflags_rest &= ~IF
    return cli, NORMAL


@handles(M.STI)
def c_sti(cpu, ins):
    def sti():
        if cpu.cpl > cpu.iopl:
            raise CpuFault(GP, 0)
        if not cpu.eflags_rest & IF:
            cpu.inhibit_irq = True   # interrupts stay blocked for one more instruction
        cpu.eflags_rest |= IF
    return sti, END


# ------------------------------------------------------------ PUSHF / POPF
@handles(M.PUSHFD, M.PUSHF)
def c_pushf(cpu, ins):
    size = 4 if ins.mnemonic == M.PUSHFD else 2

    def pushf():
        strict_trap(cpu)
        # VM and RF are pushed as 0 (SDM Vol. 2 PUSHF).
        v = cpu.get_eflags() & ~(VM | RF)
        if size == 4:
            cpu.push32(v)
        else:
            cpu.push16(v & 0xFFFF)
    return pushf, NORMAL


@handles(M.POPFD, M.POPF)
def c_popf(cpu, ins):
    size = 4 if ins.mnemonic == M.POPFD else 2

    def popf():
        strict_trap(cpu)
        v = cpu.pop32() if size == 4 else cpu.pop16()
        had_if = cpu.eflags_rest & IF
        set_flags_by_privilege(cpu, v, cpu.cpl, size, keep_rf=False)
        if not had_if and cpu.eflags_rest & IF:
            cpu.inhibit_irq = False
    return popf, END
