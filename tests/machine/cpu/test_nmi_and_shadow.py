"""NMI delivery and the STI interrupt shadow (SDM Vol. 3A §6.7.1, §6.8.3; Vol. 2 STI).

* an NMI is taken through vector 2 whatever EFLAGS.IF says, and wakes a HLT with IF = 0;
* after one is taken, NMIs are blocked until the next IRET;
* a maskable interrupt pending when STI sets IF is taken after the one instruction that
  follows STI, before a CLI after it (kvm-unit-tests' eventinj "vec 32/33" case: QEMU takes both).

The CPU is run with event exiting on (the oracle's way of seeing a delivery without an IDT):
the exit says which event the CPU would deliver, and where.
"""

from __future__ import annotations

from trapvisor.machine.bus import IoBus
from trapvisor.machine.cpu import CPU, enter_flat_protected_mode
from trapvisor.machine.cpu.exits import ExceptionExit
from trapvisor.machine.memory import PhysicalMemory

CODE = 0x1000


class FakeIntc:
    """An interrupt source with a latched NMI and/or one fixed vector pending."""

    def __init__(self, nmi=False, vector=None):
        self.nmi, self.vector, self.on_pending = nmi, vector, None

    def nmi_pending(self):
        return self.nmi

    def acknowledge_nmi(self):
        self.nmi = False

    def interrupt_pending(self):
        return self.vector is not None

    def acknowledge(self):
        v, self.vector = self.vector, None
        return v


def cpu_with(code: bytes, intc, *, eflags_if=False):
    mem = PhysicalMemory(0x10000)
    mem.write(CODE, code)
    cpu = CPU(mem, IoBus(), intc=intc)
    enter_flat_protected_mode(cpu)
    cpu.regs[4] = 0x8000
    cpu.eip = CODE
    cpu.set_eflags(0x202 if eflags_if else 0x2)
    ic = cpu.intercepts
    ic.exception_bitmap, ic.external_interrupt_exiting = 0xFFFFFFFF, True
    return cpu


def test_an_nmi_is_taken_with_interrupts_disabled():
    cpu = cpu_with(b"\x90\x90\xf4", FakeIntc(nmi=True))
    ex = cpu.run(10)
    assert isinstance(ex, ExceptionExit) and ex.vector == 2
    assert cpu.nmi_blocked


def test_an_nmi_wakes_hlt_with_if_clear():
    intc = FakeIntc()
    cpu = cpu_with(b"\xf4\x90", intc)
    cpu.run(5)
    assert cpu.halted and cpu.stop is not None      # HLT with IF=0 and nothing to wake it
    cpu = cpu_with(b"\xf4\x90", intc)
    cpu.run(1)                                     # the HLT
    intc.nmi = True
    ex = cpu.run(5)
    assert isinstance(ex, ExceptionExit) and ex.vector == 2 and not cpu.halted


def test_nmis_wait_for_iret_while_one_is_handled():
    intc = FakeIntc(nmi=True)
    cpu = cpu_with(b"\x90" * 8 + b"\xf4", intc)
    cpu.nmi_blocked = True                          # inside an NMI handler
    cpu.set_eflags(0x202)
    cpu.run(8)
    assert intc.nmi and cpu.eip == CODE + 8         # still latched: not taken before IRET


def test_an_interrupt_pending_at_sti_is_taken_after_the_next_instruction():
    # sti; nop; cli; nop; hlt -- the interrupt comes after the NOP, with EIP at the CLI
    cpu = cpu_with(b"\xfb\x90\xfa\x90\xf4", FakeIntc(vector=33))
    ex = cpu.run(10)
    assert isinstance(ex, ExceptionExit) and ex.vector == 33 and ex.kind == "external"
    assert cpu.eip == CODE + 2
