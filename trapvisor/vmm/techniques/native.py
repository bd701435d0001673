"""``native``: the guest on the bare simulated PC, no monitor at all.

This is the reference every technique is compared with (Popek and Goldberg's
"bare machine"): same CPU, same devices, same loader, same virtual clock.
With ``--cpu strict`` the bare machine has the strict CPU, on which every
sensitive instruction traps at CPL > 0: a monitor on a host of a CPU variant
must present a machine of that variant, so that is the reference it is held
to (docs/vmm.md, "the machine a technique must be equivalent to").
"""

from __future__ import annotations

import io
import time

from ...events import EventLog
from ...machine.pc import PC
from ..monitor import Monitor, RunOptions, register
from .base import TechniqueResult, native_cycles


@register
class Native(Monitor):
    name = "native"
    summary = "the bare simulated PC, no monitor: the reference every technique is held to"
    honours = frozenset({"audit", "modules", "disk", "initrd", "serial_in"})

    def __init__(self, options: RunOptions, host=None):
        super().__init__(options, host)
        self.console = io.BytesIO()
        serial_out = options.serial_out

        def out(data):
            self.console.write(data)
            if serial_out is not None:
                serial_out(data)
        self.pc = pc = PC(options.memory_bytes, serial_out=out, strict=options.strict, disk=options.disk,
                               serial_in=options.serial_in)
        if options.audit:
            from ...machine.cpu.audit import Auditor
            pc.cpu.auditor = Auditor()
        pc.load_kernel(options.kernel, cmdline=options.cmdline, modules=options.modules, initrd=options.initrd)
        self.last = None

    def instructions(self) -> int:
        return self.pc.cpu.icount

    def steps(self) -> int:
        return self.pc.cpu.steps()

    def run_slice(self, until: int, max_instructions: int) -> bool:
        cpu = self.pc.cpu
        t0 = time.perf_counter()
        budget = min(until, max_instructions) - cpu.steps()
        seconds = None if self.deadline is None else max(self.deadline - t0, 1e-6)
        self.last = self.pc.run(budget, max_seconds=seconds) if budget > 0 else self.last
        self.seconds += time.perf_counter() - t0
        r = self.last
        ended = r is not None and (r.exit_code is not None or r.interrupted
                                   or r.stop_reason not in (None, "instruction limit"))
        return ended or cpu.steps() >= max_instructions

    def result(self) -> TechniqueResult:
        r, cpu = self.last, self.pc.cpu
        stop, detail = (r.stop_reason, r.detail) if r is not None else ("instruction limit", "")
        r = TechniqueResult(
            "native", "strict" if self.strict else "standard", self.console.getvalue(), cpu.exit_code, stop, detail,
            cpu.icount, cpu.icount,
            native_cycles(self.costs, cpu.icount, dict(cpu.exception_counts), cpu.interrupts_delivered),
            self.seconds, EventLog(), steps=cpu.steps())
        if cpu.auditor is not None:
            r.audit = cpu.auditor.records
        return r
