"""How a run of a guest ended, whoever ran it: one record for the simulated PC and for KVM.

The bare simulated PC (``machine/pc.py``) and the KVM backend
(``kvm/runner.py``) both return a :class:`RunResult`; a technique of the
monitor returns a ``TechniqueResult`` (``vmm/techniques/base.py``), which
carries the monitor's own counts besides.  All three end in the same exit
status for the shell, decided in one place, :func:`exit_status`:

  the guest's isa-debug-exit code when it wrote one; 130 when interrupted
  (as a shell reports SIGINT); 3 at an instruction or time limit; 4 when
  the guest died (triple fault, an unimplemented instruction, a KVM
  internal error, halted with interrupts off); 0 when it stopped cleanly
  (a reset it asked for, a stop from another thread, a console match).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Stops that are the guest's failure rather than a limit it reached or a clean end.
GUEST_FAILURES = ("triple fault", "instruction not implemented", "halted forever", "fetch outside RAM",
                  "task switch", "real mode", "virtual-8086 mode", "monitor recursion")
LIMITS = ("instruction limit", "time limit")

EXIT_INTERRUPTED = 130
EXIT_LIMIT = 3
EXIT_GUEST_DIED = 4


def is_guest_failure(stop_reason: str | None) -> bool:
    return stop_reason is not None and any(stop_reason.startswith(f) for f in GUEST_FAILURES)


def exit_status(exit_code: int | None, stop_reason: str | None, *, interrupted: bool = False,
                problem: bool = False) -> int:
    """The status ``trapvisor run`` exits with for a run that ended so."""
    if interrupted:
        return EXIT_INTERRUPTED
    if exit_code is not None:
        return exit_code
    if problem or is_guest_failure(stop_reason):
        return EXIT_GUEST_DIED
    if stop_reason in LIMITS:
        return EXIT_LIMIT
    return 0


@dataclass
class RunResult:
    exit_code: int | None                  # the guest's isa-debug-exit code, if it wrote one
    stop_reason: str | None                # why the machine stopped otherwise, in words
    detail: str = ""                       # one line more about the stop
    problem: bool = False                  # the guest died, rather than asked to stop or met a limit
    instructions: int | None = None        # guest instructions; None where not counted (KVM)
    seconds: float = 0.0
    interrupted: bool = False
    exceptions: dict = field(default_factory=dict)   # vector -> deliveries (simulated PC)
    dump: list = field(default_factory=list)         # diagnostic lines: registers at the failure
    summary: list = field(default_factory=list)      # the end-of-run summary, line by line
    events: object = None                  # events.EventLog, where the backend keeps one
    output: bytes = b""                    # the console output, where the backend kept it
    backend: object = None                 # what ran it (e.g. the KVM host's description)
    debug: object = None                   # the DebugExit that ended the run (a host debugger's)

    @property
    def mips(self) -> float:
        if not self.instructions or self.seconds <= 0:
            return 0.0
        return self.instructions / self.seconds / 1e6

    @property
    def exit_status(self) -> int:
        return exit_status(self.exit_code, self.stop_reason, interrupted=self.interrupted,
                           problem=self.problem)
