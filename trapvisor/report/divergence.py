"""Where a monitor broke equivalence: sensitive instructions, native against monitored.

Both runs record every execution of a sensitive instruction and what it
produced (``trapvisor/machine/cpu/audit.py``).  Runs of the same guest are
deterministic, so the n-th execution of the instruction at address A in one
run is the n-th execution at A in the other for as long as their control
flow agrees; pairing by (address, occurrence) keeps the pairing right after
a divergence too.  Each pair whose results differ is one line of the report:
the instruction, its guest address, what the guest saw under the monitor,
what it saw natively.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Divergence:
    ip: int
    name: str
    text: str
    occurrence: int
    guest_saw: str
    native_saw: str

    def line(self) -> str:
        return (f"{self.ip:#010x}  {self.text:<28s} [{self.name}] guest saw {self.guest_saw}; "
                f"native saw {self.native_saw}")

    def to_dict(self) -> dict:
        return {"address": self.ip, "instruction": self.text, "sensitive": self.name,
                "occurrence": self.occurrence, "guest_saw": self.guest_saw, "native_saw": self.native_saw}


def _keyed(records):
    seen: dict[int, int] = {}
    out = {}
    order = []
    for r in records:
        n = seen.get(r.ip, 0)
        seen[r.ip] = n + 1
        out[(r.ip, n)] = r
        order.append((r.ip, n))
    return out, order


def divergences(native_records, monitored_records, limit: int = 200) -> list[Divergence]:
    nat, _ = _keyed(native_records)
    mon, order = _keyed(monitored_records)
    out = []
    for key in order:
        m = mon[key]
        n = nat.get(key)
        if n is None:
            continue
        if m.produced != n.produced:
            out.append(Divergence(m.ip, m.name, m.text, key[1], m.describe(), n.describe()))
            if len(out) >= limit:
                break
    return out


def summarize(divs: list[Divergence]) -> list[str]:
    """One line per distinct instruction address (first occurrence), in execution order."""
    lines, seen = [], set()
    for d in divs:
        if d.ip in seen:
            continue
        seen.add(d.ip)
        lines.append(d.line())
    return lines
