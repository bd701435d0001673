"""Each intercept control makes the CPU exit, with the exit type and fields it
names, the instruction not executed and the CPU left at it; with the control
clear the same code runs as on the bare machine.

Rules: SDM Vol. 3C §24.6 (the execution controls), §25.1 (instruction-caused
exits leave the instruction unexecuted; CPL checks come first), Table 27-3
(CR access qualification) and Table 27-5 (I/O qualification).
"""

import pytest

from trapvisor.machine.bus import IoBus
from trapvisor.machine.cpu import CPU, enter_flat_protected_mode
from trapvisor.machine.cpu.exits import (
    BudgetExhausted, CodeFenceExit, ControlRegisterExit, DescriptorTableExit, ExceptionExit,
    HaltExit, InstructionExit, IoExit, Preempted,
)
from trapvisor.machine.memory import PhysicalMemory

CODE = 0x1000
DATA = 0x3000


class Port:
    """An I/O device that records what it is given."""

    def __init__(self):
        self.writes = []

    def io_read(self, port, size):
        return 0x5A

    def io_write(self, port, size, value):
        self.writes.append((port, size, value))


def cpu_with(code: bytes, eax: int = 0, edx: int = 0x80):
    mem = PhysicalMemory(1 << 20)
    bus = IoBus()
    dev = Port()
    bus.register(0x80, 1, dev)
    cpu = CPU(mem, bus)
    enter_flat_protected_mode(cpu)
    mem.ram[CODE:CODE + len(code)] = code
    cpu.eip = CODE
    cpu.regs[0], cpu.regs[2] = eax, edx
    cpu.regs[4] = 0x8000
    cpu.dev = dev
    return cpu


def test_with_no_control_set_the_cpu_only_spends_its_budget():
    cpu = cpu_with(b"\x90" * 8)
    # The budget is looked at between blocks: at least 5 instructions, a block at most.
    assert isinstance(cpu.run(5), BudgetExhausted) and 5 <= cpu.icount <= 64


def test_io_exiting_by_port_gives_the_port_size_direction_and_value():
    cpu = cpu_with(b"\xb0\x42\xee\xec")          # mov al, 0x42; out dx, al; in al, dx
    cpu.intercepts.io_exiting = {0x80}
    ex = cpu.run(10)
    assert ex == IoExit(0x80, 1, True, value=0x42, length=1)
    assert cpu.eip == CODE + 2 and cpu.dev.writes == [], "the OUT must not have reached the bus"
    cpu.intercepts.io_exiting = {0x81}            # another port: the OUT goes to the device
    cpu.run(2)
    assert cpu.dev.writes == [(0x80, 1, 0x42)] and cpu.regs[0] & 0xFF == 0x5A


def test_hlt_exiting_leaves_the_cpu_running_at_the_hlt():
    cpu = cpu_with(b"\x90\xf4")
    cpu.intercepts.hlt_exiting = True
    assert cpu.run(10) == HaltExit(1)
    assert cpu.eip == CODE + 1 and not cpu.halted and cpu.icount == 1


def test_cr_write_exiting_names_the_register_and_the_value_and_does_not_write():
    cpu = cpu_with(b"\x0f\x22\xd8", eax=0x5000)  # mov cr3, eax
    cpu.intercepts.cr_write_exiting = 1 << 3
    ex = cpu.run(10)
    assert ex == ControlRegisterExit(3, True, 0x5000, 0, "mov", 3)
    assert cpu.cr3 == 0 and cpu.eip == CODE


def test_cr0_guest_host_mask_exits_only_on_owned_bits_and_reads_the_shadow():
    ts = 1 << 3
    # mov eax, cr0; or eax, 8 (TS); mov cr0, eax
    cpu = cpu_with(b"\x0f\x20\xc0\x83\xc8\x08\x0f\x22\xc0")
    ic = cpu.intercepts
    ic.cr0_guest_host_mask, ic.cr0_read_shadow = ts, ts     # the monitor owns TS, shadow says set
    cpu.cr0 &= ~ts
    ex = cpu.run(10)
    assert cpu.regs[0] & ts, "MOV from CR0 must read the shadow's TS"
    # Writing TS=1 matches the shadow: no exit, the write goes through.
    assert isinstance(ex, BudgetExhausted) and cpu.cr0 & ts
    cpu2 = cpu_with(b"\x0f\x06")                 # clts: would clear the owned bit
    cpu2.intercepts.cr0_guest_host_mask = cpu2.intercepts.cr0_read_shadow = ts
    cpu2.cr0 |= ts
    ex = cpu2.run(10)
    assert isinstance(ex, ControlRegisterExit) and ex.mnemonic == "clts" and cpu2.cr0 & ts


def test_cpl_check_comes_before_the_intercept():
    cpu = cpu_with(b"\x0f\x22\xd8")
    cpu.intercepts.cr_write_exiting = 1 << 3
    cpu.intercepts.exception_bitmap = 1 << 13
    cpu.set_cpl(3)
    ex = cpu.run(10)
    assert ex == ExceptionExit(13, 0)


def test_invlpg_exiting_gives_the_linear_address():
    cpu = cpu_with(b"\x0f\x01\x38", eax=0x12345678)   # invlpg [eax]
    cpu.intercepts.invlpg_exiting = True
    assert cpu.run(10) == InstructionExit("invlpg", 3, 0x12345678)


@pytest.mark.parametrize("code,name", [(b"\x0f\x01\x10", "lgdt"), (b"\x0f\x01\x00", "sgdt"),
                                       (b"\x0f\x00\xc8", "str"), (b"\x0f\x00\xd0", "lldt")])
def test_descriptor_table_exiting(code, name):
    cpu = cpu_with(code, eax=DATA)
    gdtr = cpu.gdtr
    cpu.intercepts.descriptor_table_exiting = True
    assert cpu.run(10) == DescriptorTableExit(name, 3)
    assert cpu.gdtr == gdtr and cpu.eip == CODE


def test_software_interrupt_exit_carries_the_int_instruction():
    cpu = cpu_with(b"\x90\xcd\x80")
    cpu.intercepts.software_interrupt_exiting = True
    ex = cpu.run(10)
    assert ex == ExceptionExit(0x80, None, "software", CODE + 1)


def test_exception_bitmap_takes_only_its_vectors():
    cpu = cpu_with(b"\x0f\x0b")                  # ud2
    cpu.intercepts.exception_bitmap = 1 << 6
    assert cpu.run(10) == ExceptionExit(6, None) and cpu.eip == CODE


def test_code_fence_stops_a_fetch_outside_the_region():
    cpu = cpu_with(b"\xe9\xfb\x0f\x00\x00")      # jmp CODE+0x1000
    cpu.intercepts.code_fence = (CODE, CODE + 0x100)
    assert cpu.run(10) == CodeFenceExit(CODE + 0x1000)


def test_request_exit_preempts_a_cpu_without_a_clock():
    cpu = cpu_with(b"\xeb\xfe")                  # jmp $
    cpu.request_exit()
    assert isinstance(cpu.run(1000), Preempted)
    assert isinstance(cpu.run(1000), BudgetExhausted)


# ------------------------------------------------------------- sensitive-instruction exiting
def test_sensitive_exiting_stops_a_listed_class_before_it_executes_on_both_tiers():
    """PUSHF, SGDT and MOV from a segment register exit when their class is listed; the
    instruction is not executed (ESP unchanged), EIP stays at it, and unlisted sensitive
    instructions run as on the bare CPU.  A loop runs both tiers (closures, then generated)."""
    from trapvisor.machine.cpu.exits import SensitiveExit
    # loop: mov eax, ds ; dec ecx ; jnz loop ; pushfd ; hlt
    code = bytes.fromhex("8cd8 49 75fb 9c f4")
    cpu, start = cpu_with(code), CODE
    cpu.regs[1] = 200
    cpu.set_sensitive_exiting({"PUSHF"})
    esp = cpu.regs[4]
    e = cpu.run(10_000)
    assert isinstance(e, SensitiveExit) and e.name == "PUSHF" and e.mnemonic == "pushfd" and e.length == 1
    assert cpu.eip == start + 5 and cpu.regs[4] == esp and cpu.regs[1] == 0
    # Now the segment-register MOV exits too, on its first execution.
    cpu.eip, cpu.regs[1] = start, 5
    cpu.set_sensitive_exiting({"PUSHF", "MOV"})
    e = cpu.run(10_000)
    assert isinstance(e, SensitiveExit) and e.name == "MOV" and cpu.eip == start and cpu.regs[1] == 5
    # Cleared: the bare machine again.
    cpu.set_sensitive_exiting(())
    cpu.run(10_000)
    assert cpu.halted and cpu.regs[4] == esp - 4


def test_mmio_exiting_gives_address_size_direction_and_value_and_executes_nothing():
    """KVM_EXIT_MMIO's shape: a load or store beyond RAM exits unexecuted; clear, the load
    reaches the bus (open bus here: all ones)."""
    from trapvisor.machine.cpu.exits import MmioExit
    # mov eax, [0xFEC00000] ; mov [0xFED00010], cx ; hlt
    code = bytes.fromhex("a1 0000c0fe  66890d 1000d0fe f4")
    cpu = cpu_with(code, eax=0x1234)
    cpu.regs[1] = 0xBEEF
    cpu.intercepts.mmio_exiting = True
    e = cpu.run(100)
    assert e == MmioExit(0xFEC00000, 4, False) and cpu.eip == CODE and cpu.regs[0] == 0x1234
    cpu.eip += 5                       # the monitor completed the load
    e = cpu.run(100)
    assert e == MmioExit(0xFED00010, 2, True, 0xBEEF) and cpu.eip == CODE + 5
    cpu.intercepts.mmio_exiting = False
    cpu.eip = CODE
    cpu.run(100)
    assert cpu.regs[0] == 0xFFFFFFFF and cpu.halted
