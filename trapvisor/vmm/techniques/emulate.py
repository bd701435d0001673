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
from ...machine.cpu.exits import DebugExit, MachineStopped
from ...machine.pc import TIME_STEP
from ..dispatcher import DebugStop
from ..monitor import Host, Monitor, RunOptions, register
from ..vm import VM
from .base import TechniqueResult


@register
class Emulate(Monitor):
    name = "emulate"
    summary = "full-system emulation: the virtual CPU interprets every guest instruction (Bochs, QEMU TCG)"
    honours = frozenset({"disk", "modules", "initrd", "serial_in"})

    def __init__(self, options: RunOptions, host: Host | None = None):
        super().__init__(options, host)
        if host is None:
            host = Host([options.memory_bytes])
        self.allocator = host.allocator
        self.vm = vm = VM(host.allocator, options.memory_bytes, name=options.name,
                          serial_out=options.serial_out, disk=options.disk, strict=options.strict,
                          serial_in=options.serial_in)
        vm.load_kernel(options.kernel, cmdline=options.cmdline, modules=options.modules, initrd=options.initrd)
        vm.instructions = self.instructions
        self.stop: MachineStop | None = None

    def instructions(self) -> int:
        return self.vm.vcpu.icount

    def steps(self) -> int:
        return self.vm.vcpu.steps()

    def run_slice(self, until: int, max_instructions: int) -> bool:
        vcpu = self.vm.vcpu
        t0 = time.perf_counter()
        try:
            while self.stop is None and self.vm.exit_code is None:
                end = min(until, max_instructions)
                if vcpu.steps() >= end:
                    break
                if self.deadline is not None and time.perf_counter() > self.deadline:
                    self.stop = MachineStop("time limit", f"{self.options.max_seconds} s of host time")
                    break
                # In chunks, so that the time limit is looked at often (TIME_STEP, machine/pc.py).
                ex = vcpu.run(min(end - vcpu.steps(), TIME_STEP) if self.deadline is not None
                              else end - vcpu.steps())
                if isinstance(ex, MachineStopped):
                    self.stop = ex.stop
                elif isinstance(ex, DebugExit):      # trapvisor/debug takes it (and clears it)
                    self.stop = DebugStop(ex)
        except MachineStop as stop:
            self.stop = vcpu.stop = stop
        finally:
            self.seconds += time.perf_counter() - t0
        return self.stop is not None or self.vm.exit_code is not None or vcpu.steps() >= max_instructions

    def result(self) -> TechniqueResult:
        vm, vcpu = self.vm, self.vm.vcpu
        stop = self.stop
        if stop is not None and stop.reason == "halted forever" and vm.clock.idle_stop:
            stop = MachineStop(stop.reason, vm.clock.idle_stop)   # the VM clock's idle watchdog
        reason = stop.reason if stop else (None if vm.exit_code is not None else "instruction limit")
        # The emulator's CPU models the machine the VM presents: the strict CPU
        # with --cpu strict, as every technique (docs/vmm.md).
        return TechniqueResult(
            "emulate", "strict" if self.strict else "standard", vm.output, vm.exit_code, reason,
            stop.detail if stop else "", vcpu.icount, 0,
            vcpu.icount * self.costs.emulated_instruction, self.seconds, EventLog(),
            steps=vcpu.steps())
