"""``trapvisor compare``: one kernel, natively and under each technique, in one table.

For every technique the table says whether the guest's console output and
exit code are identical to the native run (Popek and Goldberg's
*equivalence*; the first differing line when not), the share of guest
instructions executed directly by the host CPU (*efficiency*), the monitor's
traps by reason, the simulated cycles under the cost model and the slowdown
against native, and the host's wall time.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from ..vmm.costmodel import CostModel
from ..vmm.run import run_technique
from ..vmm.techniques.base import TechniqueResult
from .divergence import divergences, summarize

DEFAULT_TECHNIQUES = ("native", "emulate", "trap-emulate")


def default_techniques() -> tuple:
    """The simulated techniques, plus KVM when /dev/kvm is usable here."""
    from ..vmm.techniques.kvm import kvm_label
    try:
        return DEFAULT_TECHNIQUES + (("kvm",) if kvm_label() else ())
    except Exception:
        return DEFAULT_TECHNIQUES


@dataclass
class Row:
    result: TechniqueResult
    identical: bool
    first_difference: str | None
    cycle_slowdown: float
    wall_slowdown: float
    divergences: list = None


    def to_dict(self) -> dict:
        r = self.result
        return {
            "technique": r.technique, "cpu": r.cpu_variant, "identical": self.identical,
            "first_difference": self.first_difference, "exit_code": r.exit_code,
            "stop_reason": r.stop_reason, "instructions": r.instructions, "direct": r.direct,
            "direct_share": r.direct_share, "traps": r.traps_by_reason(), "cycles": r.cycles,
            "cycle_slowdown": self.cycle_slowdown, "seconds": r.seconds,
            "wall_slowdown": self.wall_slowdown,
            "divergences": [d.to_dict() for d in (self.divergences or [])],
            "notes": list(r.notes),
        }


def first_difference(native: bytes, other: bytes) -> str | None:
    a = native.decode("latin-1").splitlines()
    b = other.decode("latin-1").splitlines()
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"line {i + 1}: native {x!r}, here {y!r}"
    if len(a) != len(b):
        i = min(len(a), len(b))
        return (f"line {i + 1}: native {a[i]!r}, here (no more output)" if len(a) > len(b)
                else f"line {i + 1}: native (no more output), here {b[i]!r}")
    return None


def compare(kernel: str, *, cmdline: str = "", techniques=DEFAULT_TECHNIQUES, strict: bool = False,
            memory_bytes: int = 128 << 20, max_instructions: int = 2_000_000_000,
            costs: CostModel | None = None, keep_events: bool = False, progress=None,
            shadow_cache: int | None = None) -> list[Row]:
    costs = costs or CostModel.default()
    names = list(techniques)
    if "native" not in names:
        names.insert(0, "native")
    results: dict[str, TechniqueResult] = {}
    for name in names:
        if progress:
            progress(name)
        # Native and monitored runs record their sensitive instructions, so a
        # divergence can be traced to the instruction that caused it.
        results[name] = run_technique(name, kernel, cmdline=cmdline, memory_bytes=memory_bytes,
                                      max_instructions=max_instructions, costs=costs,
                                      strict=strict, keep_events=keep_events,
                                      audit=name in ("native", "trap-emulate", "vtx", "vtx-noept"), shadow_cache=shadow_cache)
    native = results["native"]
    rows = []
    for name in names:
        r = results[name]
        diff = first_difference(native.output, r.output)
        if diff is None and r.exit_code != native.exit_code:
            diff = f"exit code: native {native.exit_code}, here {r.exit_code}"
        divs = divergences(native.audit, r.audit) if name != "native" and r.audit else []
        rows.append(Row(r, diff is None, diff,
                        r.cycles / native.cycles if native.cycles and r.cycles is not None else None,
                        r.seconds / native.seconds if native.seconds else 0.0, divs))
    return rows


def print_table(rows: list[Row], kernel: str, cmdline: str, file=None) -> None:
    from rich.console import Console
    from rich.table import Table
    console = Console(file=file or sys.stdout, width=160)
    table = Table(title=f"trapvisor compare {kernel} {cmdline}".strip())
    for col in ("technique", "cpu", "identical to native", "exit", "direct %", "traps by reason",
                "sim. cycles", "slowdown (cycles)", "wall s", "slowdown (wall)"):
        table.add_column(col, overflow="fold")
    for row in rows:
        r = row.result
        traps = r.traps_by_reason()
        top = ", ".join(f"{reason.split(':', 1)[1]} {n}" for reason, n in list(traps.items())[:4])
        more = len(traps) - 4
        if more > 0:
            top += f", +{more} more"
        table.add_row(
            r.technique, r.cpu_variant,
            "yes" if row.identical else f"no: {row.first_difference}",
            str(r.exit_code) if r.exit_code is not None else (r.stop_reason or "-"),
            f"{100 * r.direct_share:.2f}" if r.cycles is not None else "n/a",
            top or "-",
            f"{r.cycles:,}" if r.cycles is not None else "n/a",
            f"{row.cycle_slowdown:.2f}x" if row.cycle_slowdown is not None else "n/a",
            f"{r.seconds:.2f}", f"{row.wall_slowdown:.2f}x")
    console.print(table)
    for row in rows:
        if row.divergences:
            lines = summarize(row.divergences)
            console.print(f"[bold]{row.result.technique} ({row.result.cpu_variant} cpu): "
                          f"{len(row.divergences)} sensitive-instruction executions saw something "
                          f"else than natively; first at each address:[/bold]")
            for line in lines[:25]:
                console.print("  " + line, highlight=False, markup=False)
            if len(lines) > 25:
                console.print(f"  ... {len(lines) - 25} more addresses (--json lists them all)")


def to_json(rows: list[Row], kernel: str, cmdline: str) -> str:
    return json.dumps({"kernel": kernel, "cmdline": cmdline, "rows": [r.to_dict() for r in rows]},
                      indent=2)
