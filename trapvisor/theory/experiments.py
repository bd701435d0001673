"""Measuring the recipe-built monitor against Popek & Goldberg's three properties.

Popek & Goldberg 1974 (CACM 17(7), section 3, virtual machine monitors): a VMM must have

* **equivalence** -- a program under the monitor behaves as on the bare
  machine, except for timing and resource availability.  Measured here in
  lock step (``lockstep``): after every instruction the guest's state, seen
  through the VM map, must equal the bare machine's.  The first instruction
  after which they differ, with the program and both runs up to it, is the
  witness.  (``run_virtualized`` runs a program through to its end, for
  ``theory run`` and the two-VM runs, which compare final states.)
* **resource control** -- no program can affect the resources available to
  it.  Measured by the bare hardware's audit (``recipe_vmm.BareHardware``):
  any access outside the running guest's partition, or any change of M or R
  without a trap, is a violation.
* **efficiency** -- all innocuous instructions run directly.  Measured as the
  share of guest instructions the real machine executed directly.

The programs come from ``program_sets``: every program within a bound (a
proof within that bound when all agree), random programs (sampling), and
programs built from classification witnesses.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field

from typing import Iterable

from trapvisor.theory.formal_machine import Machine, Mode, State
from trapvisor.theory.isa import ISA
from trapvisor.theory.program_sets import GuestImage, random_image, random_programs
from trapvisor.theory.recipe_vmm import CP_WORDS, BareHardware, RecipeVMM, Violation, _align, bare_hardware_for

S, U = Mode.S, Mode.U
GUEST_WORDS = 8
STEPS = 60

__all__ = ["GuestImage", "random_image", "bare_run", "build_stack", "run_virtualized", "find_divergence",
           "check_programs", "equivalence", "two_vms", "Divergence", "EquivalenceReport"]


def bare_run(isa: ISA, guest: GuestImage, steps: int) -> tuple[State, list]:
    m = Machine(isa, len(guest.image))
    return m.run(State(guest.image, guest.start.M, guest.start.P, guest.start.R), steps)


# ---------------------------------------------------------------------------
# a stack of monitors


@dataclass
class Stack:
    """Bare hardware, ``1 + nesting`` monitors, guests on the innermost."""

    bare: BareHardware
    monitors: list[RecipeVMM]

    @property
    def top(self) -> RecipeVMM:
        return self.monitors[-1]


def build_stack(isa: ISA, guest_sizes: list[int], *, nesting: int = 0, hybrid: bool = False) -> Stack:
    bare = bare_hardware_for(isa, guest_sizes, nesting)
    cp_words = _align(CP_WORDS, isa.partition_alignment)
    monitors = [RecipeVMM(isa, bare, hybrid=hybrid)]
    for level in range(1, nesting + 1):
        monitors.append(monitors[-1].create_nested(bare.q - level * cp_words))
    return Stack(bare, monitors)


@dataclass
class Divergence:
    """Where equivalence breaks: the program, the step, and the two executions side by side."""

    guest: GuestImage
    step: int  # 1-based: the state after this many instructions differs
    instruction: str
    before: State  # the bare machine just before that instruction
    bare_after: State
    vmm_after: State
    violations: list[Violation]
    trace: list = field(default_factory=list)  # [(step, instruction, bare state, VMM state)]

    def differences(self) -> list[str]:
        return [f"{n}: bare {a} vs VMM {b}" for n, a, b in _differences(self.bare_after, self.vmm_after)]

    def side_by_side(self) -> list[tuple[str, str, str, str]]:
        """(step, instruction, bare machine, under the monitor) up to and including the divergence."""
        rows = [("0", "(start)", str(self._start()), str(self._start()))]
        for n, ins, bare, vmm in self.trace:
            rows.append((str(n), ins, str(bare), str(vmm) if vmm != bare else "same"))
        return rows

    def _start(self) -> State:
        g = self.guest
        return State(g.image, g.start.M, g.start.P, g.start.R)

    def lines(self, isa: ISA, listing: bool = True) -> list[str]:
        out = [f"program ({self.guest.name}):"]
        if listing:
            out += ["  " + l for l in self.guest.listing(isa)]
        out += [
            f"start PSW {self.guest.start}",
            f"step {self.step}: {self.instruction}",
            f"  state before : {self.before}",
            f"  bare machine : {self.bare_after}",
            f"  under VMM    : {self.vmm_after}",
            "  differs in   : " + "; ".join(self.differences()),
        ]
        for v in self.violations[:3]:
            out.append(f"  resource control: {v}")
        return out

    def to_json(self, isa: ISA) -> dict:
        js = lambda s: {"E": list(s.E), "M": str(s.M), "P": s.P, "R": [s.R.l, s.R.b]}  # noqa: E731
        return {
            "program": list(self.guest.image), "name": self.guest.name, "listing": self.guest.listing(isa),
            "start": str(self.guest.start), "step": self.step, "instruction": self.instruction,
            "before": js(self.before), "bare_after": js(self.bare_after), "vmm_after": js(self.vmm_after),
            "differences": self.differences(),
            "side_by_side": [{"step": n, "instruction": i, "bare": b, "vmm": v} for n, i, b, v in self.side_by_side()],
            "violations": [str(v) for v in self.violations],
        }


def _differences(a: State, b: State) -> list[tuple[str, object, object]]:
    if len(a.E) != len(b.E):
        return [("storage size", len(a.E), len(b.E))]
    out = [(f"E[{i}]", x, y) for i, (x, y) in enumerate(zip(a.E, b.E)) if x != y]
    for name in ("M", "P", "R"):
        if getattr(a, name) != getattr(b, name):
            out.append((name, getattr(a, name), getattr(b, name)))
    return out


@dataclass
class GuestRun:
    final: State
    guest_steps: int
    direct: int  # executed directly by the real machine
    interpreted: Counter
    reflected: Counter
    violations: list[Violation]


def run_virtualized(isa: ISA, guest: GuestImage, steps: int, *, hybrid: bool = False, nesting: int = 0) -> GuestRun:
    stack = build_stack(isa, [len(guest.image)], nesting=nesting, hybrid=hybrid)
    cp = stack.top
    vm = cp.create_vm(guest.image, guest.start)
    final = cp.run_guest(vm, steps)
    if any(m.lost_control for m in stack.monitors):
        stack.bare.violations.append(_lost(next(m for m in stack.monitors if m.lost_control), final))
    # Counts are the innermost monitor's: the outer ones only pass traps up.
    return GuestRun(final, vm.guest_steps, stack.bare.direct, vm.interpreted, vm.reflected, stack.bare.violations)


def _lost(cp: RecipeVMM, state: State) -> Violation:
    return Violation(f"monitor lost control: {cp.lost_control}", "-", state, state)


def lockstep(isa: ISA, guest: GuestImage, steps: int, *, hybrid: bool = False,
             nesting: int = 0) -> tuple[Divergence | None, GuestRun]:
    """Run the bare machine and the monitor one instruction at a time, comparing after each.

    Equivalence is about behaviour, not only the final state: a difference
    that a later trap overwrites (the trap stores the old PSW in E[0]) is
    still a difference.  Returns the first differing step (None if there is
    none) and the monitor's counts for the run.
    """
    m = Machine(isa, len(guest.image))
    state = State(guest.image, guest.start.M, guest.start.P, guest.start.R)
    stack = build_stack(isa, [len(guest.image)], nesting=nesting, hybrid=hybrid)
    cp = stack.top
    vm = cp.create_vm(guest.image, guest.start)
    trace = []
    div = None
    for n in range(1, steps + 1):
        ex = m.step(state)
        r = cp.run_vm(vm, 1)
        got = cp.guest_state(vm)
        if r.lost_control:
            stack.bare.violations.append(_lost(cp, state))
        name = str(ex.instance) if ex.instance else f"(fetch: {ex.trap} trap)"
        if ex.trap and ex.instance:
            name += f" [{ex.trap} trap]"
        trace.append((n, name, ex.after, got))
        if got != ex.after:
            div = Divergence(guest, n, name, state, ex.after, got, list(stack.bare.violations), trace)
            break
        if ex.after == state:
            break
        state = ex.after
    run = GuestRun(cp.guest_state(vm), vm.guest_steps, stack.bare.direct, vm.interpreted, vm.reflected,
                   stack.bare.violations)
    return div, run


def find_divergence(isa: ISA, guest: GuestImage, steps: int, *, hybrid: bool = False, nesting: int = 0) -> Divergence | None:
    """Replay bare and virtualized runs in lock step; the first differing state, with both traces."""
    return lockstep(isa, guest, steps, hybrid=hybrid, nesting=nesting)[0]


@dataclass
class EquivalenceReport:
    isa: str
    mode: str  # "full", "hybrid"
    nesting: int
    programs: int
    steps: int
    passed: int
    guest_steps: int
    direct: int
    interpreted: Counter
    reflected: Counter
    violations: int
    programs_with_violations: int
    first_failure: Divergence | None
    first_violation: Violation | None
    seconds: float
    failures: list[int] = field(default_factory=list)  # indexes of failing programs
    program_set: str = "random programs"
    exhaustive: bool = False  # every program within a bound (else a sample)
    stopped: bool = False  # stopped at the first program that broke the monitor
    total: int | None = None  # programs in the set (when it was not run to the end)

    @property
    def equivalent(self) -> bool:
        return self.passed == self.programs

    @property
    def held(self) -> bool:
        """Equivalence and resource control on every program run."""
        return self.equivalent and not self.violations

    @property
    def efficiency(self) -> float:
        return self.direct / self.guest_steps if self.guest_steps else 0.0

    @property
    def monitor(self) -> str:
        name = {"full": "recipe VMM", "hybrid": "hybrid VMM"}[self.mode]
        return name + (f", {self.nesting + 1} deep" if self.nesting else "")

    def to_json(self, isa: ISA) -> dict:
        return {
            "isa": self.isa, "monitor": self.mode, "nesting": self.nesting, "program_set": self.program_set,
            "exhaustive": self.exhaustive, "stopped_at_first_failure": self.stopped, "programs": self.programs,
            "programs_in_set": self.total,
            "steps_per_program": self.steps, "equivalent": self.passed, "diverged": self.programs - self.passed,
            "guest_instructions": self.guest_steps, "executed_directly": self.direct,
            "efficiency": round(self.efficiency, 4), "interpreted": dict(self.interpreted),
            "reflected_traps": dict(self.reflected), "resource_violations": self.violations,
            "programs_with_resource_violations": self.programs_with_violations,
            "first_failure": self.first_failure.to_json(isa) if self.first_failure else None,
            "first_violation": str(self.first_violation) if self.first_violation else None,
            "seconds": round(self.seconds, 3),
        }


def check_programs(isa: ISA, programs: Iterable[GuestImage], *, steps: int = STEPS, hybrid: bool = False,
                   nesting: int = 0, program_set: str = "programs", exhaustive: bool = False,
                   stop_at_first: bool = False, total: int | None = None) -> EquivalenceReport:
    """Run every program bare and under the monitor, in lock step; compare every state through the VM map.

    ``stop_at_first``: stop at the first program that diverges or breaks
    resource control (``EquivalenceReport.stopped`` says so).
    """
    t0 = time.perf_counter()
    n = passed = gsteps = direct = nviol = nviol_prog = 0
    interpreted: Counter = Counter()
    reflected: Counter = Counter()
    first: Divergence | None = None
    first_violation: Violation | None = None
    failures = []
    for k, guest in enumerate(programs):
        n += 1
        div, run = lockstep(isa, guest, steps, hybrid=hybrid, nesting=nesting)
        gsteps += run.guest_steps
        direct += run.direct
        interpreted.update(run.interpreted)
        reflected.update(run.reflected)
        if run.violations:
            nviol += len(run.violations)
            nviol_prog += 1
            first_violation = first_violation or run.violations[0]
        if div is None:
            passed += 1
        else:
            failures.append(k)
            first = first or div
        if stop_at_first and (failures or nviol):
            break
    else:
        stop_at_first = False
    return EquivalenceReport(isa.name, "hybrid" if hybrid else "full", nesting, n, steps, passed, gsteps, direct,
                             interpreted, reflected, nviol, nviol_prog, first, first_violation,
                             time.perf_counter() - t0, failures, program_set, exhaustive, stop_at_first,
                             n if total is None else total)


def equivalence(isa: ISA, programs: int = 200, *, steps: int = STEPS, seed: int = 0, hybrid: bool = False,
                nesting: int = 0, size: int = GUEST_WORDS) -> EquivalenceReport:
    """Run ``programs`` random programs bare and under the monitor; compare."""
    return check_programs(isa, random_programs(isa, programs, seed=seed, size=size), steps=steps, hybrid=hybrid,
                          nesting=nesting, program_set=f"{programs} random programs of {size} words (seed {seed})")


@dataclass
class TwoVMReport:
    programs: int
    passed: int
    violations: int
    switches: int


def two_vms(isa: ISA, pairs: int = 50, *, steps: int = STEPS, quantum: int = 7, seed: int = 1,
            hybrid: bool = False) -> TwoVMReport:
    """Host two guests at once, interleaved every ``quantum`` instructions."""
    rng = random.Random(seed)
    passed = violations = switches = 0
    for _ in range(pairs):
        guests = [random_image(isa, rng), random_image(isa, rng)]
        stack = build_stack(isa, [len(g.image) for g in guests], hybrid=hybrid)
        cp = stack.top
        vms = [cp.create_vm(g.image, g.start) for g in guests]
        done = [False, False]
        remaining = [steps, steps]
        while not all(done):
            for i, vm in enumerate(vms):
                if done[i]:
                    continue
                r = cp.run_vm(vm, min(quantum, remaining[i]))
                switches += 1
                remaining[i] -= r.steps
                done[i] = r.fixpoint or remaining[i] <= 0
        for g, vm in zip(guests, vms):
            if cp.guest_state(vm) == bare_run(isa, g, steps)[0]:
                passed += 1
        violations += len(stack.bare.violations)
    return TwoVMReport(2 * pairs, passed, violations, switches)
