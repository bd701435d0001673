"""A timer armed while the CPU runs a budget fires when it is due.

The CPU runs in budgets up to the clock's next deadline (machine/cpu/cpu.py,
``CPU.run``).  A device that arms an earlier timer in the middle of a budget
-- a PIT reprogrammed, a LAPIC one-shot, with no timer armed before -- must
cut that budget short (``Clock.on_earlier_deadline``); otherwise its
interrupt comes only when the old budget runs out, arbitrarily late.
"""

from __future__ import annotations

import pytest

from trapvisor.machine.bus import IoBus
from trapvisor.machine.clock import VirtualClock
from trapvisor.machine.cpu import CPU, enter_flat_protected_mode
from trapvisor.machine.memory import PhysicalMemory

PORT = 0x80
DELAY = 1000        # instructions from the OUT to the timer's deadline
CODE = 0x1000


class OneShot:
    """OUT to the port: arm a timer DELAY instructions ahead; record when it fires."""

    def __init__(self, cpu_ref, clock):
        self.cpu_ref, self.clock = cpu_ref, clock
        self.armed_at = self.fired_at = None

    def io_write(self, port, size, value):
        cpu = self.cpu_ref[0]
        self.armed_at = cpu.icount
        self.clock.add_timer(self.clock.now_ns() + DELAY * 10, self.fire)

    def io_read(self, port, size):
        return 0

    def fire(self):
        self.fired_at = self.cpu_ref[0].icount


@pytest.mark.parametrize("block_tier", [False, True])
def test_a_timer_armed_mid_budget_fires_when_due(block_tier):
    mem = PhysicalMemory(1 << 20)
    # mov $0x80, %dx; mov $50, %ecx; 1: inc %eax; loop 1b; out %al, %dx; 2: inc %ebx; jmp 2b
    code = bytes.fromhex("66ba8000" "b932000000" "40e2fd" "ee" "43ebfd")
    mem.write(CODE, code)
    bus = IoBus()
    ref = [None]
    clock = VirtualClock(10, counter=lambda: ref[0].icount)
    dev = OneShot(ref, clock)
    bus.register(PORT, 1, dev)
    cpu = CPU(mem, bus, None, None, clock)
    ref[0] = cpu
    cpu.block_tier = block_tier
    enter_flat_protected_mode(cpu)
    cpu.eip = CODE
    cpu.run(1_000_000)          # no timer armed when the budget starts: one budget of 1e6
    assert dev.armed_at is not None and dev.fired_at is not None
    late = dev.fired_at - (dev.armed_at + DELAY)
    assert 0 <= late <= 2, f"fired {late} instructions after its deadline"
