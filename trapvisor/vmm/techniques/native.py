"""``native``: the guest on the bare simulated PC, no monitor at all.

This is the reference every technique is compared with (Popek and Goldberg's
"bare machine"): same CPU, same devices, same loader, same virtual clock.
The bare machine is always the standard IA-32 CPU: ``--cpu strict`` describes
the *host* hardware a monitor runs on, not what a guest expects natively
(an unmodified kernel's user programs run PUSHF at ring 3 and must not trap).
"""

from __future__ import annotations

import io
import time

from ...events import EventLog
from ...machine.pc import PC
from ..costmodel import CostModel
from .base import TechniqueResult, native_cycles


def run_native(kernel: str, *, cmdline: str = "", memory_bytes: int, max_instructions: int,
               costs: CostModel, strict: bool = False, serial_out=None,
               audit: bool = False) -> TechniqueResult:
    console = io.BytesIO()

    def out(data):
        console.write(data)
        if serial_out is not None:
            serial_out(data)
    pc = PC(memory_bytes, serial_out=out, strict=False)
    cpu = pc.cpu
    if audit:
        from ...machine.cpu.audit import Auditor
        cpu.auditor = Auditor()
    pc.load_kernel(kernel, cmdline=cmdline)
    interrupts = [0]
    deliver = cpu.deliver_external_interrupt

    def counted_delivery():
        interrupts[0] += 1
        deliver()
    cpu.deliver_external_interrupt = counted_delivery
    t0 = time.perf_counter()
    result = pc.run(max_instructions)
    seconds = time.perf_counter() - t0
    log = EventLog()
    r = TechniqueResult(
        "native", "standard", console.getvalue(), result.exit_code,
        result.stop_reason, result.detail, result.instructions, result.instructions,
        native_cycles(costs, result.instructions, result.exceptions, interrupts[0]), seconds, log)
    if audit:
        r.audit = cpu.auditor.records
    return r
