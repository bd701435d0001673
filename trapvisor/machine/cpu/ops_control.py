"""Near control transfers: JMP, Jcc, CALL, RET, LOOP/LOOPcc, JCXZ/JECXZ.

SDM Vol. 2 (each instruction's Operation section).  A near transfer checks
the target against the CS limit (#GP(0), SDM Vol. 3A §5.3) before it changes
anything.  Far transfers, INT and IRET are privilege-sensitive and live in
``ops_far.py`` / ``interrupts.py``.
"""

from __future__ import annotations

import iced_x86 as iced

from .constants import CS, GP
from .cpu import CpuFault
from .flags import CONDITIONS
from .operands import K, reader
from .registry import JUMP, handles

M = iced.Mnemonic


def _opsize16(ins) -> bool:
    return ins.op0_kind == K.NEAR_BRANCH16 or ins.code in (
        iced.Code.CALL_RM16, iced.Code.JMP_RM16, iced.Code.RETNW, iced.Code.RETNW_IMM16,
        iced.Code.CALL_REL16, iced.Code.JMP_REL16)


@handles(M.JMP)
def c_jmp(cpu, ins):
    if ins.is_jmp_far or ins.is_jmp_far_indirect:
        from .ops_far import compile_far_jmp
        return compile_far_jmp(cpu, ins)
    if ins.op0_kind in (K.NEAR_BRANCH32, K.NEAR_BRANCH16):
        target = ins.near_branch_target & (0xFFFF if _opsize16(ins) else 0xFFFFFFFF)

        def jmp():
            if target > cpu.limit[CS]:
                raise CpuFault(GP, 0)
            cpu.eip = target
        return jmp, JUMP
    size = 2 if _opsize16(ins) else 4
    src = reader(cpu, ins, 0, size)

    def jmp_ind():
        t = src()
        if t > cpu.limit[CS]:
            raise CpuFault(GP, 0)
        cpu.eip = t
    return jmp_ind, JUMP


@handles(*[getattr(M, "J" + c) for c in ("O", "NO", "B", "AE", "E", "NE", "BE", "A",
                                         "S", "NS", "P", "NP", "L", "GE", "LE", "G")])
def c_jcc(cpu, ins):
    cond = CONDITIONS[ins.condition_code - 1]
    target = ins.near_branch_target & (0xFFFF if _opsize16(ins) or not cpu.cs32 else 0xFFFFFFFF)
    nxt = ins.next_ip & (0xFFFFFFFF if cpu.cs32 else 0xFFFF)

    def jcc():
        if cond(cpu.lf):
            if target > cpu.limit[CS]:
                raise CpuFault(GP, 0)
            cpu.eip = target
        else:
            cpu.eip = nxt
    return jcc, JUMP


@handles(M.CALL)
def c_call(cpu, ins):
    if ins.is_call_far or ins.is_call_far_indirect:
        from .ops_far import compile_far_call
        return compile_far_call(cpu, ins)
    size = 2 if _opsize16(ins) else 4
    nxt = ins.next_ip & (0xFFFFFFFF if cpu.cs32 else 0xFFFF)
    push = cpu.push32 if size == 4 else cpu.push16
    if ins.op0_kind in (K.NEAR_BRANCH32, K.NEAR_BRANCH16):
        target = ins.near_branch_target & (0xFFFF if size == 2 else 0xFFFFFFFF)

        def call():
            if target > cpu.limit[CS]:
                raise CpuFault(GP, 0)
            push(nxt)
            cpu.eip = target
        return call, JUMP
    src = reader(cpu, ins, 0, size)

    def call_ind():
        t = src()
        if t > cpu.limit[CS]:
            raise CpuFault(GP, 0)
        push(nxt)
        cpu.eip = t
    return call_ind, JUMP


@handles(M.RET)
def c_ret(cpu, ins):
    size = 2 if ins.code in (iced.Code.RETNW, iced.Code.RETNW_IMM16) else 4
    extra = ins.immediate16 if ins.op_count else 0
    regs = cpu.regs
    if size == 4 and extra == 0:
        def ret():
            if cpu.ss32:
                esp = regs[4]
                t = cpu.rd32(2, esp)
                if t > cpu.limit[CS]:
                    raise CpuFault(GP, 0)
                regs[4] = (esp + 4) & 0xFFFFFFFF
                cpu.eip = t
            else:
                ret_slow()
        # fallthrough to the general form for a 16-bit stack
    pop_size = size

    def ret_slow():
        old = regs[4]
        t = cpu.pop32() if pop_size == 4 else cpu.pop16()
        try:
            if t > cpu.limit[CS]:
                raise CpuFault(GP, 0)
        except CpuFault:
            regs[4] = old
            raise
        if extra:
            if cpu.ss32:
                regs[4] = (regs[4] + extra) & 0xFFFFFFFF
            else:
                regs[4] = (regs[4] & 0xFFFF0000) | ((regs[4] + extra) & 0xFFFF)
        cpu.eip = t
    if size == 4 and extra == 0:
        return ret, JUMP
    return ret_slow, JUMP


@handles(M.LOOP, M.LOOPE, M.LOOPNE, M.JECXZ, M.JCXZ)
def c_loop(cpu, ins):
    regs = cpu.regs
    op = ins.mnemonic
    # The address size selects CX or ECX (iced reports the counter as op kind of the branch).
    addr16 = ins.code in (iced.Code.LOOP_REL8_16_CX, iced.Code.LOOP_REL8_32_CX,
                          iced.Code.LOOPE_REL8_16_CX, iced.Code.LOOPE_REL8_32_CX,
                          iced.Code.LOOPNE_REL8_16_CX, iced.Code.LOOPNE_REL8_32_CX,
                          iced.Code.JCXZ_REL8_16, iced.Code.JCXZ_REL8_32)
    cmask = 0xFFFF if addr16 else 0xFFFFFFFF
    target = ins.near_branch_target & (0xFFFF if ins.op0_kind == K.NEAR_BRANCH16 else 0xFFFFFFFF)
    nxt = ins.next_ip & (0xFFFFFFFF if cpu.cs32 else 0xFFFF)
    zf = CONDITIONS[4]

    def loop():
        if op == M.JECXZ or op == M.JCXZ:
            taken = (regs[1] & cmask) == 0
        else:
            c = (regs[1] - 1) & cmask
            taken = c != 0
            if op == M.LOOPE:
                taken = taken and zf(cpu.lf)
            elif op == M.LOOPNE:
                taken = taken and not zf(cpu.lf)
            if taken and target > cpu.limit[CS]:
                raise CpuFault(GP, 0)
            regs[1] = (regs[1] & ~cmask & 0xFFFFFFFF) | c
        if taken:
            if target > cpu.limit[CS]:
                raise CpuFault(GP, 0)
            cpu.eip = target
        else:
            cpu.eip = nxt
    return loop, JUMP
