"""``emulate``: full-system emulation, every guest instruction interpreted.

The guest runs on its own complete simulated PC inside the monitor: the
virtual CPU executes every instruction in software, with the VM's own device
models (the approach of Bochs, or QEMU without KVM).  Nothing runs directly
on the host CPU, so Popek and Goldberg's efficiency property fails by
construction (0% direct), while equivalence and resource control hold.
"""

from __future__ import annotations

import time

from ...events import EventLog
from ...machine.cpu import MachineStop
from ...machine.memory import PhysicalMemory
from ..allocator import Allocator
from ..costmodel import CostModel
from ..vm import VM
from .base import TechniqueResult


def run_emulate(kernel: str, *, cmdline: str = "", memory_bytes: int, max_instructions: int,
                costs: CostModel, strict: bool = False, serial_out=None) -> TechniqueResult:
    host_memory = PhysicalMemory(Allocator.host_size_for([memory_bytes]))
    alloc = Allocator(host_memory)
    vm = VM(alloc, memory_bytes, serial_out=serial_out)
    vm.load_kernel(kernel, cmdline=cmdline)
    vcpu = vm.vcpu
    vm.instructions = lambda: vcpu.icount
    log = EventLog()
    t0 = time.perf_counter()
    try:
        vcpu.run(max_instructions)
    except MachineStop as stop:
        vcpu.stop = stop
    seconds = time.perf_counter() - t0
    stop = vcpu.stop
    if stop is not None and stop.reason == "halted forever" and vm.clock.idle_stop:
        stop = MachineStop(stop.reason, vm.clock.idle_stop)   # the VM clock's idle watchdog
    reason = stop.reason if stop else (None if vm.exit_code is not None else "instruction limit")
    return TechniqueResult(
        # The emulator's CPU is its own software model of a standard IA-32: --cpu
        # strict (a property of host hardware) does not apply to it.
        "emulate", "standard", vm.output, vm.exit_code, reason,
        stop.detail if stop else "", vcpu.icount, 0,
        vcpu.icount * costs.emulated_instruction, seconds, log)
