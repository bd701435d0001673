"""The one event format shared by every technique and by KVM.

Every time control leaves the guest for the monitor (a trap under
trap-and-emulate, a VM exit under VT-x or KVM, a callout from translated code,
a hypercall) or the monitor injects something into the guest, one
:class:`Event` is logged.  Reports, traces (``--trace FILE``: JSON lines) and
the cost model all read this one format.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field

# Kinds of event.
TRAP = "trap"            # a fault/exception the guest raised, delivered to the monitor
EXIT = "exit"            # a VM exit (simulated VT-x or KVM)
CALLOUT = "callout"      # translated code calling the monitor (binary translation)
HYPERCALL = "hypercall"  # an explicit request from a paravirtualized guest
INJECT = "inject"        # an interrupt or exception injected into the guest
KINDS = (TRAP, EXIT, CALLOUT, HYPERCALL, INJECT)


@dataclass
class Event:
    technique: str             # "trap-emulate", "kvm", ...
    kind: str                  # one of KINDS
    reason: str                # e.g. "#GP", "EXIT_REASON_IO_INSTRUCTION", "KVM_EXIT_IO"
    guest_eip: int = 0
    insn_bytes: bytes = b""
    disasm: str = ""
    detail: dict = field(default_factory=dict)   # port, address, size, vector, ...
    cost_cycles: int = 0       # charged by the cost model
    duration_ns: int = 0       # host time spent handling it, where measured

    def to_json(self) -> str:
        d = asdict(self)
        d["insn_bytes"] = self.insn_bytes.hex()
        return json.dumps(d, sort_keys=True)


class EventLog:
    """Counts every event by (kind, reason); keeps the events themselves if asked."""

    def __init__(self, keep: bool = False, trace_file=None, limit: int = 1_000_000):
        self.keep = keep
        self.events: list[Event] = []
        self.counts: Counter = Counter()
        self.duration_ns: Counter = Counter()
        self.cycles: Counter = Counter()
        self.trace_file = trace_file
        self.limit = limit

    def log(self, ev: Event) -> None:
        key = (ev.kind, ev.reason)
        self.counts[key] += 1
        self.duration_ns[key] += ev.duration_ns
        self.cycles[key] += ev.cost_cycles
        if self.keep and len(self.events) < self.limit:
            self.events.append(ev)
        if self.trace_file is not None:
            self.trace_file.write(ev.to_json() + "\n")

    def total(self, kind: str | None = None) -> int:
        return sum(n for (k, _), n in self.counts.items() if kind is None or k == kind)

    def by_reason(self) -> list[tuple[str, str, int, int, int]]:
        """Rows (kind, reason, count, total ns, total cycles), most frequent first."""
        return sorted(((k, r, n, self.duration_ns[(k, r)], self.cycles[(k, r)])
                       for (k, r), n in self.counts.items()), key=lambda row: -row[2])
