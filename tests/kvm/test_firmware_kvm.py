"""The machine KVM's guest meets is the simulated PC's: interrupt controllers, timers, E820, ACPI.

The expected values are read off the simulated PC (``machine.pc.PC``, whose
devices the firmware routine programs), never written down here.
"""
import struct

import pytest

from trapvisor.kvm import ioctls
from trapvisor.kvm.boot_linux import BP_E820_ENTRIES, BP_E820_TABLE, ZERO_PAGE_ADDR
from trapvisor.kvm.runner import KvmMachine
from trapvisor.machine import bios
from trapvisor.machine.pc import PC, run_kernel

from .conftest import multiboot_image

MEM = 16 << 20


@pytest.fixture
def machine(kvm_host):
    m = KvmMachine(MEM, serial_out=lambda b: None)
    yield m
    m.close()


def test_in_kernel_pics_are_left_as_the_firmware_leaves_them(machine):
    sim = PC(MEM).devices.pic
    for chip_id, model in ((ioctls.KVM_IRQCHIP_PIC_MASTER, sim.master), (ioctls.KVM_IRQCHIP_PIC_SLAVE, sim.slave)):
        got = machine.vm.get_irqchip(chip_id).chip.pic
        assert (got.imr, got.irq_base, got.init_state, got.init4, got.auto_eoi) == \
            (model.imr, model.vector_base, model.init_step, int(model.icw4_needed), int(model.auto_eoi)), chip_id
    assert machine.vm.get_irqchip(ioctls.KVM_IRQCHIP_PIC_MASTER).chip.pic.imr != 0


def test_in_kernel_pit_is_programmed_as_the_firmware_leaves_it(machine):
    sim = PC(MEM).devices.pit
    got = machine.vm.get_pit2()
    for i in (0, 1):
        ch, model = got.channels[i], sim.counters[i]
        assert (ch.mode, ch.count, ch.rw_mode, ch.bcd) == (model.mode, model.count, model.rw_mode, int(model.bcd)), i
    assert got.channels[0].mode == 3


def test_in_kernel_ioapic_has_the_tables_id(machine):
    ioapic = machine.vm.get_irqchip(ioctls.KVM_IRQCHIP_IOAPIC).chip.ioapic
    assert ioapic.id == machine.firmware.ioapic_id == bios.Firmware().ioapic_id
    assert ioapic.base_address == machine.firmware.ioapic_base
    assert all(e & (1 << 16) for e in ioapic.redirtbl)          # every pin masked, as at reset


def test_in_kernel_local_apic_lvts_are_the_simulated_pcs(machine):
    """LINT0 ExtINT on the BSP (virtual-wire mode, as QEMU and the simulated PC leave it), LINT1
    and the timer as after reset (Intel SDM Vol. 3A 10.4.7.1)."""
    from trapvisor.machine.devices import lapic
    sim = PC(MEM).devices.lapic
    for reg in (lapic.APIC_LVT_LINT0, lapic.APIC_LVT_LINT1, lapic.APIC_LVT_TIMER, lapic.APIC_SVR):
        assert machine.vcpu.get_lapic_register(reg) == sim.read_register(reg), hex(reg)
    assert machine.vcpu.get_lapic_register(lapic.APIC_ID) >> 24 == machine.firmware.apic_ids[0]


# in al,0x21; out dx,al; in al,0xa1; out dx,al  (IMRs)   -- dx = COM1
# mov al,0xe2; out 0x43,al; in al,0x40; and al,0x7f; out dx,al  (read-back status of counter 0, OUT masked)
# isa-debug-exit 0
PROBE = bytes([0x66, 0xBA, 0xF8, 0x03, 0xE4, 0x21, 0xEE, 0xE4, 0xA1, 0xEE,
               0xB0, 0xE2, 0xE6, 0x43, 0xE4, 0x40, 0x24, 0x7F, 0xEE,
               0xB0, 0x00, 0xE6, 0xF4, 0xF4, 0xEB, 0xFD])


@pytest.mark.parametrize("irqchip", [True, False], ids=["in-kernel", "userspace"])
def test_a_guest_reads_the_same_pic_and_pit_state_as_on_the_simulated_pc(kvm_host, tmp_path, irqchip):
    from trapvisor.kvm.runner import run_kvm
    k = tmp_path / "probe.bin"
    k.write_bytes(multiboot_image(PROBE))
    sim = []
    run_kernel(str(k), memory_bytes=MEM, serial_out=sim.append, max_seconds=30)
    out = []
    res = run_kvm(str(k), memory_bytes=MEM, serial_out=out.append, max_seconds=30, irqchip=irqchip)
    assert res.exit_code == 1
    assert b"".join(out) == b"".join(sim) and len(b"".join(sim)) == 3


def _reserved(e820, addr, size):
    return any(t == bios.E820_RESERVED and base <= addr and addr + size <= base + length
               for base, length, t in e820)


def test_multiboot_mmap_reserves_every_page_kvm_is_given(machine):
    from trapvisor.guests import build_guest
    machine.load(str(build_guest("hello")))
    mbi = machine.vcpu.get_regs().rbx
    length, addr = struct.unpack("<II", machine.memory.read(mbi + 44, 8))
    raw = machine.memory.read(addr, length)
    e820, off = [], 0
    while off < length:
        size, base, ln, t = struct.unpack_from("<IQQI", raw, off)
        e820.append((base, ln, t))
        off += size + 4
    from trapvisor.kvm import vm
    assert _reserved(e820, vm.TSS_ADDRESS, 0x3000) and _reserved(e820, vm.IDENTITY_MAP_ADDRESS, 0x1000), e820
    assert {what for _, _, what in machine.vm.given_pages} == {"KVM_SET_TSS_ADDR", "KVM_SET_IDENTITY_MAP_ADDR"}
    for page, size, what in machine.vm.given_pages:
        assert _reserved(e820, page, size), (what, hex(page), e820)


def test_linux_e820_reserves_every_page_kvm_is_given(kvm_host, tmp_path):
    from .test_boot_linux_unit import fake_bzimage
    k = tmp_path / "bzImage"
    k.write_bytes(fake_bzimage())
    machine = KvmMachine(64 << 20, serial_out=lambda b: None)
    try:
        machine.load(str(k), linux_entry="bzimage")
        zp = machine.memory.read(ZERO_PAGE_ADDR, 4096)
        e820 = [struct.unpack_from("<QQI", zp, BP_E820_TABLE + 20 * i) for i in range(zp[BP_E820_ENTRIES])]
        assert machine.vm.given_pages
        for page, size, what in machine.vm.given_pages:
            assert _reserved(e820, page, size), (what, hex(page), e820)
        assert struct.unpack_from("<Q", zp, 0x070)[0] == machine.board.rsdp   # boot_params.acpi_rsdp_addr
    finally:
        machine.close()
