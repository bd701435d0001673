"""``trap-emulate``: the guest kernel runs directly at ring 1; what traps is emulated.

The classic technique (Popek & Goldberg, CACM 17(7), 1974; for x86's
sensitive but unprivileged instructions, Robin & Irvine, USENIX Security 2000).  The host CPU executes the guest's instructions
itself, with the guest kernel deprivileged to ring 1 (ring compression; the
guest's ring 3 stays ring 3), on the monitor's shadow GDT and IDT
(``shadow_descriptors.py``) and shadow page tables (``shadow_paging.py``).
Every event the host CPU would deliver through its IDT goes to the monitor's
dispatcher instead (:meth:`TrapEmulate.dispatch`):

* #GP and the other faults: the instruction is re-executed by an interpreter
  routine on the virtual CPU with the guest's privileges: a privileged
  instruction of the guest kernel (CLI, MOV CR3, LGDT, IN/OUT, HLT...) takes
  effect on the virtual machine; a genuine guest fault is delivered through
  the guest's IDT;
* #PF: the allocator's shadow paging fills the shadow (hidden fault), or
  reflects the fault to the guest, or emulates a store into a traced page;
* INT n: emulated on the virtual CPU (gate checks against the virtual CPL);
* device interrupts of the VM are injected when the virtual IF allows.

On the standard IA-32 CPU this is *not* a correct monitor: the sensitive but
unprivileged instructions (POPF, PUSHF, SGDT, PUSH CS, LAR, ...) execute at
ring 1 without trapping and see the host's state.  With ``--cpu strict`` the
host CPU traps every sensitive instruction outside ring 0, Popek and
Goldberg's condition holds, and the guest sees exactly what it sees natively.
"""

from __future__ import annotations

import time

from ...events import INJECT, TRAP, Event, EventLog
from ...machine.cpu import MachineStop
from ...machine.cpu.constants import (
    CR0_ET, CR0_NE, CR0_PE, CR0_PG, CR0_WP, CR4_PGE, CR4_PSE, CS, EXCEPTION_NAMES, IF, PF_VEC,
)
from ...machine.cpu.cpu import CpuFault
from ...machine.cpu.exits import (
    BudgetExhausted, ExceptionExit, GuestExit, InstructionExit, MachineStopped, Preempted,
)
from ..dispatcher import Dispatcher
from ..interpreter import SystemState, interpret, pull, push
from ..monitor import MAX_IDLE_EXITS, Host, LivelockWatchdog, Monitor, RunOptions, register
from ..shadow_descriptors import ShadowDescriptors, guest_cpl
from ..shadow_paging import DEFAULT_CACHE_SIZE, FILLED, REFLECTED, ShadowPaging
from ..vm import VM
from .base import TechniqueResult

# Faults whose instruction is re-executed on the virtual CPU (SDM Vol. 3A Table 6-1:
# these are faults, reported on the instruction, so re-execution is exact).
REEXECUTE = frozenset({0, 5, 6, 7, 10, 11, 12, 13, 16, 17})
HOST_CR0 = CR0_PE | CR0_PG | CR0_WP | CR0_ET | CR0_NE
ALL_EXCEPTIONS = (1 << 32) - 1


@register
class TrapEmulate(Monitor):
    name = "trap-emulate"
    summary = ("the guest kernel runs directly at ring 1 on shadow page and descriptor tables; "
               "what traps is emulated (Popek and Goldberg's monitor)")
    honours = frozenset({"shadow_cache", "trace_file", "audit", "disk", "modules", "initrd", "serial_in",
                         "host_memory"})
    uses_host = True

    def __init__(self, options: RunOptions, host: Host | None = None):
        """One VM under trap-and-emulate.  Alone, it gets a host machine of its own;
        several VMs can share one host (vmm/scheduler.py), each entered on the host
        CPU in turn (:meth:`enter`, :meth:`leave`)."""
        super().__init__(options, host)
        if host is None:
            host = Host([options.memory_bytes], strict=options.strict)
        self.alloc, self.host = host.allocator, host.cpu
        host_mem = self.alloc.host
        self.vm = vm = VM(self.alloc, options.memory_bytes, name=options.name,
                          serial_out=options.serial_out, disk=options.disk, strict=options.strict,
                          serial_in=options.serial_in)
        vm.load_kernel(options.kernel, cmdline=options.cmdline, modules=options.modules, initrd=options.initrd)
        vcpu = vm.vcpu
        host = self.host
        self.auditor = None
        if options.audit:
            # One recording for both CPUs: what ran directly and what was interpreted,
            # in the order the guest executed it.
            from ...machine.cpu.audit import Auditor
            self.auditor = host.auditor = vcpu.auditor = Auditor()
        # Guest instructions the host CPU executed directly for this VM: those of
        # its earlier slices on the host, plus the current slice's.
        self.direct_done = 0
        self.slice_start = host.icount
        self.on_host = True
        self.in_run = False          # the host CPU is executing this guest's code
        vm.instructions = self.instructions
        # Stores by the virtual CPU into decoded code must drop the host's blocks of that page.
        vcpu.hooks.code_written = vm.memory.vcpu_store_hook(host)
        self.shadow = ShadowPaging(self.alloc, host, vm, cache_size=DEFAULT_CACHE_SIZE if options.shadow_cache is None else options.shadow_cache)
        self.descriptors = ShadowDescriptors(host, host_mem, vcpu, trace_frame=self.shadow.trace)
        self.shadow.vm_shadow_gdt_changed = self.descriptors.rebuild
        vcpu.hooks.tlb_invalidated = self._guest_invlpg
        self.dispatcher = Dispatcher({
            ExceptionExit: self.on_exception, InstructionExit: self.on_instruction,
            BudgetExhausted: self._resume, Preempted: self._resume,
            GuestExit: self._resume, MachineStopped: self._machine_stopped,
        })
        # A timer the guest arms while the host CPU runs a budget computed from the old
        # deadline: back to the run loop, which computes the budget afresh.
        vm.clock.on_earlier_deadline = self._deadline_moved
        self.shadow.reset()
        host.set_cr0(HOST_CR0)
        self.set_intercepts()
        self.descriptors.install()
        # The guest's TSC: its instructions, direct and interpreted, plus what it wrote to
        # IA32_TIME_STAMP_COUNTER (SDM Vol. 3B 17.17; the bare CPU counts instructions).
        self.push_to_host()
        self.log = EventLog(keep=options.keep_events, trace_file=options.trace_file)
        self.extra_cycles = 0
        self.interpreted_count = 0
        self.shadow_at = 0    # host.icount when the virtual CPU's interrupt shadow began
        self.stop_reason: MachineStop | None = None

    def set_intercepts(self) -> None:
        """Every event the host CPU would deliver through its IDT exits to the monitor:
        all exceptions, and INT n before its gate is read.  Nothing else needs an
        intercept: the guest kernel runs at ring 1 with IOPL 0, so its privileged and
        I/O instructions fault (#GP) by themselves."""
        ic = self.host.intercepts
        ic.clear()
        ic.exception_bitmap = ALL_EXCEPTIONS
        ic.software_interrupt_exiting = True
        ic.external_interrupt_exiting = True
        # The guest's time-stamp counter counts the guest's own instructions, direct and
        # interpreted (the bare PC's counts retired instructions, ops_msr.read_tsc); the
        # host's counts every VM's, so RDTSC is read on the virtual CPU (on_instruction).
        ic.rdtsc_exiting = True

    def _guest_invlpg(self, lin) -> None:
        """The guest's INVLPG, interpreted on the virtual CPU: drop the shadow's entry too."""
        if lin is None:
            return
        self.shadow.invalidate_page(lin)
        self.charge(TRAP, "shadow invlpg", self.costs.shadow_update, log=False)
        # The GDT is read through the page tables: a page of it remapped (or unmapped)
        # and invalidated must not leave the host loading segments from the old copy.
        base, limit = self.vm.vcpu.gdtr
        if limit and (base & ~0xFFF) <= (lin & ~0xFFF) <= base + limit:
            self.descriptors.rebuild()

    def _deadline_moved(self) -> None:
        if self.in_run:
            self.host.request_exit()

    def direct(self) -> int:
        return self.direct_done + (self.host.icount - self.slice_start if self.on_host else 0)

    def instructions(self) -> int:
        return self.direct() + self.vm.vcpu.icount

    def steps(self) -> int:
        # The host CPU delivers nothing itself (every event is an exit): the guest's
        # deliveries are the virtual CPU's.
        vcpu = self.vm.vcpu
        return self.direct() + vcpu.icount + vcpu.deliveries

    def push_to_host(self) -> None:
        """The virtual CPU's state onto the host CPU (RDTSC exits: on_instruction)."""
        push(self.vm.vcpu, self.host)

    def leave(self) -> None:
        """Take this VM off the host CPU: its state goes back into the virtual CPU."""
        if not self.on_host:
            return
        pull(self.host, self.vm.vcpu)
        self.direct_done += self.host.icount - self.slice_start
        self.on_host = False

    def enter(self) -> None:
        """Put this VM on the host CPU: its shadow page tables, shadow GDT and the
        monitor's IDT and TSS, its intercept controls, its registers (ring-compressed)."""
        if self.on_host:
            return
        host = self.host
        self.set_intercepts()
        host.auditor = self.auditor
        host.stop = None
        host.halted = False
        self.shadow.enter()
        self.descriptors.install()
        push(self.vm.vcpu, host)
        self.slice_start = host.icount
        self.on_host = True

    # -- accounting ------------------------------------------------------------
    def charge(self, kind: str, reason: str, cycles: int, eip: int = 0, ins=None, log=True,
               detail=None) -> None:
        """Charge ``cycles`` to the run and log one event in the shared format.

        Instruction bytes and disassembly are filled in when events are kept
        or traced (counting alone needs neither, and decoding costs time).
        """
        self.extra_cycles += cycles
        if not log:
            return
        raw, text = b"", ""
        if self.log.keep or self.log.trace_file is not None:
            detail = dict(detail or {}, at=self.vm.instructions())
            if ins is not None:
                from ...machine.cpu.translate import disassemble
                text = disassemble(ins)
                try:
                    vcpu = self.vm.vcpu
                    raw = bytes(vcpu.lin_read((vcpu.base[1] + eip + i) & 0xFFFFFFFF, 1)
                                for i in range(ins.len))
                except CpuFault:
                    raw = b""
        self.log.log(Event(self.name, kind, reason, eip, raw, text, detail or {}, cycles))

    # -- the dispatcher's arms --------------------------------------------------------
    def _resume(self, exit) -> None:
        return None

    def _machine_stopped(self, exit: MachineStopped) -> MachineStop:
        return exit.stop

    def on_exception(self, exit: ExceptionExit) -> None:
        """Every event the host CPU would have delivered through its IDT (the monitor's IDT)."""
        host, vcpu, costs = self.host, self.vm.vcpu, self.costs
        vector, error_code, kind = exit.vector, exit.error_code, exit.kind
        if kind == "exception" and vector == PF_VEC:
            vcpu.set_cpl(guest_cpl(host.cpl, vcpu.cpl))
            lin = host.cr2
            write = bool(error_code & 2)
            outcome = self.shadow.handle_fault(lin, write)
            if outcome == FILLED:
                self.charge(TRAP, "#PF hidden (shadow fill)", costs.trap_roundtrip + costs.shadow_fill,
                            host.eip, detail={"address": lin})
                return None
            pull(host, vcpu)
            if outcome == REFLECTED:
                vcpu.cr2 = lin
                vcpu.raise_exception(PF_VEC, self.shadow.guest_error)
                self.charge(TRAP, "#PF reflected to guest", costs.trap_roundtrip + costs.interpreter_routine,
                            host.eip, detail={"address": lin})
            else:
                gpa = self.shadow.last_gpa
                traced = write and gpa is not None and (gpa & ~0xFFF) in self.shadow.traced
                self.interpret("#PF " + ("traced store" if traced else "MMIO/emulated access"))
                if traced:
                    self.shadow.traced_write(gpa)
                    self.extra_cycles += costs.shadow_update
        elif kind == "software":
            pull(host, vcpu)
            vcpu.eip = exit.instruction_ip
            self.interpret(f"INT {vector:#x}")
        elif kind == "exception" and vector in REEXECUTE:
            pull(host, vcpu)
            self.interpret(EXCEPTION_NAMES.get(vector, str(vector)))
        elif kind == "exception":
            pull(host, vcpu)
            vcpu.raise_exception(vector, error_code)
            self.charge(TRAP, f"{EXCEPTION_NAMES.get(vector, vector)} reflected",
                        costs.trap_roundtrip + costs.interpreter_routine, host.eip)
        else:
            return None   # no external interrupts reach the host: the VM's devices are virtual
        self.inject_pending()
        self.push_to_host()
        if vcpu.inhibit_irq:
            # An interpreted STI (or MOV/POP SS) opened a one-instruction interrupt shadow,
            # which the run loop keeps (one instruction first, then the interrupt).
            self.shadow_at = host.icount
        return None

    def on_instruction(self, exit: InstructionExit) -> None:
        """RDTSC (the one instruction exit set_intercepts enables): interpreted, so that
        it reads the guest's counter."""
        self.pull_guest()
        self.interpret(exit.mnemonic)
        self.inject_pending()
        self.push_to_host()
        return None

    # -- what a technique built on this loop adds (techniques/bt) ----------------------
    def pull_guest(self) -> None:
        """Host CPU -> virtual CPU, the guest's state as the guest sees it."""
        pull(self.host, self.vm.vcpu)

    def before_host_run(self) -> bool:
        """Right before the host CPU runs the guest: False to go round the loop again."""
        return True

    def in_cache(self) -> bool:
        return False

    def after_host_run(self, ran: int, was_in_cache: bool) -> None:
        """Right after the host CPU ran ``ran`` instructions."""

    def interpret(self, why: str) -> None:
        """Run one interpreter routine: the instruction at the virtual EIP, on the virtual CPU."""
        vcpu = self.vm.vcpu
        before = SystemState(vcpu)
        eip = vcpu.eip
        icount = vcpu.icount
        # The virtual CPU's TSC reads its own count plus the instructions that ran
        # directly: the guest's instructions in all (TSC offsetting, as VT-x does it).
        direct = vcpu.intercepts.tsc_offset = self.direct()
        offset = vcpu.tsc_offset
        ins, mnemonic = interpret(vcpu)
        if vcpu.tsc_offset != offset:       # WRMSR IA32_TSC: the written value is the guest's
            vcpu.tsc_offset -= direct
        self.interpreted_count += vcpu.icount - icount
        self.charge(TRAP, f"{why}: {mnemonic}", self.costs.trap_roundtrip + self.costs.interpreter_routine,
                    eip, ins)
        self.after_interpret(before)

    def after_interpret(self, before: SystemState) -> None:
        """The allocator's turn: react to changes of the VM's resources."""
        vcpu = self.vm.vcpu
        if (vcpu.cr0 ^ before.cr0) & (CR0_PG | CR0_WP) or (vcpu.cr4 ^ before.cr4) & (CR4_PSE | CR4_PGE):
            self.shadow.reset()      # every guest table now reads differently
            self.charge(TRAP, "shadow flush (CR0/CR4 paging mode)", self.costs.shadow_flush, log=False)
        elif vcpu.cr3 != before.cr3:
            if self.shadow.switch():
                self.charge(TRAP, "shadow switch (cached address space)", self.costs.shadow_switch, log=False)
            else:
                self.charge(TRAP, "shadow flush (CR3 load, new address space)", self.costs.shadow_flush,
                            log=False)
        # The shadow GDT is a copy of what the guest's GDTR reaches through its page
        # tables: a new address space or paging mode may reach other bytes.
        if vcpu.gdtr != before.gdtr or vcpu.tr != before.tr or vcpu.ldtr != before.ldtr \
                or vcpu.cr3 != before.cr3 or (vcpu.cr0 ^ before.cr0) & CR0_PG:
            self.descriptors.rebuild()

    def inject_pending(self) -> None:
        """Deliver a pending interrupt of the VM's devices if the virtual IF allows it."""
        vm, vcpu = self.vm, self.vm.vcpu
        if vcpu.eflags_rest & IF and not vcpu.inhibit_irq and vm.devices.intc.interrupt_pending():
            vcpu.halted = False
            vcpu.deliver_external_interrupt()
            self.charge(INJECT, "interrupt injected", self.costs.inject_interrupt, vcpu.eip)

    # -- the run loop -----------------------------------------------------------------
    def run_slice(self, until: int, max_instructions: int) -> bool:
        """Run until the VM has executed ``until`` instructions in all (a time slice
        ends there, at an instruction boundary outside any interrupt shadow), or
        until it ends.  True when it has ended: exit, stop, or ``max_instructions``."""
        t0 = time.perf_counter()
        try:
            self.stop_reason = reason = self._run(until, max_instructions)
        finally:
            self.seconds += time.perf_counter() - t0
        return reason is not None or self.vm.exit_code is not None

    def _run(self, until: int, max_instructions: int):
        host, vm, vcpu, clock = self.host, self.vm, self.vm.vcpu, self.vm.clock
        dispatch = self.dispatcher.dispatch
        slice_end = min(until, max_instructions)
        deadline = self.deadline
        reason = None
        watchdog = LivelockWatchdog()
        try:
            while True:
                if vm.exit_code is not None:
                    break
                if vcpu.stop is not None:
                    reason = vcpu.stop
                    break
                total = self.steps()
                if total >= max_instructions:
                    reason = MachineStop("instruction limit", "")
                    break
                if deadline is not None and time.perf_counter() > deadline:
                    reason = MachineStop("time limit", f"{self.options.max_seconds} s of host time")
                    break
                if total >= slice_end and not vcpu.inhibit_irq:
                    return None      # the time slice is over; the VM goes on later
                if vcpu.halted:
                    if not vcpu.eflags_rest & IF:
                        reason = MachineStop("halted forever", "HLT with interrupts disabled (IF=0)")
                        break
                    # The HLT has retired: an STI shadow it was in is over (as in STI; HLT),
                    # else the pending interrupt is never injected and this loop never ends.
                    vcpu.inhibit_irq = False
                    if vm.devices.intc.interrupt_pending():
                        self.pull_guest()
                        self.inject_pending()
                        self.push_to_host()
                        continue
                    if not clock.skip_to_next_deadline():
                        reason = MachineStop("halted forever", clock.idle_stop or "HLT with no timer armed")
                        break
                    clock.run_due()
                    continue
                shadow = False
                if vcpu.eflags_rest & IF and vm.devices.intc.interrupt_pending():
                    if vcpu.inhibit_irq:
                        shadow = True       # one instruction first, then the interrupt (as the bare CPU)
                    else:
                        self.pull_guest()
                        self.inject_pending()
                        self.push_to_host()
                        if vcpu.stop is not None:
                            continue
                if not host.attr[CS] & 0x80:
                    # The guest's code segment reaches the monitor window (host_segment):
                    # it must not run directly; interpret it one instruction at a time.
                    self.interpret("code segment reaching the monitor window")
                    self.inject_pending()
                    self.push_to_host()
                    clock.run_due()
                    continue
                # (past the slice's end only inside an interrupt shadow: one more instruction)
                budget = slice_end - total if total < slice_end else 1
                due = clock.next_deadline()
                if due < clock.NEVER:
                    budget = min(budget, clock.instructions_until(due))
                if shadow:
                    budget = 1
                if not self.before_host_run():
                    continue
                was = self.in_cache()
                ran = host.icount
                self.in_run = True
                exit = host.run(budget)
                self.in_run = False
                self.after_host_run(host.icount - ran, was)
                if vcpu.inhibit_irq and host.icount > self.shadow_at:
                    vcpu.inhibit_irq = False    # the shadowed instruction ran directly
                stop = dispatch(exit)
                if stop is not None:
                    reason = stop
                    break
                if watchdog.stuck(self.steps()):
                    reason = MachineStop("monitor livelock", f"{MAX_IDLE_EXITS} exits in a row "
                                                             f"without a guest step, at EIP {host.eip:#x}")
                    break
                clock.run_due()
        except MachineStop as stop:
            reason = stop
        return reason

    def result(self) -> TechniqueResult:
        vm, vcpu = self.vm, self.vm.vcpu
        reason = self.stop_reason
        direct = self.direct()
        total = direct + vcpu.icount
        cycles = direct * self.costs.direct_instruction + self.extra_cycles
        result = TechniqueResult(
            self.name, "strict" if self.strict else "standard", vm.output, vm.exit_code,
            reason.reason if reason else None, reason.detail if reason else "",
            total, direct, cycles, self.seconds, self.log)
        sp = self.shadow
        result.notes.append(
            f"shadow paging: {sp.fills:,} hidden-fault fills, {sp.updates:,} traced updates, "
            f"{sp.switches:,} CR3 switches of which {sp.cache_hits:,} found their shadow cached "
            f"(cache of {sp.cache_size}), {sp.flushes:,} shadows built, {sp.evictions:,} evicted")
        result.exits = self.dispatcher.statistics()
        result.steps = self.steps()
        if self.auditor is not None:
            result.audit = self.auditor.records
        return result
