"""Popek & Goldberg's three theorems, checked for an ISA.

Popek & Goldberg 1974, CACM 17(7) (wording as in shared/reference/
virtualization.md, section 1):

* **Theorem 1.** "For any conventional third generation computer, a virtual
  machine monitor may be constructed if the set of sensitive instructions for
  that computer is a subset of the set of privileged instructions."
* **Theorem 2.** "A conventional third generation computer is recursively
  virtualizable if it is: (a) virtualizable, and (b) a VMM without any timing
  dependencies can be constructed for it."
* **Theorem 3.** "A hybrid virtual machine monitor may be constructed for any
  conventional third generation machine in which the set of user sensitive
  instructions are a subset of the set of privileged instructions."

Each condition is *sufficient, not necessary*.  When a condition fails the
theorem says nothing; it does not say a monitor is impossible.  The ``paged``
ISA is the standing example: it fails Theorem 1's condition, yet the recipe
monitor with page-aligned partitions is equivalent.  So beside each verdict
this module also runs the recipe-built monitor (``recipe_vmm``) on random
programs, which is evidence, not proof, either way.

The subset checks are made per instruction *instance* (opcode with its
operands), because that is what the paper's instructions are: an opcode
counts as offending only if one of its instances is both sensitive and not
privileged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trapvisor.theory.adapter import Bounds
from trapvisor.theory.classifier import Classification, InstructionVerdict, Witness, classify
from trapvisor.theory.experiments import EquivalenceReport, equivalence
from trapvisor.theory.isa import ISA

THEOREM_1 = ("For any conventional third generation computer, a virtual machine monitor may be constructed "
             "if the set of sensitive instructions for that computer is a subset of the set of privileged instructions.")
THEOREM_2 = ("A conventional third generation computer is recursively virtualizable if it is: (a) virtualizable, "
             "and (b) a VMM without any timing dependencies can be constructed for it.")
THEOREM_3 = ("A hybrid virtual machine monitor may be constructed for any conventional third generation machine "
             "in which the set of user sensitive instructions are a subset of the set of privileged instructions.")


@dataclass
class Offender:
    instruction: str
    sensitivity: Witness  # why it is (user) sensitive
    not_privileged: Witness | None  # why it is not privileged

    def to_json(self, adapter) -> dict:
        return {"instruction": self.instruction, "sensitive_witness": self.sensitivity.to_json(adapter),
                "not_privileged_witness": self.not_privileged.to_json(adapter) if self.not_privileged else None}


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
    remark: str = ""

    def to_json(self, adapter, isa: ISA) -> dict:
        return {
            "theorem": self.number, "statement": self.statement, "condition": self.condition,
            "condition_holds": self.holds, "conclusion": self.conclusion, "reason": self.reason,
            "offenders": [o.to_json(adapter) for o in self.offenders],
            "evidence": [e.to_json(isa) for e in self.evidence], "remark": self.remark,
        }


@dataclass
class TheoremReport:
    isa: ISA
    classification: Classification
    theorems: list[TheoremVerdict]

    def __getitem__(self, n: int) -> TheoremVerdict:
        return next(t for t in self.theorems if t.number == n)

    def to_json(self) -> dict:
        c = self.classification
        return {"isa": self.isa.name, "classification_method": c.method, "scope": c.scope_json,
                "scope_text": c.scope, "caveat": c.caveat,
                "theorems": [t.to_json(c.adapter, self.isa) for t in self.theorems]}


def _offenders(verdicts: list[InstructionVerdict], user: bool) -> list[Offender]:
    out = []
    for v in verdicts:
        w = v.unprivileged_user_sensitive if user else v.unprivileged_sensitive
        if w is not None:
            counter = v.unprivileged_counter.get("user" if user else "sensitive")
            out.append(Offender(v.name, w, counter))
    return out


def _names(offenders: list[Offender]) -> str:
    return ", ".join(o.instruction for o in offenders)


def check_theorems(
    isa: ISA,
    *,
    bounds: Bounds | None = None,
    classification: Classification | None = None,
    programs: int = 100,
    seed: int = 0,
) -> TheoremReport:
    """Theorems 1-3 for ``isa``, with monitor runs on ``programs`` random programs as evidence."""
    c = classification or classify(isa, bounds=bounds)
    scope = f"({c.method}: {c.scope})"
    sensitive = [v.name for v in c.verdicts if v.sensitive]
    user_sensitive = [v.name for v in c.verdicts if v.user]
    privileged = [v.name for v in c.verdicts if v.privileged]
    sets = (f"sensitive = {{{', '.join(sensitive)}}}, user sensitive = {{{', '.join(user_sensitive)}}}, "
            f"privileged = {{{', '.join(privileged)}}}")

    run = programs > 0
    full = equivalence(isa, programs, seed=seed) if run else None
    hybrid = equivalence(isa, programs, seed=seed, hybrid=True) if run else None
    nested = equivalence(isa, max(programs // 4, 1), seed=seed, nesting=2) if run else None

    # -- Theorem 1 ------------------------------------------------------
    off1 = _offenders(c.verdicts, user=False)
    t1 = TheoremVerdict(1, THEOREM_1, "sensitive ⊆ privileged", not off1,
                        "a VMM may be constructed" if not off1 else "the theorem does not apply",
                        (f"every sensitive instruction is privileged {scope}; {sets}" if not off1 else
                         f"sensitive but not privileged: {_names(off1)} {scope}"),
                        off1, [full] if full else [])
    if off1 and full and full.equivalent and not full.violations:
        t1.remark = ("Sufficient, not necessary: this ISA fails the condition, yet the recipe-built monitor was "
                     f"equivalent on all {full.programs} random programs. " + _why(isa))
    elif off1 and full:
        t1.remark = (f"Consistent with the failed condition, the recipe-built monitor diverged on "
                     f"{full.programs - full.passed} of {full.programs} random programs"
                     + (f" and broke resource control in {full.programs_with_violations}" if full.violations else "")
                     + ". (A failed condition alone proves nothing: the condition is sufficient, not necessary.)")
    elif full:
        t1.remark = (f"The recipe-built monitor agreed with the bare machine on {full.passed}/{full.programs} "
                     "random programs.")

    # -- Theorem 3 ------------------------------------------------------
    off3 = _offenders(c.verdicts, user=True)
    t3 = TheoremVerdict(3, THEOREM_3, "user sensitive ⊆ privileged", not off3,
                        "a hybrid VMM may be constructed" if not off3 else "the theorem does not apply",
                        (f"every user-sensitive instruction is privileged {scope}" +
                         (f"; supervisor-sensitive only: {_names(off1)}" if off1 else "") if not off3 else
                         f"user sensitive but not privileged: {_names(off3)} {scope}"),
                        off3, [hybrid] if hybrid else [])
    if off3 and hybrid and hybrid.equivalent and not hybrid.violations:
        t3.remark = ("Sufficient, not necessary: this ISA fails the condition, yet the hybrid monitor was "
                     f"equivalent on all {hybrid.programs} random programs. " + _why(isa, hybrid=True))
    elif hybrid:
        t3.remark = (f"The hybrid monitor agreed with the bare machine on {hybrid.passed}/{hybrid.programs} random programs"
                     + (f"; resource control broken in {hybrid.programs_with_violations}" if hybrid.violations else "")
                     + ".")

    if c.method != "exhaustive":
        # A sampled search can find offenders but cannot show there are none.
        for t in (t1, t3):
            if t.holds:
                t.conclusion = f"no offender found: {t.conclusion} if none exists"
                t.reason += " -- sampled: absence of an offender is not proof"

    # -- Theorem 2 ------------------------------------------------------
    t2 = TheoremVerdict(
        2, THEOREM_2, "(a) virtualizable and (b) a VMM without timing dependencies", not off1,
        ("recursively virtualizable" if c.method == "exhaustive" else
         "recursively virtualizable if no offender exists (sampled)") if not off1 else "the theorem does not apply",
        ("(a) holds by Theorem 1; (b) holds: the formal machine has no clock, timer or I/O, and the recipe "
         "monitor's behaviour depends only on the guest's instructions, never on time"
         if not off1 else
         f"(a) is not established: Theorem 1's condition fails ({_names(off1)}); (b) would hold, the model has no clock"),
        [], [nested] if nested else [])
    if nested:
        t2.remark = (f"A monitor inside a monitor inside a monitor (depth 3) agreed with the bare machine on "
                     f"{nested.passed}/{nested.programs} random programs.")
    return TheoremReport(isa, c, [t1, t2, t3])


def _why(isa: ISA, hybrid: bool = False) -> str:
    """The ISA's own explanation of why a monitor works without the condition."""
    return isa.notes.get("hybrid" if hybrid else "full", "")
