"""End-of-run summaries on stderr, and the exit status each kind of run gives the shell.

One function per kind of result: a machine's run, on the bare simulated PC
or on KVM (:func:`report_run`, ``machine.run_result.RunResult``), and a
technique of the monitor (:func:`report_technique_run`).  A guest that died
(triple fault, unimplemented instruction, a KVM internal error) is shown as
what the guest did, with a register dump; ``--quiet`` leaves out the
summary, never the failure.

Exit status: one rule for every backend, ``machine.run_result.exit_status``.
"""

from __future__ import annotations

import sys

from ..machine.run_result import exit_status


def _err(line: str = "") -> None:
    print(line, file=sys.stderr)


def report_run(result, *, quiet: bool = False) -> int:
    """``trapvisor run`` on the simulated PC or on KVM (``machine.run_result.RunResult``)."""
    if result.output and not result.output.endswith(b"\n"):
        _err()                  # the summary starts on a line of its own
    if result.problem or result.interrupted or result.stop_reason == "reset":
        more = f": {result.detail}" if result.detail and result.detail != result.stop_reason else ""
        _err(f"trapvisor: guest stopped: {result.stop_reason}{more}")
        for line in result.dump:
            _err(f"  {line}")
    if not quiet:
        for line in result.summary:
            _err(line)
    return result.exit_status


def technique_outcome(r) -> str:
    """How a technique's run ended, in words (``vmm.techniques.base.TechniqueResult``)."""
    if r.exit_code is not None:
        return f"exit code {r.exit_code}"
    return f"{r.stop_reason}: {r.detail}" if r.detail else str(r.stop_reason)


def report_technique_run(r, *, quiet: bool = False) -> int:
    """``trapvisor run --technique NAME``."""
    if not quiet:
        _err(f"trapvisor [{r.technique}, {r.cpu_variant} cpu]: {technique_outcome(r)}; "
             f"{r.instructions:,} guest instructions, {100 * r.direct_share:.2f}% direct, "
             f"{r.cycles:,} simulated cycles, {r.seconds:.2f} s")
        for reason, n in list(r.traps_by_reason().items())[:12]:
            _err(f"  {n:>9,}  {reason}")
        for note in r.notes:
            _err(f"  {note}")
    return exit_status(r.exit_code, r.stop_reason, problem=r.stop_reason not in (None, "instruction limit",
                                                                                "time limit"))
