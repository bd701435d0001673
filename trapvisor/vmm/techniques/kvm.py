"""``kvm``: the guest under the host's /dev/kvm, as one more row of the comparison.

Hardware assistance (VT-x/AMD-V) when the host has it; on hosts whose KVM is a
software hypervisor (kvm_pvm, as on the machines this project is developed
on) the row says so and its figures are never presented as hardware assist.
KVM does not count guest instructions, so the efficiency and simulated-cycle
columns are not available for it; its exits are counted by reason in the
shared event format.
"""

from __future__ import annotations

import io

from ..costmodel import CostModel
from .base import TechniqueResult


def kvm_label() -> str | None:
    """'kvm (VT-x)' / 'kvm (software: ...)' when /dev/kvm is usable, else None."""
    from ...kvm.hostinfo import probe_kvm
    info = probe_kvm()
    if not info.available:
        return None
    return f"kvm ({info.kind})" if info.hardware_assisted else "kvm (software, not hardware assist)"


def run_kvm_technique(kernel: str, *, cmdline: str = "", memory_bytes: int, max_instructions: int,
                      costs: CostModel, strict: bool = False, serial_out=None,
                      max_seconds: float = 120.0) -> TechniqueResult:
    from ...kvm.runner import run_kvm
    console = io.BytesIO()

    def out(data):
        console.write(data)
        if serial_out is not None:
            serial_out(data)
    res = run_kvm(kernel, memory_bytes=memory_bytes, cmdline=cmdline, serial_out=out,
                  serial_in=lambda: b"", max_seconds=max_seconds)
    label = kvm_label() or "kvm"
    detail = "; ".join(str(d) for d in (res.detail or []))[:400]
    stop = None if res.exit_code is not None and not res.problem else res.stop_reason
    r = TechniqueResult(label, "host", console.getvalue(), res.exit_code, stop, detail,
                        0, 0, None, res.seconds, res.events or TechniqueResult.__dataclass_fields__[
                            "events"].default_factory())
    r.notes = list(res.summary or [])
    return r
