"""``vtx`` and ``vtx-noept``: hardware-assisted virtualization on the simulated VT-x CPU.

The fourth technique of the seed material (Intel VT-x: Uhlig et al., IEEE
Computer 38(5), 2005; measured against binary translation by Adams and
Agesen, ASPLOS 2006).  The host CPU has VMX (``machine/cpu/vmx``); the
monitor, written in Python, is its VMX root operation: it issues VMXON,
VMCLEAR, VMPTRLD, VMWRITEs a complete VMCS and enters the guest with
VMLAUNCH/VMRESUME through the same VMX model the simulated machine's own
code would use (:class:`~trapvisor.machine.cpu.vmx.VmxHost`).  Any kernel
then runs in VMX non-root operation at its own privilege levels -- no ring
compression, no shadow descriptor tables -- and the CPU leaves it only on
the VM exits the VMCS asks for, each dispatched by its basic exit reason
and counted under the SDM's name (``EXIT_REASON_*``, SDM Vol. 3C Appendix C)
in the shared event format.

* ``vtx`` (the ``late`` profile, as Sandy Bridge): EPT maps guest-physical
  memory onto the VM's partition (SDM Vol. 3C ch. 28), VPID tags the TLB,
  "unrestricted guest" lets the guest's own CR0/CR3/CR4 stand (the monitor
  owns only CR0.NE and CR4.VMXE, through the guest/host masks); exits are
  I/O, HLT, CPUID, RDTSC, RDMSR/WRMSR, interrupt window, EPT violations
  (MMIO: guest-physical addresses beyond RAM are not mapped), and the
  monitor's own preemption (its time slice: an external-interrupt exit).
* ``vtx-noept`` (the ``early`` profile, as the first VT-x parts): no EPT,
  so the monitor keeps shadow page tables (``vmm/shadow_paging.py``) as a
  software MMU does; CR3-load/-store and INVLPG exiting, #PF in the
  exception bitmap, the CR0.PG/WP/PE and CR4.PSE/PGE bits owned by the
  monitor.  This is the configuration Adams and Agesen measured: hardware
  virtualizes the CPU, the monitor still virtualizes the MMU.

An exit that needs an instruction emulated (I/O, CPUID, MSRs, a CR access,
MMIO) is handled as every technique's interpreter routines are
(``vmm/interpreter.py``): the guest state is read from the VMCS (and the
general registers from the CPU, as a VT-x monitor's exit stub saves them)
into the virtual CPU, the instruction is executed there against the VM's
devices, and the result is written back to the VMCS before VMRESUME.
Interrupts of the VM's devices are injected through the VM-entry
interruption-information field (SDM Vol. 3C §26.6), with interrupt-window
exiting when the guest cannot take one yet.
"""

from __future__ import annotations

import struct
import time

from ...events import EXIT, INJECT, Event, EventLog
from ...machine.cpu import MachineStop
from ...machine.pc import TIME_STEP
from ...machine.cpu.constants import IF, PF_VEC
from ...machine.cpu.exits import (
    BudgetExhausted, GuestExit, MachineStopped, Preempted, VmExit,
)
from ...machine.cpu.ops_sysregs import debug_update
from ...machine.cpu.vmx import VmxHost
from ...machine.cpu.vmx import capabilities as C
from ...machine.cpu.vmx.exit import EXIT_REASONS
from ...machine.cpu.vmx.state import load_guest, save_guest
from ..dispatcher import Dispatcher
from ..interpreter import SystemState, interpret
from ..monitor import MAX_IDLE_EXITS, Host, LivelockWatchdog, Monitor, RunOptions, register
from ..shadow_paging import DEFAULT_CACHE_SIZE, FILLED, REFLECTED, ShadowPaging
from ..vm import VM
from .base import TechniqueResult

CR0_PE, CR0_WP, CR0_NE, CR0_PG = 1 << 0, 1 << 16, 1 << 5, 1 << 31
CR4_PSE, CR4_PGE = 1 << 4, 1 << 7
EPT_RWX, EPT_WB, EPT_LARGE = 7, 6 << 3, 1 << 7
VPID = 1
# Exit reasons that the monitor handles by executing the guest's instruction on the
# virtual CPU (an interpreter routine).
EMULATED = frozenset({10, 12, 14, 16, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
                      32, 46, 47, 48, 50, 53, 54})


class _NoWindowShadowPaging(ShadowPaging):
    """Shadow paging for a guest in VMX non-root operation: the monitor needs no
    window in the guest's linear space (a VM exit switches address spaces), so no
    shadow maps the monitor region there -- a guest running at CPL 0 must not
    reach host memory (guest accesses to that range are emulated instead)."""

    def _new_space(self, key):
        from ..allocator import MONITOR_WINDOW
        space = super()._new_space(key)
        self.mem.write_u32(space.pd + 4 * (MONITOR_WINDOW >> 22), 0)
        return space


@register
class Vtx(Monitor):
    name = "vtx"
    summary = ("hardware assist: the guest runs in VMX non-root operation on the simulated VT-x "
               "CPU, with EPT and VPID (the late profile); exits counted by SDM reason")
    honours = frozenset({"trace_file", "audit", "disk", "modules"})
    time_sliced = True
    uses_host = True
    use_ept = True
    host_vmx = profile = "late"     # the VMX profile of the host CPU (vmm/scheduler.py builds it)

    def __init__(self, options: RunOptions, host: Host | None = None):
        """One VM in VMX non-root operation.  Alone, it gets a host machine of its own;
        several VMs share one host CPU (vmm/scheduler.py), each with its own VMCS,
        EPT and VPID, made current by VMPTRLD when it is entered (:meth:`enter`)."""
        super().__init__(options, host)
        if host is None:
            host = Host([options.memory_bytes], strict=options.strict, vmx=self.profile)
        if host.cpu.vmx is None or host.cpu.vmx.profile.name != self.profile:
            raise ValueError(f"{self.name} needs a host CPU with the {self.profile} VMX profile")
        self.alloc, self.host = host.allocator, host.cpu
        self.vm = vm = VM(self.alloc, options.memory_bytes, name=options.name,
                          serial_out=options.serial_out, disk=options.disk, strict=options.strict)
        vm.load_kernel(options.kernel, cmdline=options.cmdline, modules=options.modules)
        vcpu, cpu = vm.vcpu, self.host
        vm.instructions = self.instructions
        base_page = vm.partition.base >> 12
        vcpu.hooks.code_written = lambda page: cpu.invalidate_code_page(page + base_page)
        self.auditor = None
        if options.audit:
            from ...machine.cpu.audit import Auditor
            self.auditor = cpu.auditor = vcpu.auditor = Auditor()
        self.log = EventLog(keep=options.keep_events, trace_file=options.trace_file)
        self.extra_cycles = 0
        self.stop_reason: MachineStop | None = None
        self.halted = False
        self.guest_tsc = vcpu.tsc_offset       # the guest's TSC offset (WRMSR to the TSC)
        # CR2 is not part of the VMCS (SDM Vol. 3C §27.3.1: VM exits do not save it): the
        # host CPU's CR2 is the guest's, except after a hidden page fault of the shadow.
        self.guest_cr2 = vcpu.cr2
        self.window = False
        self.shadow = None
        self.exit_counts: dict[int, int] = {}
        self.exit_cycles: dict[int, int] = {}
        self.dispatcher = Dispatcher({
            VmExit: self.on_vm_exit, BudgetExhausted: self._resume, Preempted: self._resume,
            GuestExit: self._resume, MachineStopped: self._machine_stopped,
        })
        vm.clock.on_earlier_deadline = self._deadline_moved
        self.in_run = False
        # Guest steps the host CPU took for this VM: earlier slices', plus the current one's.
        self.direct_done = self.deliveries_done = 0
        self.slice_start, self.deliveries_start = cpu.icount, cpu.deliveries
        self.on_host = True
        self.vpid = VPID + len(host.allocator.partitions) - 1
        self.h = VmxHost(cpu)
        self.enter_root()
        if not self.use_ept:
            self.shadow = _NoWindowShadowPaging(self.alloc, cpu, vm, cache_size=DEFAULT_CACHE_SIZE)
            self.shadow.vm_shadow_gdt_changed = lambda: None
            vcpu.hooks.tlb_invalidated = self._guest_invlpg
            self.shadow.reset()
        self.write_vmcs()
        self.store_vcpu()
        self.launched = False

    # -- VMX root operation and the VMCS ---------------------------------------------
    def enter_root(self) -> None:
        """The host CPU in the state VMXON requires (CR0.PE/NE/PG, CR4.VMXE, SDM Vol. 3C
        §23.8), then VMXON, VMCLEAR and VMPTRLD of this VM's VMCS.  The host's own page
        directory maps nothing: the monitor runs no code on the host CPU."""
        from ...machine.cpu.vmx.state import load_control_registers
        cpu, alloc = self.host, self.alloc
        rev = cpu.vmx.profile.revision
        if not cpu.vmx.vmxon:          # the first VM on this host CPU
            host_pd, vmxon_region = alloc.alloc_frame(), alloc.alloc_frame()
            alloc.host.write_u32(vmxon_region, rev)
            load_control_registers(cpu, CR0_PE | CR0_NE | CR0_PG, host_pd, C.CR4_VMXE)
            self.h.vmxon(vmxon_region)
        self.vmcs_region = alloc.alloc_frame()
        alloc.host.write_u32(self.vmcs_region, rev)
        self.h.vmclear(self.vmcs_region)
        self.h.vmptrld(self.vmcs_region)
        self.vmcs = cpu.vmx.current

    def build_ept(self) -> int:
        """EPT mapping guest-physical [0, size) onto the VM's partition: 2 MiB pages
        where aligned, 4 KiB pages elsewhere, read/write/execute, write-back (SDM
        Vol. 3C §28.2.2, §28.2.6).  Nothing else is mapped: an access beyond the
        guest's RAM (MMIO) is an EPT violation.  Returns the EPTP."""
        alloc, ram = self.alloc, self.alloc.host.ram
        base, size = self.vm.partition.base, self.vm.partition.size
        pml4, pdpt = alloc.alloc_frame(), alloc.alloc_frame()
        struct.pack_into("<Q", ram, pml4, pdpt | EPT_RWX)
        for gib in range((size + (1 << 30) - 1) >> 30):
            pd = alloc.alloc_frame()
            struct.pack_into("<Q", ram, pdpt + 8 * gib, pd | EPT_RWX)
            for i in range(512):
                gpa = (gib << 30) | (i << 21)
                if gpa >= size:
                    break
                if gpa + (1 << 21) <= size and (base + gpa) & 0x1FFFFF == 0:
                    struct.pack_into("<Q", ram, pd + 8 * i, (base + gpa) | EPT_RWX | EPT_WB | EPT_LARGE)
                    continue
                pt = alloc.alloc_frame()
                struct.pack_into("<Q", ram, pd + 8 * i, pt | EPT_RWX)
                for j in range(512):
                    g = gpa | (j << 12)
                    if g >= size:
                        break
                    struct.pack_into("<Q", ram, pt + 8 * j, (base + g) | EPT_RWX | EPT_WB)
        return pml4 | 3 << 3 | 6        # walk length 4, write-back (§24.6.11)

    def write_vmcs(self) -> None:
        """The VM-execution, exit and entry controls and the host state (SDM Vol. 3C
        §24.6-24.8, §24.5)."""
        cpu, w = self.host, self.h.vmwrite
        p = cpu.vmx.profile
        low = lambda kind: p.allowed(kind)[0]            # noqa: E731
        pin = low("pin") | C.PIN_EXTERNAL_INTERRUPT_EXITING
        proc = low("proc") | C.CPU_HLT_EXITING | C.CPU_UNCONDITIONAL_IO_EXITING | C.CPU_RDTSC_EXITING
        proc2 = 0
        if self.use_ept:
            proc |= C.CPU_ACTIVATE_SECONDARY
            proc2 = C.SEC_ENABLE_EPT | C.SEC_ENABLE_VPID | C.SEC_UNRESTRICTED_GUEST
            w("EPT_POINTER", self.build_ept())
            w("VIRTUAL_PROCESSOR_ID", self.vpid)
            self.cr0_mask, self.cr0_forced = CR0_NE, CR0_NE
            self.cr4_mask, self.cr4_forced = C.CR4_VMXE, C.CR4_VMXE
            w("EXCEPTION_BITMAP", 0)
        else:
            proc |= C.CPU_INVLPG_EXITING | C.CPU_CR3_LOAD_EXITING | C.CPU_CR3_STORE_EXITING
            self.cr0_mask = CR0_PE | CR0_WP | CR0_NE | CR0_PG
            self.cr0_forced = self.cr0_mask
            self.cr4_mask, self.cr4_forced = C.CR4_VMXE | CR4_PSE | CR4_PGE, C.CR4_VMXE
            w("EXCEPTION_BITMAP", 1 << PF_VEC)
        self.proc = proc
        w("PIN_BASED_VM_EXEC_CONTROL", pin)
        w("CPU_BASED_VM_EXEC_CONTROL", proc)
        w("SECONDARY_VM_EXEC_CONTROL", proc2)
        w("VM_EXIT_CONTROLS", low("exit"))
        w("VM_ENTRY_CONTROLS", low("entry"))
        w("CR0_GUEST_HOST_MASK", self.cr0_mask)
        w("CR4_GUEST_HOST_MASK", self.cr4_mask)
        w("VMCS_LINK_POINTER", 0xFFFFFFFF)
        w("VMCS_LINK_POINTER_HIGH" if False else 0x2801, 0xFFFFFFFF)
        w("HOST_CR0", cpu.cr0)
        w("HOST_CR3", cpu.cr3)
        w("HOST_CR4", cpu.cr4)
        w("HOST_CS_SELECTOR", 0x08)
        for s in ("SS", "DS", "ES", "FS", "GS"):
            w(f"HOST_{s}_SELECTOR", 0x10)
        w("HOST_TR_SELECTOR", 0x18)

    # -- guest state: VMCS <-> virtual CPU ------------------------------------------------
    def load_vcpu(self) -> None:
        """The guest's state into the virtual CPU: the VMCS guest-state area, the
        general registers from the host CPU (a VM exit leaves them there), the guest's
        view of CR0/CR4 through the read shadows, and the guest's CR3 (shadow paging)."""
        vcpu, cpu, v = self.vm.vcpu, self.host, self.vmcs
        vcpu.regs[:] = cpu.regs
        load_guest(vcpu, v)
        vcpu.cr0 = (vcpu.cr0 & ~self.cr0_mask) | (v["CR0_READ_SHADOW"] & self.cr0_mask)
        vcpu.cr4 = (vcpu.cr4 & ~self.cr4_mask) | (v["CR4_READ_SHADOW"] & self.cr4_mask)
        if self.shadow is not None:
            vcpu.cr3 = self.guest_cr3
        vcpu.paging = bool(vcpu.cr0 & CR0_PG)
        vcpu.update_ac()
        vcpu.flush_tlb(keep_global=False)
        vcpu.dr[:7] = cpu.dr[:7]
        debug_update(vcpu)
        vcpu.halted = self.halted
        vcpu.tsc_offset = self.guest_tsc + self.direct()
        vcpu.cr2 = self.guest_cr2

    def store_vcpu(self) -> None:
        """The virtual CPU's state back into the VMCS (and the general registers onto the
        host CPU), with the monitor's bits in CR0/CR4 and, without EPT, the shadow CR3."""
        vcpu, cpu, v = self.vm.vcpu, self.host, self.vmcs
        save_guest(vcpu, v)
        v["GUEST_CR0"] = (vcpu.cr0 & ~self.cr0_mask) | self.cr0_forced
        v["CR0_READ_SHADOW"] = vcpu.cr0
        v["GUEST_CR4"] = (vcpu.cr4 & ~self.cr4_mask) | self.cr4_forced
        v["CR4_READ_SHADOW"] = vcpu.cr4
        if self.shadow is not None:
            self.guest_cr3 = vcpu.cr3
            v["GUEST_CR3"] = self.shadow.pd
        v["GUEST_ACTIVITY_STATE"] = 0
        self.halted = vcpu.halted
        cpu.regs[:] = vcpu.regs
        cpu.dr[:7] = vcpu.dr[:7]
        self.guest_tsc = vcpu.tsc_offset - self.direct()
        self.guest_cr2 = cpu.cr2 = vcpu.cr2

    # -- accounting ------------------------------------------------------------------------
    def direct(self) -> int:
        return self.direct_done + (self.host.icount - self.slice_start if self.on_host else 0)

    def direct_deliveries(self) -> int:
        return self.deliveries_done + (self.host.deliveries - self.deliveries_start if self.on_host else 0)

    def instructions(self) -> int:
        return self.direct() + self.vm.vcpu.icount

    def steps(self) -> int:
        vcpu = self.vm.vcpu
        return self.direct() + self.direct_deliveries() + vcpu.icount + vcpu.deliveries

    # -- world switch (several VMs on one host CPU: vmm/scheduler.py) -----------------------
    def leave(self) -> None:
        """Take this VM off the host CPU: the guest's general and debug registers, which
        the VMCS does not hold, are kept with the monitor."""
        if not self.on_host:
            return
        cpu = self.host
        self.saved_regs, self.saved_dr = cpu.regs[:], cpu.dr[:7]
        self.direct_done += cpu.icount - self.slice_start
        self.deliveries_done += cpu.deliveries - self.deliveries_start
        self.on_host = False

    def enter(self) -> None:
        """Put this VM on the host CPU: VMPTRLD of its VMCS (SDM Vol. 3C §24.11.3)."""
        if self.on_host:
            return
        cpu = self.host
        self.h.vmptrld(self.vmcs_region)
        cpu.regs[:], cpu.dr[:7] = self.saved_regs, self.saved_dr
        cpu.auditor = self.auditor
        cpu.stop = None
        self.slice_start, self.deliveries_start = cpu.icount, cpu.deliveries
        self.on_host = True

    def charge(self, kind: str, reason: str, cycles: int, eip: int = 0, ins=None, detail=None) -> None:
        self.extra_cycles += cycles
        raw, text = b"", ""
        if self.log.keep or self.log.trace_file is not None:
            detail = dict(detail or {}, at=self.instructions())
            if ins is not None:
                from ...machine.cpu.translate import disassemble
                text = disassemble(ins)
        self.log.log(Event(self.name, kind, reason, eip, raw, text, detail or {}, cycles))

    # -- the dispatcher's arms --------------------------------------------------------------
    def _resume(self, exit) -> None:
        return None

    def _machine_stopped(self, exit: MachineStopped) -> MachineStop:
        return exit.stop

    def _deadline_moved(self) -> None:
        if self.in_run:
            self.host.request_exit()

    def _guest_invlpg(self, lin) -> None:
        if lin is not None and self.shadow is not None:
            self.shadow.invalidate_page(lin)

    def on_vm_exit(self, exit: VmExit):
        """One VM exit, by its basic reason (SDM Vol. 3C Appendix C)."""
        v, basic, costs = self.vmcs, exit.basic, self.costs
        self.exit_counts[basic] = self.exit_counts.get(basic, 0) + 1
        if not (basic == 0 and self.shadow is not None and v["VM_EXIT_INTR_INFO"] & 0xFF == PF_VEC):
            self.guest_cr2 = self.host.cr2        # the guest's own CR2 (it may have faulted since)
        cycles = costs.vm_exit_entry
        eip = v["GUEST_RIP"]
        detail = None
        ins = None
        if self.log.keep or self.log.trace_file is not None:
            detail = {"qualification": v["EXIT_QUALIFICATION"]}
            if basic == 48:
                detail["guest_physical"] = v["GUEST_PHYSICAL_ADDRESS"]
        if exit.entry_failure:
            # Invalid guest state (§26.3.1): a state the guest reached that VMX cannot
            # enter, e.g. a segment register no descriptor could give.  Emulate one
            # instruction on the virtual CPU and try again (as KVM does).
            self.load_vcpu()
            ins = self.emulate()
            cycles += costs.interpreter_routine
        elif basic == 0:
            stop = self.on_exception(v)
            if stop is not None:
                return stop
            cycles += costs.shadow_fill if self.last_fill else costs.interpreter_routine
        elif basic == 9:
            ins = self.on_task_switch(v)
            cycles += costs.interpreter_routine
        elif basic == 2:
            return MachineStop("triple fault", "a triple fault in VMX non-root operation "
                                               "(EXIT_REASON_TRIPLE_FAULT)")
        elif basic in EMULATED:
            self.load_vcpu()
            ins = self.emulate()
            cycles += costs.interpreter_routine
        elif basic == 49:
            return MachineStop("monitor error", f"EPT misconfiguration at guest-physical "
                                                f"{v['GUEST_PHYSICAL_ADDRESS']:#x}")
        self.exit_cycles[basic] = self.exit_cycles.get(basic, 0) + cycles
        self.charge(EXIT, exit.name, cycles, eip, ins, detail)
        return None

    def on_task_switch(self, v):
        """A task switch (unconditional exit, SDM Vol. 3C §25.1.2): performed on the virtual
        CPU -- by re-executing the CALL, JMP, IRET or INT n, or, for an event through a
        task gate (source 3), by delivering the event named in the IDT-vectoring
        information (§27.2.4)."""
        from ...machine.cpu.cpu import CpuFault
        from ...machine.cpu.interrupts import deliver_event
        idt = v["IDT_VECTORING_INFO_FIELD"]
        kind = (idt >> 8) & 7
        self.load_vcpu()
        if not idt >> 31 or v["EXIT_QUALIFICATION"] >> 30 != 3 or kind == 4:
            return self.emulate()
        vcpu = self.vm.vcpu
        before = SystemState(vcpu)
        vector = idt & 0xFF
        error = v["IDT_VECTORING_ERROR_CODE"] if idt & (1 << 11) else None
        if kind == 0:
            try:
                deliver_event(vcpu, vector, None, kind="external")
            except CpuFault as f:
                vcpu.raise_exception(f.vector, f.error_code)
        else:
            vcpu.raise_exception(vector, error)
        self.after_emulate(before)
        self.store_vcpu()
        return None

    def emulate(self):
        """An interpreter routine: the instruction at the guest's EIP on the virtual CPU."""
        vcpu = self.vm.vcpu
        before = SystemState(vcpu)
        ins, _ = interpret(vcpu)
        self.after_emulate(before)
        self.store_vcpu()
        return ins

    def after_emulate(self, before: SystemState) -> None:
        """Shadow paging's turn (vtx-noept): a change of paging mode drops every shadow,
        a CR3 load switches to the shadow of the new address space."""
        if self.shadow is None:
            return
        vcpu = self.vm.vcpu
        if (vcpu.cr0 ^ before.cr0) & (CR0_PG | CR0_WP) or (vcpu.cr4 ^ before.cr4) & (CR4_PSE | CR4_PGE):
            self.shadow.reset()
            self.extra_cycles += self.costs.shadow_flush
        elif vcpu.cr3 != before.cr3:
            self.extra_cycles += self.costs.shadow_switch if self.shadow.switch() else self.costs.shadow_flush

    last_fill = False

    def on_exception(self, v):
        """An exception the exception bitmap intercepts: #PF under shadow paging."""
        self.last_fill = False
        info = v["VM_EXIT_INTR_INFO"]
        vector = info & 0xFF
        self.load_vcpu()
        vcpu = self.vm.vcpu
        if vector != PF_VEC or self.shadow is None:
            error = v["VM_EXIT_INTR_ERROR_CODE"] if info & (1 << 11) else None
            vcpu.raise_exception(vector, error)
            self.store_vcpu()
            return None
        lin = self.host.cr2
        outcome = self.shadow.handle_fault(lin, bool(v["VM_EXIT_INTR_ERROR_CODE"] & 2))
        if outcome == FILLED:
            self.last_fill = True
            self.host.cr2 = self.guest_cr2       # a hidden fault leaves the guest's CR2 alone
            return None
        if outcome == REFLECTED:
            vcpu.cr2 = lin
            vcpu.raise_exception(PF_VEC, self.shadow.guest_error)
        else:
            gpa = self.shadow.last_gpa
            write = bool(v["VM_EXIT_INTR_ERROR_CODE"] & 2)
            traced = write and gpa is not None and (gpa & ~0xFFF) in self.shadow.traced
            before = SystemState(vcpu)
            interpret(vcpu)
            if traced:
                self.shadow.traced_write(gpa)
                self.extra_cycles += self.costs.shadow_update
            self.after_emulate(before)
        self.store_vcpu()
        return None

    # -- injection --------------------------------------------------------------------------
    def prepare_injection(self) -> None:
        """A pending interrupt of the VM's devices goes into the VM-entry interruption-
        information field if the guest can take it now (IF = 1, no STI/MOV-SS blocking,
        §26.3.1.5); otherwise interrupt-window exiting brings the guest back when it can."""
        v = self.vmcs
        intc = self.vm.devices.intc
        want_window = False
        if intc.interrupt_pending() and not v["VM_ENTRY_INTR_INFO_FIELD"] >> 31:
            if v["GUEST_RFLAGS"] & IF and not v["GUEST_INTERRUPTIBILITY_INFO"] & 3:
                vector = intc.acknowledge()
                if vector is not None:
                    self.h.vmwrite("VM_ENTRY_INTR_INFO_FIELD", 1 << 31 | vector)
                    self.charge(INJECT, "interrupt injected (VM-entry interruption information)",
                                self.costs.inject_interrupt, v["GUEST_RIP"], detail={"vector": vector})
            else:
                want_window = True
        if want_window != self.window:
            self.window = want_window
            proc = self.proc | (C.CPU_INTERRUPT_WINDOW_EXITING if want_window else 0)
            self.h.vmwrite("CPU_BASED_VM_EXEC_CONTROL", proc)

    # -- the run loop -----------------------------------------------------------------------
    def run_slice(self, until: int, max_instructions: int) -> bool:
        t0 = time.perf_counter()
        try:
            self.stop_reason = reason = self._run(until, max_instructions)
        except MachineStop as stop:       # raised from translation (e.g. fetch outside RAM)
            self.stop_reason = reason = stop
        except RecursionError:
            self.stop_reason = reason = MachineStop("monitor recursion",
                                                    "exception delivery recursed without end")
        finally:
            self.seconds += time.perf_counter() - t0
        return reason is not None or self.vm.exit_code is not None

    def _run(self, until: int, max_instructions: int):
        cpu, vm, vcpu, clock = self.host, self.vm, self.vm.vcpu, self.vm.clock
        dispatch = self.dispatcher.dispatch
        slice_end = min(until, max_instructions)
        reason = None
        watchdog = LivelockWatchdog()
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
            if self.deadline is not None and time.perf_counter() > self.deadline:
                reason = MachineStop("time limit", f"{self.options.max_seconds} s of host time")
                break
            if total >= slice_end:
                return None
            if self.halted:
                if not self.vmcs["GUEST_RFLAGS"] & IF:
                    reason = MachineStop("halted forever", "HLT with interrupts disabled (IF=0)")
                    break
                if not vm.devices.intc.interrupt_pending():
                    if not clock.skip_to_next_deadline():
                        reason = MachineStop("halted forever", clock.idle_stop or "HLT with no timer armed")
                        break
                    clock.run_due()
                    continue
                self.halted = vcpu.halted = False
                self.vmcs["GUEST_INTERRUPTIBILITY_INFO"] = 0     # HLT ended any STI shadow
            self.prepare_injection()
            failure = self.h.launch() if not self.launched else self.h.resume()
            self.launched = True
            if failure is not None:
                exit = failure
            else:
                budget = slice_end - total
                if self.deadline is not None:
                    # The host looks at its clock this often: a tenth of the bare PC's step,
                    # since a guest's own faults, delivered in non-root operation, cost the
                    # simulation far more than its instructions (tests/vmm/test_limits.py).
                    budget = min(budget, TIME_STEP // 10)
                due = clock.next_deadline()
                if due < clock.NEVER:
                    budget = max(1, min(budget, clock.instructions_until(due)))
                self.in_run = True
                exit = cpu.run(budget)
                self.in_run = False
                if exit.__class__ in (BudgetExhausted, Preempted):
                    # The monitor's time is up: its own interrupt takes the CPU back.
                    exit = self.h.host_interrupt() or exit
            stop = dispatch(exit)
            if stop is not None:
                reason = stop
                break
            if watchdog.stuck(self.steps()):
                reason = MachineStop("monitor livelock", f"{MAX_IDLE_EXITS} VM exits in a row "
                                                         f"without a guest step, at EIP {self.vmcs['GUEST_RIP']:#x}")
                break
            clock.run_due()
        return reason

    def result(self) -> TechniqueResult:
        vm, vcpu = self.vm, self.vm.vcpu
        reason = self.stop_reason
        direct = self.direct()
        total = direct + vcpu.icount
        walks = self.host.vmx.ept_walks
        cycles = direct * self.costs.direct_instruction + self.extra_cycles + walks * self.costs.ept_walk
        result = TechniqueResult(
            self.name, "strict" if self.strict else "standard", vm.output, vm.exit_code,
            reason.reason if reason else None, reason.detail if reason else "",
            total, direct, cycles, self.seconds, self.log)
        result.exits = self.dispatcher.statistics()
        result.steps = self.steps()
        rows = []
        for basic, n in sorted(self.exit_counts.items(), key=lambda kv: -kv[1]):
            rows.append(f"{EXIT_REASONS.get(basic, basic)} {n:,} (mean "
                        f"{self.exit_cycles.get(basic, 0) / n:,.0f} cycles)")
        result.notes.append("VM exits by reason: " + (", ".join(rows) if rows else "none"))
        if self.use_ept:
            result.notes.append(f"EPT: {walks:,} guest-physical walks (TLB misses), "
                                f"{walks * self.costs.ept_walk:,} cycles")
        if self.shadow is not None:
            sp = self.shadow
            result.notes.append(
                f"shadow paging: {sp.fills:,} hidden-fault fills, {sp.updates:,} traced updates, "
                f"{sp.switches:,} CR3 switches ({sp.cache_hits:,} cached), {sp.flushes:,} shadows built")
        if self.auditor is not None:
            result.audit = self.auditor.records
        return result


@register
class VtxNoEpt(Vtx):
    name = "vtx-noept"
    summary = ("hardware assist without EPT (the early VT-x profile): VMX non-root operation "
               "with shadow page tables kept by the monitor")
    use_ept = False
    host_vmx = profile = "early"
