"""``pv``: paravirtualization after Xen (Barham et al., SOSP 2003).

The guest kernel is ported to the hypervisor: instead of executing sensitive
instructions it calls the hypervisor (hypercalls.py), and the hypervisor
validates what it asks for.  The kernel runs at ring 1 and its applications
at ring 3, directly on the host CPU; the hypervisor owns ring 0 and the top
64 MiB of every address space (the hole: abi.HYPERVISOR_VIRT_START), which
every guest segment stops short of.  The guest's page tables are real
(mm.py); there is no shadow and no interpreter: the host CPU only leaves
guest code for a hypercall (INT 0x82), an exception or software interrupt
to bounce to the guest's own handler (registered with set_trap_table), an
I/O port the domain was given (PHYSDEVOP_set_iopl), or the end of a budget.
Device interrupts are events (events.py), delivered through the guest's
event callback when its shared_info mask allows.

What a bounce is (Xen's create_bounce_frame, x86-32): the hypervisor writes
an exception frame on the guest kernel's stack -- from ring 3, on the stack
given by stack_switch, with SS:ESP first -- and enters the handler at ring 1;
the saved EFLAGS.IF is the virtual one (not the event mask).  The guest
returns with the iret hypercall, which restores the event mask from it.
"""

from __future__ import annotations

import time
from collections import Counter

from ....events import EventLog, Event
from ....machine.cpu import MachineStop
from ....machine.devices.ata_pio import AtaPio
from ....machine.cpu.constants import CR0_ET, CR0_NE, CR0_PE, CR0_PG, CR0_TS, CR0_WP, CS, EXCEPTION_NAMES, SS
from ....machine.cpu.cpu import CpuFault
from ....machine.cpu.descriptors import (
    d_dpl, d_is_code, d_is_data, d_present, descriptor_address, invalidate_outer_segments, load_cache,
)
from ....machine.cpu.exits import (
    BudgetExhausted, ExceptionExit, GuestExit, IoExit, MachineStopped, Preempted,
)
from ...dispatcher import Dispatcher
from ...monitor import MAX_IDLE_EXITS, Host, LivelockWatchdog, Monitor, RunOptions, register
from ...vm import VM
from ..base import TechniqueResult
from .abi import (
    FIRST_RESERVED_GDT_PAGE, FLAT_RING1_CS, FLAT_RING1_DS, HYPERCALL_NAMES, HYPERCALL_VECTOR,
    HYPERVISOR_GDT_VIRT, VI_CR2, VIRQ_TIMER,
)
from .console import ConsoleBackend
from .domain import IDT_VIRT, TSS_VIRT, HypervisorHole, build_domain, is_pv_kernel, write_start_info
from .events import EventChannels
from .blkif import BlockBackend
from .grants import GrantTable
from .guestmem import GuestFault, GuestMemory
from .hypercalls import Hypercalls
from .mm import L2, PAGE, SEGDESC, FrameTable, MmError
from .segments import DescriptorError, check_descriptor

HOST_CR0 = CR0_PE | CR0_PG | CR0_WP | CR0_ET | CR0_NE
ALL_EXCEPTIONS = (1 << 32) - 1
EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI = range(8)
IF, IOPL_MASK, TF, NT, RF, VM_FLAG = 1 << 9, 3 << 12, 1 << 8, 1 << 14, 1 << 16, 1 << 17
# EFLAGS bits an IRET at ring 1 may set (status, TF, DF, AC, ID); IF and IOPL are virtual.
IRET_FLAGS = 0x0CD5 | TF | (1 << 18) | (1 << 21)
ERROR_CODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17})
FAST_TRAP_VECTOR = 0x80
ALL_BUT_FAST_TRAP = frozenset(range(256)) - {FAST_TRAP_VECTOR}
TIME_CHECK_EVERY = 200_000     # instructions per host run when a wall-time limit is set


class DomainCrash(Exception):
    """The domain cannot go on (Xen's domain_crash): its VM stops with the reason."""


@register
class Pv(Monitor):
    name = "pv"
    summary = ("paravirtualization after Xen: a ported kernel at ring 1 calls the hypervisor "
               "(hypercalls, validated page tables, event channels)")
    honours = frozenset({"trace_file", "disk"})
    uses_host = True
    time_sliced = True
    # A PV kernel still runs the unprivileged sensitive instructions its port keeps
    # (PUSHF in cpu_read_flags, segment-register reads in the probe); on the strict
    # CPU they fault at ring 1, so pv presents the standard CPU only.
    strict_cpu = False
    paravirtual = True

    @classmethod
    def guest_kernel(cls, kernel: str) -> str:
        """The PV build of a bundled guest: ``tvos`` -> ``tvos-pv`` (guest.toml's
        ``paravirt`` key).  A kernel that is already paravirtual is used as it is."""
        if is_pv_kernel(kernel):
            return kernel
        from ....guests import paravirt_variant
        return str(paravirt_variant(kernel) or kernel)

    def __init__(self, options: RunOptions, host: Host | None = None):
        super().__init__(options, host)
        if host is None:
            host = Host([options.memory_bytes], strict=options.strict)
        self.alloc, self.host, self.mem = host.allocator, host.cpu, host.memory
        self.vm = vm = VM(self.alloc, options.memory_bytes, name=options.name,
                          serial_out=options.serial_out, strict=options.strict, disk=options.disk)
        self.sink = vm.console.write if options.serial_out is None else vm._tee(options.serial_out)
        vm.instructions = self.instructions
        self.partition = vm.partition
        self.base = vm.partition.base
        self.log = EventLog(keep=options.keep_events, trace_file=options.trace_file)
        self.counts: Counter = Counter()
        self.extra_cycles = 0
        self.deliveries = 0
        self.io_instructions = 0
        self.int_instructions = 0
        self.refusals: list[str] = []
        self.stop_reason: MachineStop | None = None
        self.traps: dict[int, tuple] = {}
        self.kernel_ss, self.kernel_sp = FLAT_RING1_DS, 0
        self.event_callback = self.failsafe_callback = None
        self.iopl = 0
        self.gdt_frames: list[int] = []
        self.periodic = None
        self.singleshot = None
        self.in_run = False
        # The host CPU's counts are shared by the VMs on it: this VM's are those of its
        # earlier slices plus the current one's.
        self.direct_done = self.fast_done = 0
        self.slice_icount, self.slice_deliveries = self.host.icount, self.host.deliveries
        self.on_host = True
        self.saved = None
        self.fast_trap = None            # (cs, eip) of the INT 0x80 gate in the host IDT
        # Its own M2P (only its frames are named) and GDT area: a domain sees no other's.
        self.hole = HypervisorHole(self.mem, self.alloc, [vm.partition])
        shared_info = self.alloc.alloc_frame()
        self.layout = lay = build_domain(self.mem, self.alloc, self.partition, options.kernel,
                                         options.cmdline)
        self.frames = FrameTable(self.mem, lay.first_mfn, lay.nr_pages, shared_mfns=(shared_info >> 12,),
                                 hypervisor_l2=self.hole.l2_slots, on_type_lost=self._type_lost)
        self.events = EventChannels(self.mem, shared_info)
        self.console = ConsoleBackend(self.mem, self.base + lay.console, self.sink)
        console_port = self.events.bind_backend("console", self.console.notified)
        self.grants = GrantTable(self.mem, self.alloc, self.frames)
        self.blk = None
        blk_port, sectors = 0, 0
        disk = next((d for _, d in vm.devices if isinstance(d, AtaPio)), None)
        if disk is not None and disk.present:
            self.blk = BlockBackend(self.mem, self.base + lay.blk_ring, disk, self.grants,
                                    lambda: self.events.set_pending(blk_port))
            blk_port = self.events.bind_backend("block", self.blk.notified)
            sectors = disk.sectors
        write_start_info(self.mem, self.base, lay, shared_info_ma=shared_info,
                         console_evtchn=console_port, cmdline=options.cmdline,
                         blk_evtchn=blk_port, blk_sectors=sectors)
        self.guest = GuestMemory(self.mem, self.host)
        self.hypercalls = Hypercalls(self)
        self.dispatcher = Dispatcher({
            ExceptionExit: self.on_exception, IoExit: self.on_io,
            BudgetExhausted: self._resume, Preempted: self._resume,
            GuestExit: self._resume, MachineStopped: lambda e: e.stop,
        })
        vm.clock.on_earlier_deadline = self._deadline_moved
        self._boot_cpu()

    # -- boot -------------------------------------------------------------------------
    def _boot_cpu(self) -> None:
        host, lay = self.host, self.layout
        l2 = lay.first_mfn + lay.pt_base // PAGE
        try:
            self.frames.pin(l2, L2)             # the builder pins the bootstrap tables
            self.frames.get_page_and_type(l2, L2)   # ... and CR3 holds a reference
        except MmError as e:
            raise AssertionError(f"bootstrap page tables do not validate: {e}") from None
        host.set_cr0(HOST_CR0)
        host.set_cr4(0)
        host.set_cr3(l2 << 12)
        host.gdtr = (HYPERVISOR_GDT_VIRT, 0xFFFF)
        # The host IDT holds one gate at most, the fast system-call trap; the TSS gives
        # its ring-1 stack (stack_switch).  Every other event exits.
        host.idtr = (IDT_VIRT, 0x7FF)
        host.tr, host.tr_base, host.tr_limit, host.tr_attr = 0, TSS_VIRT, 0x67, 0x8B
        host.ldtr, host.ldt_base, host.ldt_limit = 0, 0, 0
        ic = host.intercepts
        ic.clear()
        ic.exception_bitmap = ALL_EXCEPTIONS
        ic.software_interrupt_exiting = True
        ic.external_interrupt_exiting = True
        ic.io_exiting = True
        host.set_cpl(1)
        self.load_segment(CS, FLAT_RING1_CS)
        for s in range(6):
            if s != CS:
                self.load_segment(s, FLAT_RING1_DS)
        host.set_eflags(0x2 | IF)
        host.regs[:] = [0] * 8
        host.regs[ESI] = lay.start_info
        host.regs[ESP] = lay.stack_top
        host.eip = lay.entry

    def load_segment(self, s: int, sel: int) -> None:
        """Load a segment register of the host from the domain's GDT (checked)."""
        host = self.host
        if sel & ~3 == 0:
            if s in (CS, SS):
                raise DomainCrash(f"null selector for {'CS' if s == CS else 'SS'}")
            host.set_segment_cache(s, sel, 0, 0, 0)
            return
        addr = descriptor_address(host, sel)
        if addr is None:
            raise DomainCrash(f"selector {sel:#x} beyond the GDT")
        d = host.sys_read(addr, 8)
        rpl, dpl = sel & 3, d_dpl(d)
        if not d_present(d) or (s == CS and (not d_is_code(d) or dpl != rpl)) or \
                (s == SS and (not d_is_data(d) or dpl != rpl or not d >> 41 & 1)) or rpl == 0:
            raise DomainCrash(f"selector {sel:#x} cannot be loaded into segment register {s}")
        load_cache(host, s, sel, d)

    def check_code_selector(self, cs: int) -> None:
        if cs & 3 == 0:
            raise DescriptorError(22, f"code selector {cs:#x} has RPL 0")

    def check_stack_selector(self, ss: int) -> None:
        if ss & 3 == 0:
            raise DescriptorError(22, f"stack selector {ss:#x} has RPL 0")

    # -- accounting ------------------------------------------------------------------------
    def direct(self) -> int:
        # INT n that exited (hypercalls, bounced software interrupts) were executed by the
        # host CPU, which trapped on them as hardware traps to ring 0: they count too.
        return self.direct_done + (self.host.icount - self.slice_icount if self.on_host else 0) \
            + self.int_instructions

    def fast_traps(self) -> int:
        return self.fast_done + (self.host.deliveries - self.slice_deliveries if self.on_host else 0)

    def instructions(self) -> int:
        return self.direct() + self.io_instructions

    def steps(self) -> int:
        # The hypervisor's bounces and upcalls, and the host CPU's own deliveries (fast traps).
        return self.instructions() + self.deliveries + self.fast_traps()

    # -- world switch (several VMs on one host CPU: vmm/scheduler.py) ------------------
    STATE = ("eip", "cr0", "cr2", "cr3", "cr4", "gdtr", "idtr", "tr", "tr_base", "tr_limit", "tr_attr",
             "ldtr", "ldt_base", "ldt_limit")

    def leave(self) -> None:
        """Take the domain off the host CPU: everything of the CPU that is its."""
        if not self.on_host:
            return
        h = self.host
        ic = h.intercepts
        self.saved = ({k: getattr(h, k) for k in self.STATE}, list(h.regs), h.get_eflags(), h.cpl,
                      [(h.sel[s], h.base[s], h.limit[s], h.attr[s]) for s in range(6)],
                      ic.software_interrupt_exiting)
        self.direct_done += h.icount - self.slice_icount
        self.fast_done += h.deliveries - self.slice_deliveries
        self.on_host = False

    def enter(self) -> None:
        if self.on_host:
            return
        h = self.host
        state, regs, eflags, cpl, segs, sie = self.saved
        ic = h.intercepts
        ic.clear()
        ic.exception_bitmap = ALL_EXCEPTIONS
        ic.software_interrupt_exiting = sie
        ic.external_interrupt_exiting = True
        ic.io_exiting = True
        h.stop = None
        h.halted = False
        h.set_cr0(state["cr0"])
        h.set_cr4(state["cr4"])
        h.set_cr3(state["cr3"])          # flushes the TLB
        h.flush_tlb(keep_global=False)
        for k in self.STATE:
            if k not in ("cr0", "cr3", "cr4"):
                setattr(h, k, state[k])
        h.regs[:] = regs
        h.set_cpl(cpl)
        for s, (sel, base, limit, attr) in enumerate(segs):
            h.set_segment_cache(s, sel, base, limit, attr)
        h.set_eflags(eflags)
        self.slice_icount, self.slice_deliveries = h.icount, h.deliveries
        self.on_host = True

    def charge(self, kind: str, reason: str, cycles: int) -> None:
        self.extra_cycles += cycles
        self.log.log(Event(self.name, kind, reason, self.host.eip, b"", "", {}, cycles))

    def note_refusal(self, nr: int, err) -> None:
        self.refusals.append(f"{HYPERCALL_NAMES.get(nr, nr)}: {err}")
        self.counts["refused"] += 1

    def _type_lost(self, mfn: int) -> None:
        # A frame that was writable is now a table: no stale writable translation may survive.
        self.host.flush_tlb(keep_global=False)

    def _deadline_moved(self) -> None:
        if self.in_run:
            self.host.request_exit()

    # -- services the hypercalls use ----------------------------------------------------------
    def set_kernel_stack(self, ss: int, esp: int) -> None:
        self.kernel_ss, self.kernel_sp = ss, esp
        tss = self.hole.tss
        self.mem.write_u32(tss + 12, esp)           # ESP1, SS1 (SDM Vol. 3A §7.2.1)
        self.mem.write_u32(tss + 16, ss)

    def update_fast_trap(self) -> None:
        """Xen's fast trap (x86-32 set_fast_trap): INT 0x80 goes straight from ring 3 to
        the guest's handler through a DPL-3 trap gate of the host IDT, without the
        hypervisor -- if the guest's entry allows it: DPL 3, and no event masking on
        entry (no gate can clear the event mask; an interrupt gate's IF is the host's)."""
        idt = self.hole.idt
        self.mem.write(idt + 8 * FAST_TRAP_VECTOR, bytes(8))
        entry = self.traps.get(FAST_TRAP_VECTOR)
        ic = self.host.intercepts
        if entry is None or entry[0] & 3 != 3 or entry[0] & 4 or entry[1] & 3 != 1:
            self.fast_trap = None
            ic.software_interrupt_exiting = True
            return
        flags, cs, eip = entry
        gate = (eip & 0xFFFF) | (cs & 0xFFFF) << 16 | (0xEF00 | (eip >> 16) << 16) << 32
        self.mem.write(idt + 8 * FAST_TRAP_VECTOR, gate.to_bytes(8, "little"))
        self.fast_trap = (cs, eip)
        ic.software_interrupt_exiting = ALL_BUT_FAST_TRAP

    def new_baseptr(self, mfn: int) -> None:
        self.frames.get_page_and_type(mfn, L2)
        old = self.host.cr3 >> 12
        self.host.set_cr3(mfn << 12)
        self.frames.put_page_and_type(old)

    def install_gdt(self, frames: list[int], entries: int) -> None:
        """set_gdt: type each frame a descriptor page (no writable mapping may exist),
        validate every descriptor, map the frames into the GDT area."""
        ft = self.frames
        taken = []
        try:
            for mfn in frames:
                ft.get_page_and_type(mfn, SEGDESC)
                taken.append(mfn)
                first = 512 * (len(taken) - 1)
                for i in range(512):
                    at = (mfn << 12) + 8 * i
                    d = int.from_bytes(self.mem.ram[at:at + 8], "little")
                    if first + i >= entries:
                        if d:
                            raise DescriptorError(22, f"GDT frame {mfn:#x} holds data past its {entries} entries")
                        continue
                    fixed = check_descriptor(d)
                    if fixed != d:
                        self.mem.write((mfn << 12) + 8 * i, fixed.to_bytes(8, "little"))
        except (MmError, DescriptorError):
            for mfn in taken:
                ft.put_page_and_type(mfn)
            raise
        for mfn in self.gdt_frames:
            ft.put_page_and_type(mfn)
        self.gdt_frames = list(frames)
        for i in range(FIRST_RESERVED_GDT_PAGE):
            self.hole.map_gdt_page(i, frames[i] << 12 if i < len(frames) else self.hole.zero_frame)
        self.host.flush_tlb(keep_global=False)

    def set_ts(self, on: bool) -> None:
        cr0 = self.host.cr0
        self.host.set_cr0(cr0 | CR0_TS if on else cr0 & ~CR0_TS)

    def set_iopl(self, iopl: int) -> None:
        self.iopl = iopl
        f = self.host.get_eflags()
        self.host.set_eflags(f & ~IOPL_MASK | iopl << 12)

    def _timer_fired(self, periodic: bool):
        def fire():
            if periodic and self.periodic is not None:
                period = self.periodic[0]
                self.periodic = (period, self.vm.clock.add_timer(self.vm.clock.now_ns() + period,
                                                                 self._timer_fired(True)))
            elif not periodic:
                self.singleshot = None
            self.events.raise_virq(VIRQ_TIMER)
        return fire

    def set_periodic(self, period_ns: int) -> None:
        clock = self.vm.clock
        if self.periodic is not None:
            clock.cancel(self.periodic[1])
            self.periodic = None
        if period_ns:
            self.periodic = (period_ns, clock.add_timer(clock.now_ns() + period_ns, self._timer_fired(True)))

    def set_singleshot(self, deadline_ns: int) -> None:
        clock = self.vm.clock
        if self.singleshot is not None:
            clock.cancel(self.singleshot)
            self.singleshot = None
        if deadline_ns:
            self.singleshot = clock.add_timer(max(deadline_ns, clock.now_ns()), self._timer_fired(False))

    def block(self) -> int:
        """SCHEDOP_block: enable events and sleep until one is pending."""
        ev, clock = self.events, self.vm.clock
        ev.upcall_mask = 0
        while not ev.upcall_pending:
            if not clock.skip_to_next_deadline():
                raise DomainCrash(clock.idle_stop or "SCHEDOP_block with no timer armed: blocked forever")
            clock.run_due()
        return 0

    def shutdown(self, reason: int, code: int) -> None:
        # The run's exit code as the debug-exit device reports it (2v+1, QEMU's
        # isa-debug-exit convention), so that it compares with the bare PC's.
        self.vm.exit_code = (code & 0xFF) << 1 | 1

    def console_out(self, data: bytes) -> None:
        self.sink(data)

    # -- the dispatcher's arms ---------------------------------------------------------------
    def _resume(self, exit):
        return None

    def on_io(self, exit: IoExit):
        """A port the domain was given (PHYSDEVOP_set_iopl): the VM's own device model."""
        host = self.host
        if exit.string:
            raise DomainCrash(f"string I/O on port {exit.port:#x} (INS/OUTS) is not supported under pv")
        bus = self.vm.io_bus
        if exit.write:
            bus.write(exit.port, exit.size, exit.value)
        else:
            mask = (1 << (8 * exit.size)) - 1
            host.regs[EAX] = host.regs[EAX] & ~mask | bus.read(exit.port, exit.size) & mask
        host.eip = (host.eip + exit.length) & 0xFFFFFFFF
        self.io_instructions += 1
        self.counts["io port"] += 1
        self.charge("io", f"port {exit.port:#x}", self.costs.pv_hypercall)
        return self.vm.stop

    def on_exception(self, exit: ExceptionExit):
        host = self.host
        vector = exit.vector
        if exit.kind == "software" and host.eip == exit.instruction_ip:
            # The exit leaves EIP at the INT: the trap's return address is past it
            # (INT n is two bytes, INT3 and INTO one).
            try:
                opcode = self.guest.read(host.base[CS] + host.eip, 1)[0]
            except GuestFault:
                opcode = 0xCD
            host.eip = (host.eip + (2 if opcode == 0xCD else 1)) & 0xFFFFFFFF
        if exit.kind == "software":
            self.int_instructions += 1
        if exit.kind == "software" and vector == HYPERCALL_VECTOR:
            return self.hypercall()
        if exit.kind == "software":
            entry = self.traps.get(vector)
            if entry is not None and entry[0] & 3 >= (1 if host.cpl < 3 else 3):
                self.bounce(vector, None, entry, f"INT {vector:#x}")
                return None
            # The gate's DPL forbids it: #GP(vector*8+2) on the INT instruction.
            host.eip = exit.instruction_ip
            vector, error = 13, vector * 8 + 2
        elif exit.kind == "exception":
            error = exit.error_code
            if vector == 14:
                self.mem.write_u32(self.events.si + VI_CR2, host.cr2)
        else:
            return None
        entry = self.traps.get(vector)
        if entry is None:
            raise DomainCrash(f"{EXCEPTION_NAMES.get(vector, vector)} at EIP {host.eip:#x} "
                              f"and no handler registered with set_trap_table")
        self.bounce(vector, error if vector in ERROR_CODE_VECTORS else None, entry,
                    EXCEPTION_NAMES.get(vector, str(vector)))
        return None

    def hypercall(self):
        host = self.host
        r = host.regs
        nr = r[EAX]
        name = HYPERCALL_NAMES.get(nr, f"#{nr}")
        self.counts[f"hypercall {name}"] += 1
        self.charge("hypercall", name, self.costs.pv_hypercall)
        result = self.hypercalls.call(nr, [r[EBX], r[ECX], r[EDX], r[ESI], r[EDI]])
        if isinstance(result, MachineStop):
            return result
        if result is not None:
            host.regs[EAX] = result & 0xFFFFFFFF
        return self.vm.stop

    # -- bounces and the iret hypercall -------------------------------------------------------
    def bounce(self, vector: int, error, entry, why: str, *, upcall: bool = False) -> None:
        """Enter the guest's handler at ring 1 with an exception frame on its kernel stack."""
        host = self.host
        flags, cs, eip = entry
        eflags = host.get_eflags() & ~IF | (0 if self.events.upcall_mask else IF)
        frame = [host.eip, host.sel[CS], eflags]
        if host.cpl == 3:
            frame += [host.regs[ESP], host.sel[SS]]
            ss, sp = self.kernel_ss, self.kernel_sp
        else:
            ss, sp = host.sel[SS], host.regs[ESP]
        if error is not None:
            frame.insert(0, error)
        data = b"".join((v & 0xFFFFFFFF).to_bytes(4, "little") for v in frame)
        sp = (sp - len(data)) & 0xFFFFFFFF
        try:
            self.guest.write(sp, data)
        except GuestFault as e:
            raise DomainCrash(f"cannot bounce {why} to the guest: its kernel stack at {sp:#x} "
                              f"is not writable ({e})") from None
        from_user = host.cpl == 3
        host.set_cpl(1)
        self.load_segment(CS, cs)
        if from_user:
            self.load_segment(SS, ss)
        host.regs[ESP] = sp
        host.eip = eip
        host.set_eflags(host.get_eflags() & ~(TF | NT | RF | VM_FLAG) | IF)
        if upcall or flags & 4:
            self.events.upcall_mask = 1
        self.deliveries += 1
        kind = "upcall" if upcall else "bounce"
        self.counts[f"{kind} {why}"] += 1
        self.charge(kind, why, self.costs.pv_bounce)

    def do_iret(self):
        """HYPERVISOR_iret: [EAX, EIP, CS, EFLAGS, (ESP, SS)] on the guest stack."""
        host, g = self.host, self.guest
        sp = host.regs[ESP]
        words = [g.u32(sp + 4 * i) for i in range(4)]
        eax, eip, cs, eflags = words
        if cs & 3 == 0:
            cs |= 1                      # Xen's fixup: ring 0 is the hypervisor's
        to_user = cs & 3 == 3
        if to_user:
            esp, ss = g.u32(sp + 16), g.u32(sp + 20) & 0xFFFF
        else:
            esp, ss = sp + 16, host.sel[SS]
        try:
            host.set_cpl(cs & 3)
            self.load_segment(CS, cs & 0xFFFF)
            if to_user:
                self.load_segment(SS, ss)
                invalidate_outer_segments(host)
        except CpuFault as e:
            raise DomainCrash(f"iret to {cs:#x}:{eip:#x}: {e}") from None
        host.regs[EAX] = eax
        host.regs[ESP] = esp & 0xFFFFFFFF
        host.eip = eip
        host.set_eflags(eflags & IRET_FLAGS | 0x2 | IF | self.iopl << 12)
        self.events.upcall_mask = 0 if eflags & IF else 1
        return None

    # -- the run loop ---------------------------------------------------------------------------
    def run_slice(self, until: int, max_instructions: int) -> bool:
        t0 = time.perf_counter()
        try:
            self.stop_reason = reason = self._run(until, max_instructions)
        finally:
            self.seconds += time.perf_counter() - t0
        return reason is not None or self.vm.exit_code is not None

    def _run(self, until: int, max_instructions: int):
        host, vm, clock = self.host, self.vm, self.vm.clock
        dispatch = self.dispatcher.dispatch
        end = min(until, max_instructions)
        watchdog = LivelockWatchdog()
        try:
            while True:
                if vm.exit_code is not None:
                    return None
                if vm.stop is not None:
                    return vm.stop
                total = self.steps()
                if total >= max_instructions:
                    return MachineStop("instruction limit", "")
                if total >= end:
                    return None
                if self.deadline is not None and time.perf_counter() > self.deadline:
                    return MachineStop("time limit", f"{self.options.max_seconds} s of host time")
                clock.run_due()
                if self.events.deliverable() and self.event_callback is not None:
                    self.bounce(0, None, (4, *self.event_callback), "event", upcall=True)
                    continue
                budget = end - total
                if self.deadline is not None:
                    budget = min(budget, TIME_CHECK_EVERY)   # the time limit is checked between runs
                due = clock.next_deadline()
                if due < clock.NEVER:
                    budget = min(budget, clock.instructions_until(due))
                self.in_run = True
                exit = host.run(budget)
                self.in_run = False
                stop = dispatch(exit)
                if stop is not None:
                    return stop
                if watchdog.stuck(self.steps()):
                    return MachineStop("monitor livelock", f"{MAX_IDLE_EXITS} exits without a guest step")
        except DomainCrash as e:
            return MachineStop("domain crashed", str(e))
        except CpuFault as e:
            return MachineStop("domain crashed", f"fault in the hypervisor's access to the guest: {e}")

    def result(self) -> TechniqueResult:
        vm, reason = self.vm, self.stop_reason
        n = self.instructions()
        direct = self.direct()
        r = TechniqueResult(self.name, "strict" if self.strict else "standard", vm.output, vm.exit_code,
                            reason.reason if reason else None, reason.detail if reason else "",
                            n, direct, direct * self.costs.direct_instruction + self.extra_cycles,
                            self.seconds, self.log)
        hc = sum(v for k, v in self.counts.items() if k.startswith("hypercall"))
        bounces = sum(v for k, v in self.counts.items() if k.startswith("bounce"))
        upcalls = sum(v for k, v in self.counts.items() if k.startswith("upcall"))
        fast = self.fast_traps()
        if fast:
            # Delivered by the host CPU itself, as INT 0x80 is on the bare machine: it costs
            # what it costs there (native runs charge software interrupts nothing extra).
            self.log.counts[("fast trap", "INT 0x80")] = fast
        r.notes.append(f"pv: {hc:,} hypercalls, {bounces:,} bounced exceptions, {upcalls:,} event upcalls, "
                       f"{fast:,} fast system-call traps, "
                       f"{self.counts['validated pt update']:,} validated page-table updates, "
                       f"{self.frames.validations:,} table validations, {self.counts['refused']:,} refused, "
                       f"{self.counts['io port']:,} port accesses")
        if self.blk is not None:
            r.notes.append(f"blkif: {self.blk.requests:,} requests, {self.blk.sectors:,} sectors, "
                           f"{self.blk.errors:,} refused or failed, {self.grants.uses:,} grant uses")
        r.notes.extend(f"refused: {x}" for x in self.refusals[:20])
        r.exits = self.dispatcher.statistics()
        r.steps = self.steps()
        return r
