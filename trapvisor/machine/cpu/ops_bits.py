"""Bit and byte instructions: BT, BTS, BTR, BTC, BSF, BSR, SETcc.

SDM Vol. 1 §7.3.7 (bit test and modify, bit scan, byte set on condition);
semantics and flags: SDM Vol. 2 (BT, BTS, BTR, BTC, BSF, BSR, SETcc).  TEST,
the fourth instruction of §7.3.7, shares its compile function with AND
(``ops_alu.py``).  Flags Intel leaves undefined follow QEMU
(docs/undefined-flags.md).
"""

from __future__ import annotations

import iced_x86 as iced

from . import flags as F
from .constants import CF
from .flags import CONDITIONS, arith_flags
from .operands import (
    K, MASK, SIGN, ea_fn, mem_segment, op_size, reader, reg_reader, reg_writer, writer,
)
from .registry import NORMAL, handles

M = iced.Mnemonic


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


# TZCNT and LZCNT are F3-prefixed BSF and BSR; this CPU has neither BMI1 nor LZCNT in CPUID,
# and "on processors that do not support TZCNT [LZCNT], the instruction byte encoding is
# executed as BSF [BSR]" (SDM Vol. 2B, TZCNT and LZCNT).  Linux's __ffs() uses "rep; bsf".
@handles(M.BSF, M.BSR, M.TZCNT, M.LZCNT)
def c_bsf(cpu, ins):
    size = op_size(ins, 0)
    src = reader(cpu, ins, 1, size)
    dst = reg_writer(cpu, ins.op0_register)
    forward = ins.mnemonic in (M.BSF, M.TZCNT)
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


# ------------------------------------------------------------------- SETcc
@handles(*[getattr(M, "SET" + c) for c in ("O", "NO", "B", "AE", "E", "NE", "BE", "A",
                                           "S", "NS", "P", "NP", "L", "GE", "LE", "G")])
def c_setcc(cpu, ins):
    cond = CONDITIONS[ins.condition_code - 1]
    dst = writer(cpu, ins, 0, 1)

    def setcc():
        dst(1 if cond(cpu.lf) else 0)
    return setcc, NORMAL
