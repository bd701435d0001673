"""What every technique returns (one result type for all), and the pieces they share."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...events import EventLog
from ..costmodel import CostModel


@dataclass
class TechniqueResult:
    technique: str
    cpu_variant: str
    output: bytes
    exit_code: int | None
    stop_reason: str | None
    detail: str
    instructions: int            # guest instructions, however executed
    direct: int                  # ... of which executed directly by the host CPU
    cycles: int | None           # simulated cycles under the cost model (None: not measurable, e.g. KVM)
    seconds: float               # host wall time
    events: EventLog = field(default_factory=EventLog)
    notes: list = field(default_factory=list)
    divergences: list = field(default_factory=list)
    audit: list = field(default_factory=list)    # sensitive-instruction observations, if recorded
    exits: dict = field(default_factory=dict)    # CPU exits by reason, as the dispatcher counted them
    steps: int = 0               # what the instruction limit counts: instructions + deliveries

    @property
    def direct_share(self) -> float:
        return self.direct / self.instructions if self.instructions else 0.0

    def traps_by_reason(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (kind, reason), n in self.events.counts.items():
            out[f"{kind}:{reason}"] = n
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def stop_summary(stop) -> tuple[str | None, str]:
    if stop is None:
        return None, ""
    return stop.reason, stop.detail


def native_cycles(costs: CostModel, instructions: int, exceptions: dict, interrupts: int) -> int:
    """The bare machine under the cost model: every instruction direct, every
    exception or interrupt a native delivery."""
    events = sum(exceptions.values()) + interrupts
    return instructions * costs.direct_instruction + events * costs.native_event
