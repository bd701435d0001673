"""End-of-run summaries on stderr, and the exit status each kind of run gives the shell.

One function per kind of run: the bare simulated PC (:func:`report_pc_run`),
a technique of the monitor (:func:`report_technique_run`) and KVM
(:func:`report_kvm_run`).  A guest that died (triple fault, unimplemented
instruction, a KVM internal error) is shown as what the guest did, with a
register dump; ``--quiet`` leaves out the summary, never the failure.

Exit status: the guest's isa-debug-exit code when it wrote one, 130 when
interrupted, 3 at an instruction or time limit, 4 when the guest died.
"""

from __future__ import annotations

import sys

# Stops of the bare PC that are the guest's failure, not a limit it reached.
GUEST_FAILURES = ("triple fault", "instruction not implemented", "halted forever", "fetch outside RAM",
                  "task switch", "real mode", "virtual-8086 mode", "monitor recursion", "reset")
LIMITS = ("instruction limit", "time limit")


def _err(line: str = "") -> None:
    print(line, file=sys.stderr)


def report_pc_run(pc, result, *, quiet: bool = False) -> int:
    """``trapvisor run`` on the simulated PC (``machine.pc.RunResult``)."""
    if result.stop_reason in GUEST_FAILURES:
        _err(f"trapvisor: guest stopped: {result.stop_reason}: {result.detail}")
        if result.stop_reason != "reset":
            _err(pc.cpu.state_dump())
    if not quiet:
        what = "interrupted" if result.interrupted else (
            f"exit code {result.exit_code}" if result.exit_code is not None else result.stop_reason)
        _err(f"trapvisor: {what}; {result.instructions:,} instructions in {result.seconds:.2f} s "
             f"({result.mips:.2f} MIPS)")
    if result.interrupted:
        return 130
    if result.exit_code is not None:
        return result.exit_code
    if result.stop_reason == "reset":
        return 0
    return 3 if result.stop_reason in LIMITS else 4


def technique_outcome(r) -> str:
    """How a technique's run ended, in words (``vmm.techniques.base.TechniqueResult``)."""
    return f"exit code {r.exit_code}" if r.exit_code is not None else f"{r.stop_reason}: {r.detail}"


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
    if r.exit_code is not None:
        return r.exit_code
    return 3 if r.stop_reason == "instruction limit" else 4


def report_kvm_run(res, *, quiet: bool = False) -> int:
    """``trapvisor run --accel kvm`` and ``demo-linux`` (``kvm.runner.RunResult``)."""
    if res.output and not res.output.endswith(b"\n"):
        _err()                  # the summary starts on a line of its own
    if res.problem or res.interrupted:
        _err(f"trapvisor: guest stopped: {res.stop_reason}")
        for line in res.detail:
            _err(f"  {line}")
    if not quiet:
        for line in res.summary:
            _err(line)
    return res.exit_status
