"""Several VMs on one host CPU: time slices and world switches.

A monitor multiplexes one physical processor between virtual machines.  Here
every VM runs under a registered technique (``monitor.py``; trap-and-emulate
by default) on the *same* simulated host and out of the same host memory (one
allocator: the monitor region, then one partition per VM).  The scheduler
gives each runnable VM a time slice of guest instructions in turn, round
robin, and between two slices performs a *world switch*: the outgoing VM's
technique takes it off the host CPU (``Monitor.leave``: under trap-and-emulate
its state goes back from the host CPU into its virtual CPU) and the incoming
one's puts it on (``Monitor.enter``: its shadow page tables, shadow GDT, the
monitor's IDT and TSS, its intercept controls and its ring-compressed
registers).

Nothing of one VM is visible to another: each has its own partition, virtual
CPU, devices and virtual clock (guest time advances with the VM's own
instructions, so its timers fire at the same guest instruction count
whatever else runs), its own shadow page tables (frames from the shared
monitor pool) and its own event log.  A slice ends at an instruction
boundary outside any interrupt shadow; a VM that ends (debug exit, a stop
such as a triple fault, its instruction limit) leaves the rotation and the
others go on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..errors import UserError
from . import monitor
from .costmodel import CostModel
from .monitor import Host, Monitor, RunOptions
from .techniques.base import TechniqueResult

DEFAULT_SLICE = 100_000      # guest instructions per time slice (1 ms of guest time at 10 ns each)


@dataclass
class VmSpec:
    kernel: str
    cmdline: str = ""
    memory_bytes: int = 32 << 20


@dataclass
class ScheduleResult:
    results: list[TechniqueResult]
    slices: list[int]                      # time slices each VM was given
    world_switches: int
    seconds: float
    switch_seconds: float
    order: list[int] = field(default_factory=list)   # VM index of each slice, in order (first 1000)


class Scheduler:
    def __init__(self, specs: list[VmSpec], *, costs: CostModel | None = None, strict: bool = False,
                 slice_instructions: int = DEFAULT_SLICE, serial_out=None,
                 technique: str = "trap-emulate", max_seconds: float | None = None):
        if not specs:
            raise ValueError("no VM to run")
        if slice_instructions < 1:
            raise ValueError("a time slice is at least one instruction")
        cls = monitor.get(technique)
        if not cls.time_sliced:
            raise UserError(f"technique {technique} cannot be time-sliced with other VMs "
                            f"(it runs a guest to its end in one go)")
        costs = costs or CostModel.default()
        self.slice = slice_instructions
        # One host machine for every VM: host memory and one host CPU with no devices.
        self.host_machine = Host([s.memory_bytes for s in specs], strict=strict,
                                 vmx=getattr(cls, "host_vmx", None))
        self.alloc, self.host = self.host_machine.allocator, self.host_machine.cpu
        self.vms: list[Monitor] = []
        for i, spec in enumerate(specs):
            out = serial_out(i) if serial_out is not None else None
            m = cls(RunOptions(spec.kernel, cmdline=spec.cmdline, memory_bytes=spec.memory_bytes,
                               costs=costs, strict=strict, serial_out=out, name=f"vm{i}",
                               max_seconds=max_seconds),
                    self.host_machine)
            # Each VM is entered on the host CPU as it is built: take it off again.
            m.leave()
            self.vms.append(m)
        self.current: Monitor | None = None
        self.world_switches = 0
        self.switch_seconds = 0.0      # host time spent in world switches

    def switch_to(self, te: Monitor) -> None:
        if te is self.current:
            return
        t0 = time.perf_counter()
        if self.current is not None:
            self.current.leave()
        te.enter()
        self.current = te
        self.world_switches += 1
        self.switch_seconds += time.perf_counter() - t0

    def run(self, max_instructions: int) -> ScheduleResult:
        """Round robin until every VM has ended; ``max_instructions`` bounds each VM."""
        t0 = time.perf_counter()
        for m in self.vms:
            m.start_clock()
        slices = [0] * len(self.vms)
        order: list[int] = []
        runnable = list(range(len(self.vms)))
        while runnable:
            for i in list(runnable):
                te = self.vms[i]
                self.switch_to(te)
                slices[i] += 1
                if len(order) < 1000:
                    order.append(i)
                if te.run_slice(te.steps() + self.slice, max_instructions):
                    runnable.remove(i)
        if self.current is not None:
            self.current.leave()
            self.current = None
        return ScheduleResult([te.result() for te in self.vms], slices, self.world_switches,
                              time.perf_counter() - t0, self.switch_seconds, order)
