"""Popek & Goldberg's three theorems for an ISA: the conditions, the evidence, and the alarm.

Each theorem's condition is one function below (``theorem_1``, ``theorem_2``,
``theorem_3``) quoting the paper.  A condition is *sufficient*: when it holds
the paper promises a monitor, built by its recipe; when it fails the paper
says nothing.  :func:`check_theorems` checks each condition on a
classification and then runs the monitor the theorem's proof constructs
(``recipe_vmm``: full for Theorem 1, nested for Theorem 2, hybrid for
Theorem 3) on programs -- every program within a bound (``program_sets``),
programs replaying the classification's witnesses, and random ones -- and
compares the two.  The outcome is one of

* **proven within the bounds**: the condition holds over every state of the
  bounded machine and the monitor is equivalent, with resource control, on
  every program of the program bound (counts given);
* **refuted**: the condition fails and a program tells the monitor from the
  bare machine (the program and both executions, side by side);
* **explained**: the condition fails, no program tells them apart, and the
  ISA says why the monitor works anyway (``ISA.notes``: sufficient, not
  necessary);
* **contradiction**: the classification and the evidence disagree -- the
  condition holds but a program breaks the monitor, or the condition fails,
  no program breaks it and the ISA gives no reason.  Either means a
  definition, the monitor or the model is wrong for this ISA; the command
  line prints the witness and exits with status 3.

With a sampled classification (a bridge to a real machine, or ``samples``)
"holds" only means no offender was found.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trapvisor.theory.adapter import Bounds
from trapvisor.theory.classifier import Classification, InstructionVerdict, classify
from trapvisor.theory.definitions import Witness
from trapvisor.theory.experiments import EquivalenceReport, check_programs
from trapvisor.theory.isa import ISA
from trapvisor.theory.program_sets import ProgramBounds, bounded_programs, count, random_programs, witness_programs

THEOREM_1 = ("For any conventional third generation computer, a virtual machine monitor may be constructed "
             "if the set of sensitive instructions for that computer is a subset of the set of privileged instructions.")
THEOREM_2 = ("A conventional third generation computer is recursively virtualizable if it is: (a) virtualizable, "
             "and (b) a VMM without any timing dependencies can be constructed for it.")
THEOREM_3 = ("A hybrid virtual machine monitor may be constructed for any conventional third generation machine "
             "in which the set of user sensitive instructions are a subset of the set of privileged instructions.")

PROVEN, REFUTED, EXPLAINED, CONTRADICTION, SAMPLED, NO_EVIDENCE = (
    "proven within the bounds", "refuted", "explained", "contradiction", "sampled", "no evidence")

CONTRADICTION_EXIT = 3


@dataclass
class Offender:
    instruction: str
    sensitivity: Witness  # why it is (user) sensitive
    not_privileged: Witness | None  # why it is not privileged

    def to_json(self, adapter) -> dict:
        return {"instruction": self.instruction, "sensitive_witness": self.sensitivity.to_json(adapter),
                "not_privileged_witness": self.not_privileged.to_json(adapter) if self.not_privileged else None}


@dataclass
class Condition:
    """A theorem's condition evaluated on a classification."""

    holds: bool
    offenders: list[Offender]
    reason: str


def _offenders(verdicts: list[InstructionVerdict], user: bool) -> list[Offender]:
    out = []
    for v in verdicts:
        w = v.unprivileged_user_sensitive if user else v.unprivileged_sensitive
        if w is not None:
            out.append(Offender(v.name, w, v.unprivileged_counter.get("user" if user else "sensitive")))
    return out


def _names(offenders: list[Offender]) -> str:
    return ", ".join(o.instruction for o in offenders)


def theorem_1(c: Classification) -> Condition:
    """Theorem 1's condition: the sensitive instructions are a subset of the privileged ones.

    Popek & Goldberg 1974, section 3 (Theorem 1): "For any conventional third
    generation computer, a virtual machine monitor may be constructed if the
    set of sensitive instructions for that computer is a subset of the set
    of privileged instructions."  Checked per instruction instance: an
    opcode offends when one of its instances is sensitive and not privileged.
    """
    off = _offenders(c.verdicts, user=False)
    if off:
        return Condition(False, off, f"sensitive but not privileged: {_names(off)}")
    sens = [v.name for v in c.verdicts if v.sensitive]
    return Condition(True, [], f"every sensitive instruction ({', '.join(sens) or 'none'}) is privileged")


def theorem_2(c: Classification) -> Condition:
    """Theorem 2's condition: (a) virtualizable and (b) a VMM without timing dependencies.

    Popek & Goldberg 1974, the section on recursive virtualization
    (Theorem 2): "A conventional third generation computer is recursively
    virtualizable if it is: (a) virtualizable, and (b) a VMM without any
    timing dependencies can be constructed for it."  (a) is established by
    Theorem 1's condition.  (b) holds for every ISA of the formal machine:
    the model has no clock, timer or I/O, and the recipe monitor's behaviour
    depends on the guest's instructions alone.
    """
    t1 = theorem_1(c)
    if t1.holds:
        return Condition(True, [], "(a) holds by Theorem 1's condition; (b) holds: the formal machine has no clock, "
                                   "timer or I/O, and the recipe monitor depends only on the guest's instructions")
    return Condition(False, t1.offenders, f"(a) is not established: Theorem 1's condition fails "
                                          f"({_names(t1.offenders)}); (b) would hold, the model has no clock")


def theorem_3(c: Classification) -> Condition:
    """Theorem 3's condition: the user-sensitive instructions are a subset of the privileged ones.

    Popek & Goldberg 1974, the section on hybrid virtual machines (Theorem 3):
    "A hybrid virtual machine monitor may be constructed for any
    conventional third generation machine in which the set of user
    sensitive instructions are a subset of the set of privileged
    instructions."  Per instance, as for Theorem 1.
    """
    off = _offenders(c.verdicts, user=True)
    if off:
        return Condition(False, off, f"user sensitive but not privileged: {_names(off)}")
    sup = _names(_offenders(c.verdicts, user=False))
    return Condition(True, [], "every user-sensitive instruction is privileged"
                     + (f"; sensitive from supervisor mode only: {sup}" if sup else ""))


@dataclass
class TheoremVerdict:
    number: int
    statement: str
    condition: str
    holds: bool  # the theorem's condition holds (so its conclusion follows)
    conclusion: str
    reason: str
    offenders: list[Offender] = field(default_factory=list)
    evidence: list[EquivalenceReport] = field(default_factory=list)
    status: str = NO_EVIDENCE
    remark: str = ""
    contradiction: str = ""

    @property
    def counterexample(self):
        return next((e.first_failure for e in self.evidence if e.first_failure is not None), None)

    @property
    def violation(self):
        return next((e.first_violation for e in self.evidence if e.first_violation is not None), None)

    def to_json(self, adapter, isa) -> dict:
        ce = self.counterexample
        return {
            "theorem": self.number, "statement": self.statement, "condition": self.condition,
            "condition_holds": self.holds, "conclusion": self.conclusion, "reason": self.reason,
            "status": self.status, "contradiction": self.contradiction or None,
            "offenders": [o.to_json(adapter) for o in self.offenders],
            "evidence": [e.to_json(isa) for e in self.evidence],
            "counterexample": ce.to_json(isa) if ce is not None and hasattr(isa, "fmt") else None,
            "remark": self.remark,
        }


@dataclass
class TheoremReport:
    isa: object
    classification: Classification
    theorems: list[TheoremVerdict]
    program_bounds: ProgramBounds | None = None

    def __getitem__(self, n: int) -> TheoremVerdict:
        return next(t for t in self.theorems if t.number == n)

    @property
    def contradictions(self) -> list[TheoremVerdict]:
        return [t for t in self.theorems if t.status == CONTRADICTION]

    def to_json(self) -> dict:
        c = self.classification
        return {"isa": self.isa.name, "classification_method": c.method, "scope": c.scope_json,
                "scope_text": c.scope, "caveat": c.caveat,
                "program_bounds": self.program_bounds.as_dict() if self.program_bounds else None,
                "contradictions": [t.number for t in self.contradictions],
                "theorems": [t.to_json(c.adapter, self.isa) for t in self.theorems]}


def _evidence(isa: ISA, c: Classification, pb: ProgramBounds, random_n: int, seed: int, *, hybrid=False,
              nesting=0, user=False, stop_at_first=False) -> list[EquivalenceReport]:
    """The monitor on the bounded programs, the witness replays and random programs.

    When the condition fails one counterexample settles the verdict, so
    ``stop_at_first`` ends each set at the first program that breaks.
    """
    kw = dict(steps=pb.steps, hybrid=hybrid, nesting=nesting, stop_at_first=stop_at_first)
    out = [check_programs(isa, bounded_programs(isa, pb), program_set="programs within the bound", exhaustive=True,
                          total=count(isa, pb), **kw)]
    witnesses = witness_programs(isa, c, user=user)
    if witnesses:
        out.append(check_programs(isa, witnesses, program_set="programs replaying the offending witnesses", **kw))
    if random_n:
        out.append(check_programs(isa, random_programs(isa, random_n, seed=seed), steps=60, hybrid=hybrid,
                                  nesting=nesting, stop_at_first=stop_at_first,
                                  program_set=f"random programs of 8 words (seed {seed})"))
    return out


def _judge(t: TheoremVerdict, c: Classification, explanation: str) -> None:
    """Set ``t.status`` from the condition and the evidence; raise the alarm if they disagree."""
    if not t.evidence:
        t.status = SAMPLED if c.method != "exhaustive" else NO_EVIDENCE
        return
    broken = [e for e in t.evidence if not e.held]
    total = sum(e.programs for e in t.evidence)
    sets = "; ".join(f"{e.programs} {e.program_set}" for e in t.evidence)
    exhaustive = c.method == "exhaustive" and any(e.exhaustive for e in t.evidence)
    monitor = t.evidence[0].monitor
    if t.holds and not broken:
        t.status = PROVEN if exhaustive else SAMPLED
        t.remark = (f"The {monitor} agreed with the bare machine, with resource control, on all {total} programs "
                    f"run: {sets}.")
    elif t.holds:
        e = broken[0]
        what = (f"diverges from the bare machine on {e.programs - e.passed} of {e.programs} {e.program_set}"
                if not e.equivalent else f"breaks resource control in {e.programs_with_violations} of "
                                         f"{e.programs} {e.program_set}")
        t.status = CONTRADICTION
        t.contradiction = (f"Theorem {t.number}'s condition holds ({t.reason}), yet the {monitor} {what}. "
                           "The classification missed what this program exposes: a definition, the monitor or "
                           "the model does not fit this ISA.")
    elif broken:
        e = broken[0]
        t.status = REFUTED
        what = "diverges from the bare machine" if not e.equivalent else "breaks resource control"
        t.remark = (f"The {monitor} {what} on {e.program_set}: "
                    + (f"program {e.programs} of {e.total} is the first that does" if e.stopped else
                       f"{e.programs - e.passed} of {e.programs} programs") + ".")
    elif explanation:
        t.status = EXPLAINED
        t.remark = (f"Sufficient, not necessary: the condition fails, yet the {monitor} was equivalent on all "
                    f"{total} programs run. The ISA explains why: {explanation}")
    else:
        o = t.offenders[0]
        note = "isa.notes['hybrid']" if t.number == 3 else "isa.notes['full']"
        t.status = CONTRADICTION
        t.contradiction = (f"Theorem {t.number}'s condition fails ({o.instruction}: {o.sensitivity.definition}), "
                           f"yet no program tells the {monitor} from the bare machine: all {total} programs agree "
                           f"({sets}). Either the program bound is too small to show the flaw, or the condition "
                           f"is not necessary here; an ISA that knows why says so in {note}.")


def check_theorems(
    isa,
    *,
    bounds: Bounds | None = None,
    classification: Classification | None = None,
    program_bounds: ProgramBounds | None = None,
    programs: int = 50,
    seed: int = 0,
    evidence: bool = True,
) -> TheoremReport:
    """Theorems 1-3 for ``isa``: conditions on the classification, evidence from the monitors, the alarm.

    ``isa`` is an ISA of the formal machine (then the monitors run, unless
    ``evidence`` is False) or a stand-in with a ``name`` for a bridge.
    ``programs`` random programs are run besides the bounded set.
    """
    c = classification or classify(isa, bounds=bounds)
    scope = f"({c.method}: {c.scope})"
    pb = program_bounds or ProgramBounds()
    run = evidence and isinstance(isa, ISA)
    if run:
        pb.check(isa)
    notes = getattr(isa, "notes", {})

    def verdict(n, statement, cond_text, cond: Condition, yes: str, **ev):
        t = TheoremVerdict(n, statement, cond_text, cond.holds, yes if cond.holds else "the theorem does not apply",
                           f"{cond.reason} {scope}", cond.offenders)
        if run:
            t.evidence = _evidence(isa, c, pb, programs if n != 2 else (max(programs // 4, 1) if programs else 0), seed,
                                   stop_at_first=not cond.holds, **ev)
        if c.method != "exhaustive" and cond.holds:
            t.conclusion = f"no offender found: {yes} if none exists"
            t.reason += " -- sampled: absence of an offender is not proof"
        return t

    t1 = verdict(1, THEOREM_1, "sensitive ⊆ privileged", theorem_1(c), "a VMM may be constructed")
    t2 = verdict(2, THEOREM_2, "(a) virtualizable and (b) a VMM without timing dependencies", theorem_2(c),
                 "recursively virtualizable", nesting=1)
    t3 = verdict(3, THEOREM_3, "user sensitive ⊆ privileged", theorem_3(c), "a hybrid VMM may be constructed",
                 hybrid=True, user=True)
    for t in (t1, t2, t3):
        _judge(t, c, notes.get("hybrid" if t.number == 3 else "full", ""))
    return TheoremReport(isa, c, [t1, t2, t3], pb if run else None)
