"""Segment-register loads and far control transfers: MOV/PUSH/POP Sreg, LDS LES
LFS LGS LSS, far JMP/CALL/RET, INT n/INT3/INTO/INT1, IRET, and the
instructions that only raise an exception, BOUND and UD0/UD1/UD2.

Segment loads: the checks of SDM Vol. 3A §5.5-5.8 are in ``descriptors.py``.
Far JMP and CALL go to a code segment, through a call gate (to an inner
privilege level with the stack switch and parameter copy of SDM Vol. 3A
§5.8.5-5.8.6) or to a task (``tasks.py``); far RET returns to the same or an
outer level (SDM Vol. 2 CALL, JMP, RET).  INT n, INT3, INTO and BOUND are
the software interrupts of SDM Vol. 1 §6.4.4; their delivery, and IRET,
are in ``interrupts.py``.  All of these run at any CPL; the segment loads,
far transfers, INT n and IRET are sensitive, so they trap on the strict CPU
(``privilege.py``).
"""

from __future__ import annotations

import iced_x86 as iced

from . import descriptors as D
from . import flags as F
from . import tasks
from .constants import (
    BP, BR, CS, DS, ES, FS, GP, GS, NP, OF_VEC, SS, SS_VEC, SYS_CALL_GATE16, SYS_CALL_GATE32,
    UD,
)
from .cpu import CpuFault, ExitFault
from .interrupts import iret, software_interrupt
from .operands import (
    K, SEGREG, Unsupported, ea_fn, mem_segment, op_size, reader, reg_reader, reg_writer, writer,
)
from .privilege import strict_trap
from .registry import END, JUMP, NORMAL, handles

M = iced.Mnemonic


# ------------------------------------------------------ segment registers
def compile_mov_sreg(cpu, ins):
    s = SEGREG[ins.op0_register]
    if s == CS:
        raise Unsupported("MOV CS is #UD")
    src = reader(cpu, ins, 1, 2)

    def mov_sreg():
        strict_trap(cpu)
        D.load_data_segment(cpu, s, src() & 0xFFFF)   # MOV Sreg, r32 uses the low 16 bits
        if s == SS:
            cpu.inhibit_irq = True   # the next instruction (normally MOV ESP) runs shadowed
            cpu.ss_shadow = True     # ... and a single-step trap waits for it too
    return mov_sreg, END


def compile_mov_from_sreg(cpu, ins):
    s = SEGREG[ins.op1_register]
    mem = ins.op0_kind == K.MEMORY
    size = 2 if mem else op_size(ins, 0)
    dst = writer(cpu, ins, 0, size)

    def mov_from_sreg():
        strict_trap(cpu)
        dst(cpu.sel[s])   # a 32-bit register gets the selector zero-extended
    return mov_from_sreg, NORMAL


def compile_push_sreg(cpu, ins):
    s = SEGREG[ins.op0_register]
    size = 2 if ins.code in (iced.Code.PUSHW_ES, iced.Code.PUSHW_CS, iced.Code.PUSHW_SS,
                             iced.Code.PUSHW_DS, iced.Code.PUSHW_FS, iced.Code.PUSHW_GS) else 4

    def push_sreg():
        strict_trap(cpu)
        if size == 4:
            # A 32-bit push of a segment register writes only the low 16 bits on
            # recent Intel CPUs and leaves the upper half unchanged (SDM Vol. 2 PUSH);
            # QEMU writes a zero-extended dword. We follow the oracle (QEMU).
            cpu.push32(cpu.sel[s])
        else:
            cpu.push16(cpu.sel[s])
    return push_sreg, NORMAL


def compile_pop_sreg(cpu, ins):
    s = SEGREG[ins.op0_register]
    size = 2 if ins.code in (iced.Code.POPW_ES, iced.Code.POPW_SS, iced.Code.POPW_DS,
                             iced.Code.POPW_FS, iced.Code.POPW_GS) else 4
    regs = cpu.regs

    def pop_sreg():
        strict_trap(cpu)
        old = regs[4]
        v = (cpu.pop32() if size == 4 else cpu.pop16()) & 0xFFFF
        try:
            D.load_data_segment(cpu, s, v)
        except CpuFault:
            regs[4] = old
            raise
        if s == SS:
            cpu.inhibit_irq = True
            cpu.ss_shadow = True
    return pop_sreg, END


@handles(M.LDS, M.LES, M.LFS, M.LGS, M.LSS)
def c_lxs(cpu, ins):
    s = {M.LDS: DS, M.LES: ES, M.LFS: FS, M.LGS: GS, M.LSS: SS}[ins.mnemonic]
    size = op_size(ins, 0)
    ea, seg = ea_fn(cpu, ins), mem_segment(ins)
    dst = reg_writer(cpu, ins.op0_register)

    def lxs():
        strict_trap(cpu)     # a segment load like MOV Sreg: sensitive, so it traps on the strict CPU
        a = ea()
        off = cpu.rd32(seg, a) if size == 4 else cpu.rd16(seg, a)
        sel = cpu.rd16(seg, (a + size) & 0xFFFFFFFF)
        D.load_data_segment(cpu, s, sel)
        dst(off)
    return lxs, END


# ----------------------------------------------------------- far transfers
def _far_target(cpu, ins):
    """A closure returning (selector, offset, operand size) for a far JMP/CALL."""
    if ins.op0_kind in (K.FAR_BRANCH32, K.FAR_BRANCH16):
        sel, off = ins.far_branch_selector, ins.near_branch_target if False else (
            ins.far_branch32 if ins.op0_kind == K.FAR_BRANCH32 else ins.far_branch16)
        size = 4 if ins.op0_kind == K.FAR_BRANCH32 else 2
        return (lambda: (sel, off)), size
    size = 4 if ins.code in (iced.Code.JMP_M1632, iced.Code.CALL_M1632) else 2
    ea, seg = ea_fn(cpu, ins), mem_segment(ins)

    def target():
        a = ea()
        off = cpu.rd32(seg, a) if size == 4 else cpu.rd16(seg, a)
        return cpu.rd16(seg, (a + size) & 0xFFFFFFFF), off
    return target, size


def compile_far_jmp(cpu, ins):
    target, size = _far_target(cpu, ins)
    nxt = ins.next_ip & (0xFFFFFFFF if cpu.cs32 else 0xFFFF)   # saved in the TSS by a task switch

    def far_jmp():
        strict_trap(cpu)
        sel, off = target()
        far_transfer(cpu, sel, off, size, call=False, ret_eip=nxt)
    return far_jmp, JUMP


def compile_far_call(cpu, ins):
    target, size = _far_target(cpu, ins)
    nxt = ins.next_ip & (0xFFFFFFFF if cpu.cs32 else 0xFFFF)

    def far_call():
        strict_trap(cpu)
        sel, off = target()
        far_transfer(cpu, sel, off, size, call=True, ret_eip=nxt)
    return far_call, JUMP


def far_transfer(cpu, sel: int, off: int, size: int, call: bool, ret_eip) -> None:
    """Far JMP/CALL in protected mode: direct to a code segment, or through a call gate
    (SDM Vol. 2 CALL/JMP, Vol. 3A §5.8.4-5.8.6)."""
    if sel & ~3 == 0:
        raise CpuFault(GP, 0)
    d = D.read_descriptor(cpu, sel)
    if D.d_is_code(d):
        D.check_code_for_transfer(cpu, sel, d)
        if off > D.d_limit(d):
            raise CpuFault(GP, 0)
        if call:
            _push_return(cpu, size, cpu.sel[CS], ret_eip)
        D.load_cs(cpu, sel, d, cpu.cpl)
        cpu.eip = off
        return
    t = D.d_type(d)
    if D.d_is_system(d) and t in (SYS_CALL_GATE32, SYS_CALL_GATE16):
        return _through_call_gate(cpu, sel, d, call, ret_eip)
    if tasks.is_task_type(d):
        # A task switch (SDM Vol. 2 JMP/CALL, TASK-GATE and TASK-STATE-SEGMENT):
        # DPL >= max(CPL, RPL) of the TSS or gate, the TSS not busy.
        dpl = D.d_dpl(d)
        if dpl < cpu.cpl or dpl < (sel & 3):
            raise CpuFault(GP, sel & 0xFFFC)
        if t == 5:
            tsel, td = tasks.via_gate(cpu, sel, d)
        elif t & 2:
            raise CpuFault(GP, sel & 0xFFFC)
        else:
            tsel, td = sel, d
        if cpu.intercepts.task_switch_exiting:
            from .exits import TaskSwitchExit
            raise ExitFault(TaskSwitchExit(tsel, "call" if call else "jmp"))
        tasks.switch(cpu, tsel, td, "call" if call else "jmp", ret_eip)
        return
    raise CpuFault(GP, sel & 0xFFFC)


def _push_return(cpu, size, cs, eip):
    regs = cpu.regs
    old = regs[4]
    try:
        if size == 4:
            cpu.push32(cs)
            cpu.push32(eip)
        else:
            cpu.push16(cs)
            cpu.push16(eip & 0xFFFF)
    except CpuFault:
        regs[4] = old
        raise


def _through_call_gate(cpu, gsel, g, call, ret_eip):
    gdpl = D.d_dpl(g)
    if gdpl < cpu.cpl or gdpl < (gsel & 3):
        raise CpuFault(GP, gsel & 0xFFFC)
    if not D.d_present(g):
        raise CpuFault(NP, gsel & 0xFFFC)
    gate32 = D.d_type(g) == SYS_CALL_GATE32
    sel = (g >> 16) & 0xFFFF
    off = (g & 0xFFFF) | ((g >> 32) & 0xFFFF0000)
    if not gate32:
        off &= 0xFFFF
    nparams = (g >> 32) & 0x1F
    if sel & ~3 == 0:
        raise CpuFault(GP, 0)
    d = D.read_descriptor(cpu, sel)
    if not D.d_is_code(d) or D.d_dpl(d) > cpu.cpl:
        raise CpuFault(GP, sel & 0xFFFC)
    if not call and not D.d_type(d) & 4 and D.d_dpl(d) != cpu.cpl:
        raise CpuFault(GP, sel & 0xFFFC)
    if not D.d_present(d):
        raise CpuFault(NP, sel & 0xFFFC)
    if off > D.d_limit(d):
        raise CpuFault(GP, 0)
    size = 4 if gate32 else 2
    conforming = D.d_type(d) & 4
    if call and not conforming and D.d_dpl(d) < cpu.cpl:
        # More privileged: switch to the inner stack, copy parameters.
        new_cpl = D.d_dpl(d)
        ss, esp = D.tss_stack(cpu, new_cpl)
        ssd = D.check_new_stack(cpu, ss, new_cpl)
        old_ss, old_esp = cpu.sel[SS], cpu.regs[4]
        mask = 0xFFFFFFFF if cpu.ss32 else 0xFFFF
        params = [cpu.rd(SS, (old_esp + i * size) & mask, size) for i in range(nparams)]
        ss_base = D.d_base(ssd)
        ss32 = bool(D.d_attr(ssd) & 0x4000)
        nmask = 0xFFFFFFFF if ss32 else 0xFFFF
        words = [old_ss, old_esp] + list(reversed(params)) + [cpu.sel[CS], ret_eip]
        p = newsp = D.check_stack_room(ssd, ss, esp, size * len(words))
        limit = D.d_limit(ssd)
        for w in reversed(words):
            cpu.sys_write(ss_base + p, size, w & ((1 << (8 * size)) - 1))
            p = (p + size) & nmask
        D.set_accessed(cpu, ss, ssd)
        cpu.set_segment_cache(SS, (ss & ~3) | new_cpl, ss_base, limit, D.d_attr(ssd) | 1)
        cpu.regs[4] = newsp if ss32 else (esp & 0xFFFF0000) | newsp
        D.load_cs(cpu, sel, d, new_cpl)
        cpu.eip = off
        return
    if call:
        _push_return(cpu, size, cpu.sel[CS], ret_eip)
    D.load_cs(cpu, sel, d, cpu.cpl)
    cpu.eip = off


@handles(M.RETF)
def c_retf(cpu, ins):
    size = 2 if ins.code in (iced.Code.RETFW, iced.Code.RETFW_IMM16) else 4
    extra = ins.immediate16 if ins.op_count else 0

    def retf():
        strict_trap(cpu)
        far_return(cpu, size, extra)
    return retf, JUMP


def far_return(cpu, size: int, extra: int) -> None:
    """RET far, to the same or an outer privilege level (SDM Vol. 2 RET)."""
    regs = cpu.regs
    mask = 0xFFFFFFFF if cpu.ss32 else 0xFFFF
    sp = regs[4] & mask
    rd = cpu.rd32 if size == 4 else cpu.rd16
    new_eip = rd(SS, sp)
    new_cs = rd(SS, (sp + size) & mask) & 0xFFFF
    d = D.check_return_cs(cpu, new_cs)
    rpl = new_cs & 3
    if new_eip > D.d_limit(d):
        raise CpuFault(GP, 0)
    if rpl > cpu.cpl:
        base = (sp + 2 * size + extra) & mask
        new_esp = rd(SS, base)
        new_ss = rd(SS, (base + size) & mask) & 0xFFFF
        ssd = D.check_return_ss(cpu, new_ss, rpl, SS_VEC)
        D.load_cs(cpu, new_cs, d, rpl)
        D.set_accessed(cpu, new_ss, ssd)
        D.load_cache(cpu, SS, new_ss, ssd)
        nm = 0xFFFFFFFF if cpu.ss32 else 0xFFFF
        esp = (new_esp + extra) & nm
        regs[4] = esp if cpu.ss32 else (regs[4] & 0xFFFF0000) | esp
        D.invalidate_outer_segments(cpu)
    else:
        D.load_cs(cpu, new_cs, d, cpu.cpl)
        esp = (sp + 2 * size + extra) & mask
        regs[4] = esp if cpu.ss32 else (regs[4] & 0xFFFF0000) | esp
    cpu.eip = new_eip


# ---------------------------------------------------- INT n, INT3, INTO, IRET
@handles(M.INT, M.INT3, M.INTO, M.INT1)
def c_int(cpu, ins):
    op = ins.mnemonic
    nxt = ins.next_ip & (0xFFFFFFFF if cpu.cs32 else 0xFFFF)
    ip = ins.ip
    if op == M.INT:
        vector = ins.immediate8

        def int_n():
            strict_trap(cpu)
            software_interrupt(cpu, vector, nxt, ip)
        return int_n, JUMP
    if op == M.INT3:
        def int3():
            software_interrupt(cpu, BP, nxt, ip)
        return int3, JUMP
    if op == M.INT1:
        def int1():
            # ICEBP raises #DB as a trap: like every exception, it exits to a monitor
            # whose exception bitmap has bit 1 (deliver_event checks), else goes
            # through the IDT.
            from .interrupts import deliver_event
            cpu.eip = nxt
            deliver_event(cpu, 1, None, kind="exception")
        return int1, JUMP

    def into():
        if F.arith_flags(cpu.lf) & 0x800:
            software_interrupt(cpu, OF_VEC, nxt, ip)
        else:
            cpu.eip = nxt
    return into, JUMP


@handles(M.IRET, M.IRETD)
def c_iret(cpu, ins):
    size = 4 if ins.mnemonic == M.IRETD else 2

    nxt = ins.next_ip & (0xFFFFFFFF if cpu.cs32 else 0xFFFF)

    def iret_():
        # IRET changes CPL and IF without trapping: control sensitive, so the
        # strict (virtualizable) CPU traps it outside ring 0.
        strict_trap(cpu)
        iret(cpu, size, nxt)
    return iret_, JUMP


@handles(M.BOUND)
def c_bound(cpu, ins):
    size = op_size(ins, 0)
    idx = reg_reader(cpu, ins.op0_register)
    ea, seg = ea_fn(cpu, ins), mem_segment(ins)
    sign = 1 << (size * 8 - 1)

    def bound():
        a = ea()
        lo = cpu.rd(seg, a, size)
        hi = cpu.rd(seg, (a + size) & 0xFFFFFFFF, size)
        v = idx()
        sx = lambda x: (x ^ sign) - sign  # noqa: E731
        if sx(v) < sx(lo) or sx(v) > sx(hi):
            raise CpuFault(BR)
    return bound, NORMAL


@handles(M.UD2, M.UD0, M.UD1)
def c_ud2(cpu, ins):
    def ud2():
        raise CpuFault(UD)
    return ud2, JUMP
