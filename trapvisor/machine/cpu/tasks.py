"""Hardware task switching through 32-bit TSSs (SDM Vol. 3A §7.3).

A task switch happens on a far JMP or CALL to a TSS descriptor or a task
gate, on INT n / an exception / an interrupt whose IDT gate is a task gate,
and on IRET with EFLAGS.NT set (return to the task named by the link field).
The steps, in the SDM's order:

1. checks on the new TSS descriptor (present: #NP, limit >= 0x67: #TS, not
   busy for JMP/CALL/INT - the callers check the type; IRET wants it busy);
2. the busy flag of the old TSS is cleared for JMP and IRET;
3. the current state (EIP of the next instruction - or of the faulting one,
   for an exception - EFLAGS with NT cleared for IRET, the general registers
   and the six selectors) is saved in the old TSS;
4. for CALL and INT the old TSS selector goes into the new TSS's link field
   and the new task runs with NT set; for JMP and CALL (and INT) the new TSS
   becomes busy;
5. commit: TR, CR0.TS, CR3 (with paging), EFLAGS, EIP, the registers, the
   selectors (caches invalid) and LDTR are loaded from the new TSS;
6. then the LDT and segment descriptors are checked (#TS, #NP, #SS); an
   exception from here on is taken in the new task (Table 7-1);
7. a T bit in the new TSS raises a #DB trap (DR6.BT) before its first
   instruction; an exception through a task gate pushes its error code on
   the new task's stack.

16-bit TSSs and virtual-8086 tasks are not implemented (the machine stops).
"""

from __future__ import annotations

from . import descriptors as D
from .constants import (
    CR0_PG, CR0_TS, CS, DB, DS, ES, FS, GP, GS, NP, NT, SS, SS_VEC, SYS_LDT, SYS_TASK_GATE,
    SYS_TSS32_AVAIL, SYS_TSS32_BUSY, TS, VM,
)
from .cpu import CpuFault, MachineStop

BUSY = 2   # bit 1 of the type: available (9) / busy (11)


def via_gate(cpu, gate_sel: int, gate: int, ext: int = 0) -> tuple[int, int]:
    """The TSS selector and descriptor a task gate names (SDM Vol. 3A §7.3)."""
    if not D.d_present(gate):
        raise CpuFault(NP, (gate_sel & 0xFFFC) | ext)
    sel = (gate >> 16) & 0xFFFF
    addr = D.descriptor_address(cpu, sel)
    if sel & 4 or addr is None:       # the TSS must be in the GDT
        raise CpuFault(GP, (sel & 0xFFFC) | ext)
    d = cpu.sys_read(addr, 8)
    if not D.d_is_system(d) or D.d_type(d) & 7 != 1:
        raise CpuFault(GP, (sel & 0xFFFC) | ext)
    if D.d_type(d) & BUSY:
        raise CpuFault(GP, (sel & 0xFFFC) | ext)
    return sel, d


def _set_busy(cpu, sel: int, busy: bool) -> None:
    addr = D.descriptor_address(cpu, sel)
    b = cpu.sys_read(addr + 5, 1)
    cpu.sys_write(addr + 5, 1, (b | BUSY) if busy else (b & ~BUSY))


def switch(cpu, sel: int, d: int, source: str, next_eip: int, error_code=None, ext: int = 0) -> None:
    """Switch to the task of TSS ``sel`` (descriptor ``d``); ``source`` is
    "jmp", "call", "int" (interrupt, exception or INT n through a task gate)
    or "iret"."""
    if not D.d_present(d):
        raise CpuFault(NP, (sel & 0xFFFC) | ext)
    if D.d_type(d) & 8 == 0:
        raise MachineStop("task switch", "switch to a 16-bit TSS (not implemented)")
    limit, base = D.d_limit(d), D.d_base(d)
    if sel & 4 or limit < 0x67:
        raise CpuFault(TS, (sel & 0xFFFC) | ext)
    if not cpu.tr_attr & 0x8:
        raise MachineStop("task switch", "switch from a 16-bit TSS (not implemented)")

    rd = cpu.sys_read
    new_cr3 = rd(base + 0x1C, 4)
    new_eip = rd(base + 0x20, 4)
    new_eflags = rd(base + 0x24, 4)
    new_regs = [rd(base + 0x28 + 4 * i, 4) for i in range(8)]
    new_segs = [rd(base + 0x48 + 4 * i, 2) for i in range(6)]     # ES CS SS DS FS GS
    new_ldt = rd(base + 0x60, 2)
    new_trap = rd(base + 0x64, 2) & 1
    if new_eflags & VM:
        raise MachineStop("task switch", "switch to a virtual-8086 task (not implemented)")

    # Save the outgoing task (its TSS must be writable: touch both ends first).
    old = cpu.tr_base
    cpu.sys_write(old, 1, rd(old, 1))
    cpu.sys_write(old + 0x67, 1, rd(old + 0x67, 1))
    if source in ("jmp", "iret"):
        _set_busy(cpu, cpu.tr, False)
    eflags = cpu.get_eflags()
    if source == "iret":
        eflags &= ~NT
    w = cpu.sys_write
    w(old + 0x20, 4, next_eip)
    w(old + 0x24, 4, eflags)
    for i in range(8):
        w(old + 0x28 + 4 * i, 4, cpu.regs[i])
    for i in range(6):
        w(old + 0x48 + 4 * i, 2, cpu.sel[i])
    if source in ("call", "int"):
        w(base, 2, cpu.tr)
        new_eflags |= NT
    if source != "iret":
        _set_busy(cpu, sel, True)

    # Commit: from here on a fault belongs to the new task.
    cpu.tr, cpu.tr_base, cpu.tr_limit = sel, base, limit
    cpu.tr_attr = D.d_attr(d) | BUSY
    cpu.cr0 |= CR0_TS
    if cpu.dr[7] & 0x55:                  # the local breakpoint enables belong to the old task
        from .ops_sysregs import debug_update
        cpu.dr[7] &= ~0x55
        debug_update(cpu)
    if cpu.cr0 & CR0_PG:
        cpu.set_cr3(new_cr3)
    cpu.eip = new_eip
    cpu.set_eflags(new_eflags | 2)
    cpu.regs[:] = [r & 0xFFFFFFFF for r in new_regs]
    new_cpl = new_segs[CS] & 3
    for s in range(6):
        cpu.set_segment_cache(s, new_segs[s], 0, 0, 0)
    cpu.set_cpl(new_cpl)
    cpu.ldtr, cpu.ldt_base, cpu.ldt_limit = new_ldt & ~4, 0, 0
    try:
        _load_new_state(cpu, new_ldt, new_segs, new_cpl)
        if new_eip > cpu.limit[CS]:
            raise CpuFault(GP, 0)
    except CpuFault as f:
        _fault_in_new_task(cpu, f)
        return
    if error_code is not None:
        try:
            cpu.push32(error_code) if D.d_type(d) & 8 else cpu.push16(error_code)
        except CpuFault as f:
            _fault_in_new_task(cpu, f)
            return
    if new_trap:
        cpu.dr[6] |= 0x8000       # BT: the debug trap of a task switch
        _fault_in_new_task(cpu, CpuFault(DB))


def _fault_in_new_task(cpu, f: CpuFault) -> None:
    """Deliver an exception raised after the commit point in the new task
    (not as a fault of the instruction that switched: its state is gone)."""
    prev = cpu.delivering
    cpu.delivering = None
    try:
        cpu.raise_exception(f.vector, f.error_code)
    finally:
        cpu.delivering = prev


def _load_new_state(cpu, new_ldt: int, segs: list[int], cpl: int) -> None:
    """Table 7-1: the LDT, then CS, SS, ES, DS, FS, GS of the new task."""
    if new_ldt & 4:
        raise CpuFault(TS, new_ldt & 0xFFFC)
    if new_ldt & ~3:
        index = new_ldt & ~7
        gbase, glimit = cpu.gdtr
        if index + 7 > glimit:
            raise CpuFault(TS, new_ldt & 0xFFFC)
        ld = cpu.sys_read(gbase + index, 8)
        if not D.d_is_system(ld) or D.d_type(ld) != SYS_LDT or not D.d_present(ld):
            raise CpuFault(TS, new_ldt & 0xFFFC)
        cpu.ldtr, cpu.ldt_base, cpu.ldt_limit = new_ldt, D.d_base(ld), D.d_limit(ld)
    for s in (CS, SS, ES, DS, FS, GS):
        _load_segment(cpu, s, segs[s], cpl)


def _load_segment(cpu, s: int, sel: int, cpl: int) -> None:
    if sel & ~3 == 0:
        if s in (CS, SS):
            raise CpuFault(TS, sel & 0xFFFC)
        D.load_null(cpu, s, sel)
        return
    addr = D.descriptor_address(cpu, sel)
    if addr is None:
        raise CpuFault(TS, sel & 0xFFFC)
    d = cpu.sys_read(addr, 8)
    rpl, dpl, t = sel & 3, D.d_dpl(d), D.d_type(d)
    if D.d_is_system(d):
        raise CpuFault(TS, sel & 0xFFFC)
    if s == CS:
        if not D.d_is_code(d):
            raise CpuFault(TS, sel & 0xFFFC)
        if (t & 4 and dpl > rpl) or (not t & 4 and dpl != rpl):
            raise CpuFault(TS, sel & 0xFFFC)
    elif s == SS:
        if not D.d_is_data(d) or not t & 2 or dpl != cpl or rpl != cpl:
            raise CpuFault(TS, sel & 0xFFFC)
    else:
        if D.d_is_code(d) and not t & 2:
            raise CpuFault(TS, sel & 0xFFFC)
        if (D.d_is_data(d) or not t & 4) and (dpl < cpl or dpl < rpl):
            raise CpuFault(TS, sel & 0xFFFC)
    if not D.d_present(d):
        raise CpuFault(SS_VEC if s == SS else NP, sel & 0xFFFC)
    D.set_accessed(cpu, sel, d)
    if s == CS:
        D.load_cs(cpu, sel, d, cpl)
    else:
        D.load_cache(cpu, s, sel, d)


def task_return(cpu, next_eip: int) -> None:
    """IRET with NT=1: back to the task in the current TSS's link field."""
    link = cpu.sys_read(cpu.tr_base, 2)
    if link & 4:
        raise CpuFault(TS, link & 0xFFFC)
    addr = D.descriptor_address(cpu, link)
    if addr is None:
        raise CpuFault(TS, link & 0xFFFC)
    d = cpu.sys_read(addr, 8)
    if not D.d_is_system(d) or D.d_type(d) & 7 != 3:      # a busy TSS (16- or 32-bit)
        raise CpuFault(TS, link & 0xFFFC)
    switch(cpu, link, d, "iret", next_eip)


def is_task_type(d: int) -> bool:
    """A TSS descriptor (available or busy) or a task gate."""
    return D.d_is_system(d) and D.d_type(d) in (1, 3, SYS_TASK_GATE, SYS_TSS32_AVAIL, SYS_TSS32_BUSY)
