"""The stack: PUSH, POP, PUSHA/PUSHAD, POPA/POPAD, ENTER, LEAVE.

SDM Vol. 1 §6.2 (the stack), §7.3.1 (stack manipulation) and §6.5 (ENTER
and LEAVE: procedure calls for block-structured languages); each
instruction's Operation section in SDM Vol. 2.  The stack-address size
(SS.B) chooses SP or ESP, the operand size what is pushed.  ESP changes only
after every access of the instruction has been made (or is put back when the
last one faults), so a faulting instruction restarts cleanly.  PUSH and POP
of a segment register are in ``ops_far.py``, PUSHF and POPF in
``ops_eflags.py``.
"""

from __future__ import annotations

import iced_x86 as iced

from .constants import SS
from .cpu import CpuFault
from .operands import GPR, K, MASK, ea_fn, imm_value, mem_segment, op_size, reader, reg_writer
from .registry import NORMAL, handles

M = iced.Mnemonic


# ----------------------------------------------------------------- PUSH/POP
@handles(M.PUSH)
def c_push(cpu, ins):
    kind = ins.op0_kind
    if kind == K.REGISTER and ins.op0_register not in GPR:
        from .ops_far import compile_push_sreg
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
        from .ops_far import compile_pop_sreg
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
