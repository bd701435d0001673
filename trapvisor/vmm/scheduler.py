"""Several VMs on one host CPU: time slices and world switches.

A monitor multiplexes one physical processor between virtual machines.  Here
every VM runs under trap-and-emulate on the *same* host CPU and out of the
same host memory (one allocator: the monitor region, then one partition per
VM).  The scheduler gives each runnable VM a time slice of guest
instructions in turn, round robin, and between two slices performs a *world
switch*: the outgoing VM's state goes back from the host CPU into its
virtual CPU (``TrapEmulate.leave``), and the incoming VM's shadow page
tables, shadow GDT, the monitor's IDT and TSS and its ring-compressed
registers are loaded (``TrapEmulate.enter``).

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

from ..machine.bus import IoBus, MmioBus
from ..machine.cpu import CPU
from ..machine.memory import PhysicalMemory
from .allocator import Allocator
from .costmodel import CostModel
from .techniques.base import TechniqueResult
from .techniques.trap_emulate import TrapEmulate

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
                 slice_instructions: int = DEFAULT_SLICE, serial_out=None):
        if not specs:
            raise ValueError("no VM to run")
        if slice_instructions < 1:
            raise ValueError("a time slice is at least one instruction")
        costs = costs or CostModel.default()
        self.slice = slice_instructions
        host_mem = PhysicalMemory(Allocator.host_size_for([s.memory_bytes for s in specs]))
        self.alloc = Allocator(host_mem)
        # One host CPU for every VM; it has no devices of its own.
        self.host = CPU(host_mem, IoBus(), MmioBus(), None, None, strict=strict)
        self.vms: list[TrapEmulate] = []
        for i, spec in enumerate(specs):
            out = serial_out(i) if serial_out is not None else None
            te = TrapEmulate(spec.kernel, cmdline=spec.cmdline, memory_bytes=spec.memory_bytes,
                             costs=costs, strict=strict, serial_out=out, host=self.host,
                             allocator=self.alloc, name=f"vm{i}")
            # Each VM is entered on the host CPU as it is built: take it off again.
            te.leave()
            self.vms.append(te)
        self.current: TrapEmulate | None = None
        self.world_switches = 0
        self.switch_seconds = 0.0      # host time spent in world switches

    def switch_to(self, te: TrapEmulate) -> None:
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
                if te.run_slice(te.vm.instructions() + self.slice, max_instructions):
                    runnable.remove(i)
        if self.current is not None:
            self.current.leave()
            self.current = None
        return ScheduleResult([te.result() for te in self.vms], slices, self.world_switches,
                              time.perf_counter() - t0, self.switch_seconds, order)
