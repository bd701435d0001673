"""``kvm``: the guest under the host's /dev/kvm, as one more row of the comparison.

Hardware assistance (VT-x/AMD-V) when the host has it; on hosts whose KVM is a
software hypervisor (kvm_pvm, as on the machines this project is developed
on) the row says so and its figures are never presented as hardware assist.
KVM does not count guest instructions, so the efficiency and simulated-cycle
columns are not available for it; its exits are counted by reason in the
shared event format.  It runs a guest to its end in one go: it cannot be one
of several VMs time-sliced on the simulated host CPU.
"""

from __future__ import annotations

import io

from ...events import EventLog
from ..monitor import Monitor, RunOptions, register
from .base import TechniqueResult

DEFAULT_SECONDS = 120.0


def kvm_label() -> str | None:
    """'kvm (VT-x)' / 'kvm (software: ...)' when /dev/kvm is usable, else None."""
    from ...kvm.hostinfo import probe_kvm
    info = probe_kvm()
    if not info.available:
        return None
    return f"kvm ({info.kind})" if info.hardware_assisted else "kvm (software, not hardware assist)"


@register
class Kvm(Monitor):
    name = "kvm"
    summary = "the host's /dev/kvm with trapvisor's device models (VT-x/AMD-V, or a software KVM, said so)"
    honours = frozenset({"modules", "disk"})
    time_sliced = False
    strict_cpu = False     # the guest runs on the host's own processor

    def __init__(self, options: RunOptions, host=None):
        super().__init__(options, host)
        self.res = None

    @classmethod
    def preflight(cls, options: RunOptions) -> None:
        from ...kvm.hostinfo import probe_kvm
        from ...kvm.runner import require_ram_fits, require_usable_kvm
        require_usable_kvm(probe_kvm())
        require_ram_fits(options.memory_bytes)

    def run(self, max_instructions: int) -> TechniqueResult:
        from ...kvm.runner import run_kvm
        o = self.options
        console = io.BytesIO()

        def out(data):
            console.write(data)
            if o.serial_out is not None:
                o.serial_out(data)
        res = run_kvm(o.kernel, memory_bytes=o.memory_bytes, cmdline=o.cmdline, modules=o.modules,
                      disk=o.disk, serial_out=out, serial_in=lambda: b"",
                      max_seconds=o.max_seconds or DEFAULT_SECONDS)
        label = kvm_label() or "kvm"
        detail = "; ".join(str(d) for d in (res.dump or [res.detail]))[:400]
        stop = None if res.exit_code is not None and not res.problem else res.stop_reason
        r = TechniqueResult(label, "host", console.getvalue(), res.exit_code, stop, detail,
                            0, 0, None, res.seconds, res.events or EventLog())
        r.notes = list(res.summary or [])
        return r

    def run_slice(self, until: int, max_instructions: int) -> bool:
        raise NotImplementedError("kvm runs a guest to its end in one go")
