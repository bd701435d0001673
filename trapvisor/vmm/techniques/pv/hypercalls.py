"""The hypercall table: ``int 0x82`` with EAX = number, EBX ECX EDX ESI EDI = arguments,
the result in EAX (0 or a negated Xen errno).  Xen x86-32's convention (xen.h;
Barham et al. 2003, section 3.2: "a domain may perform a synchronous software
trap into the hypervisor to perform a privileged operation").

Each handler validates everything the guest passes: pointers are guest-virtual
and copied through the guest's own page tables (guestmem.py: -EFAULT when
bad), frame numbers must be the domain's, page-table updates go through the
frame table (mm.py), descriptors through segments.py.  Batched calls
(mmu_update, mmuext_op) stop at the first refused request and report how many
succeeded, as Xen does.
"""

from __future__ import annotations

from ....machine.cpu import MachineStop
from .abi import (
    CONSOLEIO_write, E2BIG, EFAULT, EINVAL, ENOSYS, EPERM, EVTCHNOP_alloc_unbound, EVTCHNOP_bind_virq,
    EVTCHNOP_close, EVTCHNOP_send, EVTCHNOP_unmask, FIRST_RESERVED_GDT_ENTRY, FIRST_RESERVED_GDT_PAGE,
    HYPERVISOR_VIRT_START, MMU_UPDATE, MMUEXT_INVLPG_ALL, MMUEXT_INVLPG_LOCAL, MMUEXT_NEW_BASEPTR,
    MMUEXT_OP, MMUEXT_PIN_L1_TABLE, MMUEXT_PIN_L2_TABLE, MMUEXT_SET_LDT, MMUEXT_TLB_FLUSH_ALL,
    MMUEXT_TLB_FLUSH_LOCAL, MMUEXT_UNPIN_TABLE, PHYSDEVOP_set_iopl, SCHEDOP_block, SCHEDOP_shutdown,
    SCHEDOP_yield, SHUTDOWN_NAMES, TI_DPL_MASK, TRAP_INFO, UVMF_FLUSHTYPE_MASK, UVMF_INVLPG,
    UVMF_TLB_FLUSH, VCPUOP_is_up, VCPUOP_set_periodic_timer, VCPUOP_set_singleshot_timer,
    VCPUOP_stop_periodic_timer, VCPUOP_stop_singleshot_timer, XEN_CAPABILITIES, XEN_EXTRAVERSION,
    XEN_MAJOR, XEN_MINOR, XENVER_capabilities, XENVER_extraversion, XENVER_get_features,
    XENVER_pagesize, XENVER_platform_parameters, XENVER_version,
)
from .events import EventError
from .guestmem import GuestFault
from .mm import L1, L2, PAGE, SEGDESC, MmError
from .segments import DescriptorError, check_descriptor

MAX_BATCH = 4096            # requests per mmu_update/mmuext_op call
MAX_CONSOLE_WRITE = 1 << 16


class Hypercalls:
    """The handlers, bound to one domain (the ``pv`` technique's ``Pv`` object)."""

    def __init__(self, dom):
        self.dom = dom
        self.table = {
            0: self.set_trap_table, 1: self.mmu_update, 2: self.set_gdt, 3: self.stack_switch,
            4: self.set_callbacks, 5: self.fpu_taskswitch, 10: self.update_descriptor,
            14: self.update_va_mapping, 15: self.set_timer_op, 17: self.xen_version,
            18: self.console_io, 23: self.iret, 24: self.vcpu_op, 26: self.mmuext_op,
            29: self.sched_op, 32: self.event_channel_op, 33: self.physdev_op,
        }

    def call(self, nr: int, a: list[int]):
        """Run hypercall ``nr``; returns its result (EAX), or None when the handler set
        the CPU's state itself (iret), or a MachineStop (shutdown)."""
        handler = self.table.get(nr)
        if handler is None:
            return -ENOSYS
        try:
            return handler(*a)
        except GuestFault:
            return -EFAULT
        except (MmError, EventError, DescriptorError) as e:
            self.dom.note_refusal(nr, e)
            return -e.errno

    # -- CPU state -------------------------------------------------------------------
    def set_trap_table(self, ptr, *_):
        """trap_info entries until one with address 0 (xen.h: set_trap_table)."""
        g, dom = self.dom.guest, self.dom
        if ptr == 0:
            dom.traps.clear()
            return 0
        new = {}
        for i in range(257):
            vector, flags, cs, address = TRAP_INFO.unpack(g.read(ptr + 8 * i, 8))
            if address == 0:
                break
            dom.check_code_selector(cs)
            if address >= HYPERVISOR_VIRT_START:
                raise DescriptorError(EPERM, f"trap {vector:#x} handler {address:#x} in the hypervisor")
            new[vector] = (flags, cs, address)
        else:
            return -E2BIG
        dom.traps.update(new)
        return 0

    def stack_switch(self, ss, esp, *_):
        self.dom.check_stack_selector(ss)
        self.dom.kernel_ss, self.dom.kernel_sp = ss & 0xFFFF, esp
        return 0

    def set_callbacks(self, event_cs, event_eip, failsafe_cs, failsafe_eip, *_):
        dom = self.dom
        for cs, eip in ((event_cs, event_eip), (failsafe_cs, failsafe_eip)):
            dom.check_code_selector(cs)
            if eip >= HYPERVISOR_VIRT_START:
                return -EPERM
        dom.event_callback = (event_cs & 0xFFFF, event_eip)
        dom.failsafe_callback = (failsafe_cs & 0xFFFF, failsafe_eip)
        return 0

    def fpu_taskswitch(self, set_ts, *_):
        """CR0.TS is the hypervisor's: the guest asks for it set or clear."""
        self.dom.set_ts(bool(set_ts))
        return 0

    def set_gdt(self, frame_list, entries, *_):
        dom = self.dom
        if entries > FIRST_RESERVED_GDT_ENTRY:
            return -EINVAL
        nframes = (entries + 511) // 512
        frames = [dom.guest.u32(frame_list + 4 * i) for i in range(nframes)]
        dom.install_gdt(frames, entries)
        return 0

    def update_descriptor(self, ma_lo, ma_hi, d_lo, d_hi, *_):
        dom = self.dom
        ma = ma_hi << 32 | ma_lo
        if ma & 7 or ma >> 32:
            return -EINVAL
        d = check_descriptor(d_hi << 32 | d_lo)
        mfn = ma >> 12
        ft = dom.frames
        f = ft.frames.get(mfn)
        if f is None or mfn in ft.shared:
            raise MmError(EINVAL, f"descriptor at {ma:#x}: frame not the domain's")
        if f.type == SEGDESC and f.type_count:
            dom.mem.write(ma, d.to_bytes(8, "little"))
            dom.host.flush_code_cache()
        else:
            ft.get_type(mfn, SEGDESC)     # a plain frame: no writable mapping may exist
            dom.mem.write(ma, d.to_bytes(8, "little"))
            ft.put_type(mfn)
        return 0

    def iret(self, *_):
        return self.dom.do_iret()

    # -- memory -------------------------------------------------------------------------
    def mmu_update(self, reqs, count, done_ptr, domid, *_):
        dom = self.dom
        if count > MAX_BATCH:
            return -EINVAL
        done, rc = 0, 0
        for i in range(count):
            ptr, val = MMU_UPDATE.unpack(dom.guest.read(reqs + 16 * i, 16))
            try:
                kind = dom.frames.update(ptr, val)
            except MmError as e:
                dom.note_refusal(1, e)
                rc = -e.errno
                break
            if kind in (L1, L2):
                dom.counts["validated pt update"] += 1
                dom.extra_cycles += dom.costs.pv_validated_update
            done += 1
        if done_ptr:
            dom.guest.write(done_ptr, done.to_bytes(4, "little"))
        return rc

    def update_va_mapping(self, va, val, flags, *_):
        """Change the L1 entry for ``va`` in the current address space."""
        dom = self.dom
        if va >= HYPERVISOR_VIRT_START:
            return -EINVAL
        pde = dom.mem.read_u32((dom.host.cr3 & ~0xFFF) + 4 * (va >> 22))
        if not pde & 1:
            return -EINVAL
        ptr = (pde & ~0xFFF) + 4 * ((va >> 12) & 0x3FF)
        if dom.frames.frames.get(ptr >> 12) is None or dom.frames.frames[ptr >> 12].type != L1:
            return -EINVAL
        dom.frames.update(ptr, val)
        dom.counts["validated pt update"] += 1
        dom.extra_cycles += dom.costs.pv_validated_update
        kind = flags & UVMF_FLUSHTYPE_MASK
        if kind == UVMF_TLB_FLUSH:
            dom.host.flush_tlb(keep_global=False)
        elif kind == UVMF_INVLPG:
            dom.host.invlpg(va)
        return 0

    def mmuext_op(self, ops, count, done_ptr, domid, *_):
        dom = self.dom
        if count > MAX_BATCH:
            return -EINVAL
        done, rc = 0, 0
        for i in range(count):
            cmd, arg1, arg2 = MMUEXT_OP.unpack(dom.guest.read(ops + 12 * i, 12))
            try:
                self._mmuext(cmd, arg1, arg2)
            except MmError as e:
                dom.note_refusal(26, e)
                rc = -e.errno
                break
            done += 1
        if done_ptr:
            dom.guest.write(done_ptr, done.to_bytes(4, "little"))
        return rc

    def _mmuext(self, cmd, arg1, arg2):
        dom, ft = self.dom, self.dom.frames
        if cmd == MMUEXT_PIN_L1_TABLE:
            ft.pin(arg1, L1)
        elif cmd == MMUEXT_PIN_L2_TABLE:
            ft.pin(arg1, L2)
        elif cmd == MMUEXT_UNPIN_TABLE:
            ft.unpin(arg1)
        elif cmd == MMUEXT_NEW_BASEPTR:
            dom.new_baseptr(arg1)
        elif cmd in (MMUEXT_TLB_FLUSH_LOCAL, MMUEXT_TLB_FLUSH_ALL):
            dom.host.flush_tlb(keep_global=False)
        elif cmd in (MMUEXT_INVLPG_LOCAL, MMUEXT_INVLPG_ALL):
            dom.host.invlpg(arg1)
        elif cmd == MMUEXT_SET_LDT:
            if arg2 != 0:
                raise MmError(EINVAL, "local descriptor tables are not supported")
        else:
            raise MmError(ENOSYS, f"mmuext_op command {cmd}")

    # -- time, scheduling, events ----------------------------------------------------------
    def set_timer_op(self, lo, hi, *_):
        self.dom.set_singleshot(hi << 32 | lo)
        return 0

    def vcpu_op(self, cmd, vcpu, arg, *_):
        dom = self.dom
        if vcpu != 0:
            return -EINVAL
        if cmd == VCPUOP_is_up:
            return 1
        if cmd == VCPUOP_set_periodic_timer:
            period = int.from_bytes(dom.guest.read(arg, 8), "little")
            if period < 1_000_000:
                return -EINVAL          # Xen refuses periods under 1 ms
            dom.set_periodic(period)
            return 0
        if cmd == VCPUOP_stop_periodic_timer:
            dom.set_periodic(0)
            return 0
        if cmd == VCPUOP_set_singleshot_timer:
            dom.set_singleshot(int.from_bytes(dom.guest.read(arg, 8), "little"))
            return 0
        if cmd == VCPUOP_stop_singleshot_timer:
            dom.set_singleshot(0)
            return 0
        return -ENOSYS

    def sched_op(self, cmd, arg, *_):
        dom = self.dom
        if cmd == SCHEDOP_yield:
            return 0
        if cmd == SCHEDOP_block:
            return dom.block()
        if cmd == SCHEDOP_shutdown:
            reason = dom.guest.u32(arg)
            # trapvisor extension: a second word carries the exit code (the debug-exit
            # device's value), so that a run ends with the same code as on the bare PC.
            code = dom.guest.u32(arg + 4)
            dom.shutdown(reason, code)
            return MachineStop("shutdown", f"the guest shut down ({SHUTDOWN_NAMES.get(reason, reason)})")
        return -ENOSYS

    def event_channel_op(self, cmd, arg, *_):
        dom, ev, g = self.dom, self.dom.events, self.dom.guest
        if cmd == EVTCHNOP_bind_virq:
            virq, vcpu = g.u32(arg), g.u32(arg + 4)
            port = ev.bind_virq(virq, vcpu)
            g.write(arg + 8, port.to_bytes(4, "little"))
            return 0
        if cmd == EVTCHNOP_send:
            ev.send(g.u32(arg))
            dom.counts["event send"] += 1
            return 0
        if cmd == EVTCHNOP_close:
            ev.close(g.u32(arg))
            return 0
        if cmd == EVTCHNOP_unmask:
            ev.unmask(g.u32(arg))
            return 0
        if cmd == EVTCHNOP_alloc_unbound:
            return -EPERM               # one domain: nobody to talk to but the backends
        return -ENOSYS

    def console_io(self, cmd, count, buf, *_):
        if cmd != CONSOLEIO_write:
            return -ENOSYS
        if count > MAX_CONSOLE_WRITE:
            return -EINVAL
        self.dom.console_out(self.dom.guest.read(buf, count))
        return 0

    def xen_version(self, cmd, arg, *_):
        g = self.dom.guest
        if cmd == XENVER_version:
            return XEN_MAJOR << 16 | XEN_MINOR
        if cmd == XENVER_extraversion:
            g.write(arg, XEN_EXTRAVERSION.ljust(16, b"\0"))
            return 0
        if cmd == XENVER_capabilities:
            g.write(arg, XEN_CAPABILITIES.ljust(1024, b"\0"))
            return 0
        if cmd == XENVER_platform_parameters:
            g.write(arg, HYPERVISOR_VIRT_START.to_bytes(4, "little"))
            return 0
        if cmd == XENVER_get_features:
            g.write(arg + 4, (0).to_bytes(4, "little"))
            return 0
        if cmd == XENVER_pagesize:
            return PAGE
        return -ENOSYS

    def physdev_op(self, cmd, arg, *_):
        if cmd == PHYSDEVOP_set_iopl:
            iopl = self.dom.guest.u32(arg)
            if iopl > 3:
                return -EINVAL
            self.dom.set_iopl(iopl)
            return 0
        return -ENOSYS


def gdt_frames_ok(n: int) -> bool:
    return n <= FIRST_RESERVED_GDT_PAGE


def trap_dpl(flags: int) -> int:
    return flags & TI_DPL_MASK
