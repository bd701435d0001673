"""Exception and interrupt delivery through the IDT, double and triple faults, IRET.

Rules: SDM Vol. 3A §6.10-6.14 (IDT, gate descriptors, the stack switch on a
privilege change, error codes), §6.15 (double fault, Table 6-5), the
Operation sections of INT n/INTO/INT3 and IRET in SDM Vol. 2.

Kinds of event:
* ``exception`` - raised by an instruction (fault or trap); no gate-DPL check;
* ``external``  - an interrupt from the PIC/APIC; no gate-DPL check; EXT=1 in error codes;
* ``software``  - INT n, INT3, INTO: the gate's DPL must be >= CPL, else #GP(vector*8+2).
"""

from __future__ import annotations

from .constants import (
    CONTRIBUTORY, CR0_PE, CS, DF_VEC, ERROR_CODE_VECTORS, EXCEPTION_NAMES, GP, IF, NP,
    NT, PF_VEC, RF, SS, SYS_INT_GATE16, SYS_INT_GATE32, SYS_TASK_GATE, SYS_TRAP_GATE16,
    SYS_TRAP_GATE32, TF, VM, ARITH_FLAGS, IOPL, AC, ID, VIF, VIP, DF, EFLAGS_RESERVED_1,
)
from .cpu import CpuFault, ExitFault, MachineStop
from .exits import ExceptionExit
from . import descriptors as D
from . import flags as F


# Fault-class exceptions (SDM Vol. 3A §6.5, Table 6-1): the saved EFLAGS has
# RF set, so that IRET to the faulting instruction does not retrigger an
# instruction breakpoint (SDM Vol. 3A §17.3.1.1).  (#DB is a fault only for
# instruction breakpoints, which this CPU does not implement.)
FAULT_VECTORS = frozenset({0, 5, 6, 7, 10, 11, 12, 13, 14, 16, 17, 19})


def raise_exception(cpu, vector: int, error_code) -> None:
    """Deliver an exception raised by an instruction, with double/triple-fault rules."""
    cpu.exception_counts[vector] = cpu.exception_counts.get(vector, 0) + 1
    if cpu.intercepts.exception_bitmap >> vector & 1:
        # The exception bitmap (SDM Vol. 3C §25.2): the monitor takes it, here where it
        # arises, before any double-fault rule (it sees the vector that faulted).
        cpu.stop = ExceptionExit(vector, error_code if vector in ERROR_CODE_VECTORS else None)
        return
    prev = cpu.delivering
    if prev is not None:
        # A fault while delivering another event (SDM Vol. 3A §6.15, Table 6-5).
        if prev == DF_VEC:
            return triple_fault(cpu, f"{_name(vector, error_code)} while delivering #DF")
        if (prev in CONTRIBUTORY and vector in CONTRIBUTORY) or \
                (prev == PF_VEC and (vector in CONTRIBUTORY or vector == PF_VEC)):
            vector, error_code = DF_VEC, 0
    cpu.delivering = vector
    try:
        deliver_event(cpu, vector, error_code if vector in ERROR_CODE_VECTORS else None,
                      kind="exception", push_rf=vector in FAULT_VECTORS)
    except ExitFault as f:
        cpu.stop = f.exit        # a VM exit during delivery (an EPT violation on the IDT, say)
    except CpuFault as f:
        raise_exception(cpu, f.vector, f.error_code)
    finally:
        cpu.delivering = prev


def triple_fault(cpu, why: str) -> None:
    cpu.stop = MachineStop("triple fault", why)


def _name(vector, err):
    n = EXCEPTION_NAMES.get(vector, f"vector {vector}")
    return n if err is None else f"{n}({err:#x})"


def deliver_event(cpu, vector: int, error_code, kind: str, push_rf: bool = False,
                  injected: bool = False) -> None:
    """Transfer control through IDT entry ``vector`` (protected mode).

    ``cpu.eip`` must already be the return address: the faulting instruction
    for a fault, the next instruction for a trap, INT n or an interrupt.
    ``injected``: a VMX event injection (SDM Vol. 3C §26.6), which the intercept
    controls do not intercept (a fault while delivering it still may).
    """
    if not injected and cpu.intercepts.exits_on_event(vector, kind):
        if kind == "software":
            # INT n exits instead of executing (SDM Vol. 3C §25.1): it unwinds like a
            # fault, so it is not retired and EIP is left at it.
            raise ExitFault(ExceptionExit(vector, error_code, kind, cpu.event_ip))
        cpu.stop = ExceptionExit(vector, error_code, kind, None)
        return
    cpu.deliveries += 1
    if not cpu.cr0 & CR0_PE:
        raise MachineStop("real mode", "interrupt delivery in real mode is not supported")
    ext = 1 if kind in ("external", "exception") and kind != "software" else 0
    if kind == "exception" and vector in (1, 3, 4) and error_code is None:
        ext = 1
    idt_base, idt_limit = cpu.idtr
    idt_err = vector * 8 + 2 + ext
    if vector * 8 + 7 > idt_limit:
        raise CpuFault(GP, idt_err)
    gate = cpu.sys_read(idt_base + vector * 8, 8)
    gtype = (gate >> 40) & 0x1F            # S bit + type
    if gtype not in (SYS_INT_GATE32, SYS_TRAP_GATE32, SYS_INT_GATE16, SYS_TRAP_GATE16, SYS_TASK_GATE):
        raise CpuFault(GP, idt_err)
    if kind == "software" and ((gate >> 45) & 3) < cpu.cpl:
        raise CpuFault(GP, vector * 8 + 2)
    if not (gate >> 47) & 1:
        raise CpuFault(NP, idt_err)
    if gtype == SYS_TASK_GATE:
        # A task switch (tasks.py); the return address is the old task's EIP.
        from . import tasks
        tsel, td = tasks.via_gate(cpu, vector * 8, gate, ext)
        if cpu.intercepts.task_switch_exiting:
            # VMX non-root: the task switch exits (SDM Vol. 3C §25.1.2); the event is
            # not delivered, and the monitor is told which one it was.
            from .exits import TaskSwitchExit
            cpu.deliveries -= 1
            raise ExitFault(TaskSwitchExit(tsel, "int", vector, error_code, kind))
        tasks.switch(cpu, tsel, td, "int", cpu.eip, error_code, ext)
        cpu.halted = False
        if kind == "software":
            cpu.sw_int_delivered = True
        return
    sel = (gate >> 16) & 0xFFFF
    offset = (gate & 0xFFFF) | ((gate >> 32) & 0xFFFF0000)
    gate32 = gtype in (SYS_INT_GATE32, SYS_TRAP_GATE32)
    if not gate32:
        offset &= 0xFFFF
    if sel & ~3 == 0:
        raise CpuFault(GP, ext)
    addr = D.descriptor_address(cpu, sel)
    if addr is None:
        raise CpuFault(GP, (sel & 0xFFFC) | ext)
    d = cpu.sys_read(addr, 8)
    dpl = D.d_dpl(d)
    if not D.d_is_code(d) or dpl > cpu.cpl:
        raise CpuFault(GP, (sel & 0xFFFC) | ext)
    if not D.d_present(d):
        raise CpuFault(NP, (sel & 0xFFFC) | ext)
    if offset > D.decoded(d)[1]:
        raise CpuFault(GP, ext)
    conforming = D.d_type(d) & 4
    eflags = cpu.get_eflags() | (RF if push_rf else 0)
    old_cs, old_eip = cpu.sel[CS], cpu.eip
    new_cpl = cpu.cpl if conforming else dpl
    if new_cpl < cpu.cpl:
        # Inter-privilege: switch to the inner stack from the TSS, push the old SS:ESP.
        ss, esp = D.tss_stack(cpu, new_cpl, ext)
        ssd = D.check_new_stack(cpu, ss, new_cpl, ext)
        old_ss, old_esp = cpu.sel[SS], cpu.regs[4]
        words = [old_ss, old_esp, eflags, old_cs, old_eip]
        if error_code is not None:
            words.append(error_code)
        _push_frame(cpu, ssd, ss, esp, words, gate32, ext)
        D.set_accessed(cpu, ss, ssd)
        base, limit, attr = D.decoded(ssd)
        cpu.set_segment_cache(SS, (ss & ~3) | new_cpl, base, limit, attr)
        cpu.regs[4] = cpu.new_esp
    else:
        words = [eflags, old_cs, old_eip]
        if error_code is not None:
            words.append(error_code)
        _push_frame_current(cpu, words, gate32)
    D.load_cs(cpu, sel, d, new_cpl)
    cpu.eip = offset
    clear = TF | NT | RF | VM
    if gtype in (SYS_INT_GATE32, SYS_INT_GATE16):
        clear |= IF
    cpu.eflags_rest &= ~clear
    cpu.halted = False
    if kind == "software":
        # INT n/INT3/INTO entered its handler: no single-step trap follows
        # the instruction (CPU.single_step).
        cpu.sw_int_delivered = True


def _push_frame(cpu, ssd, ss, esp, words, gate32, ext):
    """Write the frame on the inner stack with supervisor privilege; sets cpu.new_esp.

    The whole frame is checked against the new SS limit before anything is
    written (#SS(new SS selector + EXT), SDM Vol. 2 INT n: "new stack does
    not have room"); a fault leaves the old stack untouched.
    """
    size = 4 if gate32 else 2
    ss32 = bool(D.d_attr(ssd) & 0x4000)
    mask = 0xFFFFFFFF if ss32 else 0xFFFF
    new = D.check_stack_room(ssd, ss, esp, size * len(words), ext)
    ss_base = D.decoded(ssd)[0]
    p = new
    n = size * len(words)
    if new + n - 1 <= mask and cpu.sys_write_block((ss_base + new) & 0xFFFFFFFF, b"".join(
            (w & ((1 << (8 * size)) - 1)).to_bytes(size, "little") for w in reversed(words))):
        cpu.new_esp = new if ss32 else (esp & 0xFFFF0000) | new
        return
    for w in reversed(words):
        cpu.sys_write(ss_base + p, size, w & ((1 << (8 * size)) - 1))
        p = (p + size) & mask
    cpu.new_esp = new if ss32 else (esp & 0xFFFF0000) | new


def _push_frame_current(cpu, words, gate32):
    size = 4 if gate32 else 2
    regs = cpu.regs
    mask = 0xFFFFFFFF if cpu.ss32 else 0xFFFF
    esp = regs[4]
    new = (esp - size * len(words)) & mask
    # Write from the lowest address up after checking both ends (restartable).
    p = new
    for w in reversed(words):
        cpu.wr(SS, p, size, w & ((1 << (8 * size)) - 1))
        p = (p + size) & mask
    regs[4] = new if cpu.ss32 else (esp & 0xFFFF0000) | new


def software_interrupt(cpu, vector: int, next_eip: int, ip: int | None = None) -> None:
    """INT n / INT3 / INTO: a trap; the return address is the next instruction.
    ``cpu.event_ip`` keeps the address of the INT instruction itself for a monitor."""
    cpu.event_ip = ip
    cpu.eip = next_eip
    deliver_event(cpu, vector, None, kind="software")


def iret(cpu, size: int, next_eip: int | None = None) -> None:
    """IRET/IRETD in protected mode (SDM Vol. 2 IRET, PROTECTED-MODE and RETURN-TO-OUTER-PRIVILEGE-LEVEL)."""
    if not cpu.cr0 & CR0_PE:
        raise MachineStop("real mode", "IRET in real mode is not supported")
    if cpu.nmi_blocked:
        # IRET ends NMI blocking (SDM Vol. 3A §6.7.1); a latched NMI is taken after it.
        cpu.nmi_blocked = False
        cpu.resched = True
    if cpu.eflags_rest & NT:
        from . import tasks
        if cpu.intercepts.task_switch_exiting:
            from .exits import TaskSwitchExit
            raise ExitFault(TaskSwitchExit(cpu.sys_read(cpu.tr_base, 2), "iret"))
        tasks.task_return(cpu, next_eip)     # back to the task in the link field
        return
    regs = cpu.regs
    mask = 0xFFFFFFFF if cpu.ss32 else 0xFFFF
    sp = regs[4] & mask
    rd = cpu.rd32 if size == 4 else cpu.rd16
    new_eip = rd(SS, sp)
    new_cs = rd(SS, (sp + size) & mask) & 0xFFFF
    new_flags = rd(SS, (sp + 2 * size) & mask)
    if size == 2:
        new_flags = (cpu.get_eflags() & 0xFFFF0000) | new_flags
    if new_flags & VM and cpu.cpl == 0:
        raise MachineStop("virtual-8086 mode", "IRET to virtual-8086 mode is not implemented")
    d = D.check_return_cs(cpu, new_cs)
    rpl = new_cs & 3
    if not size == 4:
        new_eip &= 0xFFFF
    if new_eip > D.decoded(d)[1]:
        raise CpuFault(GP, 0)
    old_cpl = cpu.cpl
    if rpl > old_cpl:
        # Return to an outer privilege level: also pop ESP and SS, and check SS.
        new_esp = rd(SS, (sp + 3 * size) & mask)
        new_ss = rd(SS, (sp + 4 * size) & mask) & 0xFFFF
        # IRET: #NP(selector) "if the return code or stack segment is not
        # present" (SDM Vol. 2 IRET, exceptions); RET far uses #SS instead.
        ssd = D.check_return_ss(cpu, new_ss, rpl, NP)
        D.load_cs(cpu, new_cs, d, rpl)
        set_flags_by_privilege(cpu, new_flags, old_cpl, size, keep_rf=bool(cpu.bp_exec))
        D.set_accessed(cpu, new_ss, ssd)
        D.load_cache(cpu, SS, new_ss, ssd)
        regs[4] = new_esp if cpu.ss32 else (regs[4] & 0xFFFF0000) | (new_esp & 0xFFFF)
        D.invalidate_outer_segments(cpu)
    else:
        D.load_cs(cpu, new_cs, d, rpl)
        set_flags_by_privilege(cpu, new_flags, old_cpl, size, keep_rf=bool(cpu.bp_exec))
        regs[4] = (sp + 3 * size) & mask if cpu.ss32 else (regs[4] & 0xFFFF0000) | ((sp + 3 * size) & 0xFFFF)
    cpu.eip = new_eip


def set_flags_by_privilege(cpu, value: int, cpl: int, size: int, keep_rf: bool = True) -> None:
    """The EFLAGS update rules shared by POPF and IRET (SDM Vol. 2 POPF, IRET):
    IOPL changes only at CPL 0; IF only when CPL <= IOPL; VM, VIF, VIP are left
    alone by POPF (IRET at CPL 0 may set VM, which we do not support)."""
    cur = cpu.get_eflags()
    changeable = ARITH_FLAGS | TF | DF | NT | AC | ID
    if cpl == 0:
        changeable |= IOPL | IF
    elif cpl <= (cur >> 12) & 3:
        changeable |= IF
    if size == 2:
        changeable &= 0xFFFF
    new = (cur & ~changeable) | (value & changeable)
    if keep_rf:
        new = (new & ~RF) | (value & RF)
    else:
        # POPF clears RF.  IRET loads it (SDM Vol. 3A §17.3.1.1), but RF only
        # suppresses instruction breakpoints until the next instruction
        # completes, and the processor clears it then: so IRET keeps it only
        # while instruction breakpoints are enabled (then CPU.single_step
        # runs every instruction and clears it).
        new &= ~RF
    cpu.lf = (F.EAGER, new & ARITH_FLAGS, 0, 0, 0)
    cpu.eflags_rest = (new & ~ARITH_FLAGS) | EFLAGS_RESERVED_1
    cpu.update_ac()
