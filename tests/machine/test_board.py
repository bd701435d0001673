"""One board for the PC, the monitor's VMs and KVM; one entry state for the simulated CPU and KVM."""

import pytest

from trapvisor.guests import build_guest
from trapvisor.kvm.entry_state import cpu_entry_from
from trapvisor.machine import bios
from trapvisor.machine.board import build_board
from trapvisor.machine.clock import VirtualClock
from trapvisor.machine.cpu.constants import CS, DS, SS
from trapvisor.machine.loader import load_kernel
from trapvisor.machine.loader.boot_state import GENERAL_REGISTERS, apply_entry_state, entry_state
from trapvisor.machine.memory import PhysicalMemory
from trapvisor.machine.pc import PC
from trapvisor.vmm.allocator import Allocator
from trapvisor.vmm.vm import VM

MEM = 16 << 20


def test_the_board_has_every_device_and_the_bios_tables(tmp_path):
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(512 * 64))
    board = build_board(PhysicalMemory(MEM), VirtualClock(10, counter=lambda: 0), serial_out=lambda b: None,
                        disk=str(disk))
    try:
        assert board.io_bus.device_at(0x3F8) is board.devices.uart
        assert board.mmio_bus is not None and board.devices.intc is not None
        assert board.memory.read(bios.MP_FLOATING_POINTER_ADDR, 4) == b"_MP_"
        assert board.memory.read(bios.BDA_HARD_DISKS, 1) == b"\x01"
    finally:
        board.close()


def test_pc_vm_and_kvm_use_the_same_board_builder():
    pc = PC(MEM)
    alloc = Allocator(PhysicalMemory(Allocator.host_size_for([MEM])))
    vm = VM(alloc, MEM)
    for machine in (pc, vm):
        assert machine.board.io_bus is machine.io_bus and machine.board.devices is machine.devices
        assert machine.memory.read(bios.MP_FLOATING_POINTER_ADDR, 4) == b"_MP_"


def _loaded(memory):
    return load_kernel(memory, build_guest("hello"), cmdline="x=1")


def test_the_pc_and_the_vm_enter_a_kernel_in_the_same_state():
    pc, alloc = PC(MEM), Allocator(PhysicalMemory(Allocator.host_size_for([MEM])))
    vm = VM(alloc, MEM)
    pc.load_kernel(str(build_guest("hello")), cmdline="x=1")
    vm.load_kernel(str(build_guest("hello")), cmdline="x=1")
    a, b = pc.cpu, vm.vcpu
    assert (a.eip, a.regs[:8], a.gdtr, a.idtr, a.cr0, a.get_eflags(), a.cpl) == \
           (b.eip, b.regs[:8], b.gdtr, b.idtr, b.cr0, b.get_eflags(), b.cpl)
    assert [(a.sel[s], a.base[s], a.limit[s], a.attr[s]) for s in range(6)] == \
           [(b.sel[s], b.base[s], b.limit[s], b.attr[s]) for s in range(6)]
    assert a.attr[CS] == 0xC09B and a.attr[DS] == a.attr[SS] == 0xC093 and a.limit[CS] == 0xFFFFFFFF


def test_kvm_registers_come_from_the_same_entry_state():
    boot = _loaded(PhysicalMemory(MEM))
    entry = entry_state(boot)
    kvm = cpu_entry_from(entry)
    assert kvm.rip == entry.eip == boot.entry
    assert kvm.gdt == entry.gdtr and kvm.idt == entry.idtr and kvm.cr0 == entry.cr0
    assert kvm.rflags == entry.eflags == 0x2
    assert {f"e{k[1:]}": v for k, v in kvm.registers.items()} == entry.registers
    assert kvm.registers["rax"] == 0x2BADB002          # the Multiboot magic (Multiboot 0.6.96 §3.2)
    assert kvm.segments["cs"].selector == entry.segments["cs"].selector == 0x08
    assert kvm.segments["ldt"].type == 2 and kvm.segments["tr"].type == 0xB
    assert set(entry.registers) == set(GENERAL_REGISTERS)


def test_the_simulated_cpu_is_not_entered_with_paging_on():
    from dataclasses import replace
    pc = PC(MEM)
    entry = entry_state(_loaded(pc.memory))
    with pytest.raises(ValueError, match="paging off"):
        apply_entry_state(pc.cpu, replace(entry, cr0=entry.cr0 | 0x80000000))
