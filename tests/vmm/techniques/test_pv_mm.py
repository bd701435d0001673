"""Validated memory management, descriptor checks and hostile hypercalls under ``pv``.

The frame table is exercised alone (synthetic frames) and on a booted tvos-pv
domain, whose hypercalls are then called with hostile arguments the way a
hostile guest would make them: each is refused with Xen's error and the
hypervisor's frames (the hole: M2P, GDT area, shared_info) are unchanged."""

from __future__ import annotations

import pytest

from trapvisor.guests import build_guest
from trapvisor.machine.memory import PhysicalMemory
from trapvisor.vmm.techniques.pv import abi
from trapvisor.vmm.techniques.pv.events import EventChannels
from trapvisor.vmm.techniques.pv.mm import L1, L2, FrameTable, MmError
from trapvisor.vmm.techniques.pv.segments import DescriptorError, check_descriptor
from trapvisor.vmm.techniques.pv.technique import Pv

P, RW = 1, 2


def table(nframes=8):
    mem = PhysicalMemory(64 * 4096)
    return mem, FrameTable(mem, 16, nframes)


def test_a_frame_mapped_writable_cannot_become_a_page_table():
    mem, ft = table()
    mem.write_u32(16 << 12, 17 << 12 | P | RW)      # frame 16 maps frame 17 writable
    ft.pin(16, L1)
    with pytest.raises(MmError) as e:
        ft.pin(17, L1)
    assert e.value.errno == abi.EINVAL


def test_a_page_table_cannot_be_mapped_writable_but_may_be_mapped_read_only():
    mem, ft = table()
    ft.pin(17, L1)
    ft.pin(16, L1)
    with pytest.raises(MmError):
        ft.update(16 << 12, 17 << 12 | P | RW)
    ft.update(16 << 12, 17 << 12 | P)
    assert mem.read_u32(16 << 12) == 17 << 12 | P
    assert ft.check() == []


def test_a_frame_the_domain_does_not_own_cannot_be_mapped():
    mem, ft = table()
    ft.pin(16, L1)
    for frame in (3, 40):                         # below and above the domain
        with pytest.raises(MmError) as e:
            ft.update(16 << 12, frame << 12 | P)
        assert e.value.errno == abi.EINVAL
    assert mem.read_u32(16 << 12) == 0


def test_l2_slots_of_the_hypervisor_hole_are_refused_with_eperm():
    mem, ft = table()
    ft.pin(16, L2)
    with pytest.raises(MmError) as e:
        ft.update((16 << 12) + 4 * 1010, 17 << 12 | P)
    assert e.value.errno == abi.EPERM


def test_unmapping_releases_the_writable_type_so_the_frame_can_become_a_table():
    mem, ft = table()
    ft.pin(16, L1)
    ft.update(16 << 12, 17 << 12 | P | RW)
    with pytest.raises(MmError):
        ft.pin(17, L1)
    ft.update(16 << 12, 0)
    ft.pin(17, L1)
    ft.unpin(17)
    ft.unpin(16)
    assert all(f.count == 0 and f.type_count == 0 for f in ft.frames.values())


def test_descriptors_with_dpl_0_and_system_descriptors_are_refused():
    kcode_dpl0 = 0x00CF9B000000FFFF
    with pytest.raises(DescriptorError):
        check_descriptor(kcode_dpl0)
    gate = 0x0000EE0000080000 | 0x1000        # a 32-bit interrupt gate, DPL 3
    with pytest.raises(DescriptorError):
        check_descriptor(gate)
    tss = 0x0000890000000067
    with pytest.raises(DescriptorError):
        check_descriptor(tss)


def test_flat_guest_segments_are_truncated_below_the_hypervisor():
    from trapvisor.machine.cpu.descriptors import d_limit
    flat_ring1 = 0x00CFBB000000FFFF
    d = check_descriptor(flat_ring1)
    assert d_limit(d) == abi.GUEST_SEGMENT_MAX


def test_event_channels_pend_flag_and_respect_masks():
    mem = PhysicalMemory(4 * 4096)
    ev = EventChannels(mem, 4096)
    port = ev.bind_virq(abi.VIRQ_TIMER, 0)
    ev.upcall_mask = 0
    mem.ram[4096 + abi.SI_EVTCHN_MASK] |= 1 << port           # the guest masks the port
    ev.raise_virq(abi.VIRQ_TIMER)
    assert not ev.deliverable()
    ev.unmask(port)
    assert ev.deliverable()


# -- a booted domain, attacked through its hypercalls ----------------------------------------

def booted():
    m = Pv.build(str(build_guest("tvos-pv")), cmdline="workload=syscall iterations=100000")
    m.run_slice(400_000, 10_000_000)       # past vm_init: the kernel's own tables are in use
    assert m.vm.exit_code is None and m.stop_reason is None
    return m


def scratch(m):
    """A writable kernel page of the domain to put hypercall arguments in (pseudo-phys 2 MiB)."""
    return 0x200000


def call(m, nr, *args):
    a = list(args) + [0] * (5 - len(args))
    return m.hypercalls.call(nr, a)


def test_hostile_hypercalls_are_refused_and_the_hypervisor_is_intact():
    m = booted()
    hole = m.hole.snapshot()
    ft = m.frames
    buf = scratch(m)
    l2 = m.host.cr3 >> 12
    kernel_l1 = m.mem.read_u32(m.host.cr3) >> 12          # the L1 mapping the first 4 MiB
    # 1. mmu_update making the current L2 writable through its own L1 entry: -EINVAL.
    slot = (kernel_l1 << 12) + 4 * ((l2 - m.layout.first_mfn) & 0x3FF)
    m.guest.write(buf, abi.MMU_UPDATE.pack(slot, l2 << 12 | P | RW))
    assert call(m, abi.HYPERVISOR_mmu_update, buf, 1, 0, abi.DOMID_SELF) == -abi.EINVAL
    # 2. Mapping a frame of the monitor region (another owner): -EINVAL.
    m.guest.write(buf, abi.MMU_UPDATE.pack(slot, 5 << 12 | P))
    assert call(m, abi.HYPERVISOR_mmu_update, buf, 1, 0, abi.DOMID_SELF) == -abi.EINVAL
    # 3. A PDE in the hypervisor's hole: -EPERM.
    m.guest.write(buf, abi.MMU_UPDATE.pack((l2 << 12) + 4 * 1020, kernel_l1 << 12 | P | RW))
    assert call(m, abi.HYPERVISOR_mmu_update, buf, 1, 0, abi.DOMID_SELF) == -abi.EPERM
    # 4. A DPL-0 code descriptor and an interrupt gate through update_descriptor: -EINVAL.
    gdt_ma = m.gdt_frames[0] << 12
    for desc in (0x00CF9B000000FFFF, 0x0000EE0000080000):
        assert call(m, abi.HYPERVISOR_update_descriptor, gdt_ma + 8, 0,
                    desc & 0xFFFFFFFF, desc >> 32) == -abi.EINVAL
    # 5. Bad pointers and lengths: -EFAULT, never a fault of the monitor.
    for bad in (0, 0xFC000000, 0xFFFFF000, 0xBFFF0000):
        assert call(m, abi.HYPERVISOR_mmu_update, bad, 1, 0, abi.DOMID_SELF) == -abi.EFAULT
        assert call(m, abi.HYPERVISOR_console_io, abi.CONSOLEIO_write, 16, bad) == -abi.EFAULT
    assert call(m, abi.HYPERVISOR_console_io, abi.CONSOLEIO_write, 1 << 30, buf) == -abi.EINVAL
    assert call(m, abi.HYPERVISOR_mmu_update, buf, 1 << 20, 0, abi.DOMID_SELF) == -abi.EINVAL
    # 6. A trap handler in the hypervisor and a ring-0 code selector: refused.
    m.guest.write(buf, abi.TRAP_INFO.pack(14, 0, 0x09, 0xFC001000) + bytes(8))
    assert call(m, abi.HYPERVISOR_set_trap_table, buf) == -abi.EPERM
    assert call(m, abi.HYPERVISOR_set_callbacks, 0x08, 0x100000, 0x09, 0x100000) == -abi.EINVAL
    # 7. An event-channel flood: every port taken, then -ENOSPC, and sends to unbound ports -EINVAL.
    bind = buf
    results = set()
    for virq in range(abi.NR_VIRQS + 4):
        m.guest.write(bind, virq.to_bytes(4, "little") + bytes(8))
        results.add(call(m, abi.HYPERVISOR_event_channel_op, abi.EVTCHNOP_bind_virq, bind))
    assert -abi.EINVAL in results or -abi.EEXIST in results
    m.guest.write(buf, (999).to_bytes(4, "little"))
    assert call(m, abi.HYPERVISOR_event_channel_op, abi.EVTCHNOP_send, buf) == -abi.EINVAL
    # 8. Unknown hypercalls: -ENOSYS.
    assert call(m, 99) == -abi.ENOSYS
    # Nothing of the hypervisor changed, and every reference count still adds up.
    assert m.hole.snapshot() == hole
    assert ft.check() == []


def test_after_a_full_run_every_reference_count_adds_up():
    m = Pv.build(str(build_guest("tvos-pv")), cmdline="workload=forkwait iterations=3")
    r = m.run(200_000_000)
    assert r.exit_code == 1 and r.stop_reason == "shutdown"
    assert m.frames.check() == []
