"""Classifying every instruction of an ISA by Popek & Goldberg's definitions.

The definitions themselves are in ``definitions.py``, one function each,
quoted from the paper (CACM 17(7), 1974, section 2).  This module only
collects the executions they range over and reports the verdicts per opcode:

* ``classify(isa, bounds=Bounds(...))`` enumerates **every** state of a
  bounded machine (``Bounds``: storage size q, the values a word may hold,
  both modes, every P and R = (l, b) within q) and every operand value, so a
  verdict is a proof *within those bounds*, and the bounds are part of it;
* ``classify(isa, samples=N)`` draws N states per instruction from the
  adapter's sampler (seeded, so a run replays exactly).  Every "yes" comes
  with a witness; a "no" only means none was found, and the report says so.

An instruction in the paper is a function from states to states, so an
opcode with its operands fixed (an *instance*) is what the definitions
classify.  An opcode is privileged if every instance is, sensitive if some
instance is; what breaks Theorem 1 is an instance that is both sensitive and
not privileged, and the verdict records the first such instance with both
witnesses.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

from trapvisor.theory import definitions as D
from trapvisor.theory.adapter import Bounds, FormalAdapter, ISAAdapter
from trapvisor.theory.definitions import BOTH, LOCATION, MODE, ExecutionSpace, Finding, Witness
from trapvisor.theory.formal_machine import Mode
from trapvisor.theory.isa import ISA

S, U = Mode.S, Mode.U

__all__ = ["Classification", "InstructionVerdict", "Witness", "classify", "instance_findings"]


def instance_findings(space: ExecutionSpace) -> dict[str, Finding]:
    """Every definition applied to one instance's executions."""
    f = {name: fn(space) for name, fn in D.DEFINITIONS.items()}
    f["control sensitive (u)"] = D.control_sensitive(space, U)
    f["control sensitive (s)"] = D.control_sensitive(space, S)
    return f


@dataclass
class InstructionVerdict:
    """The verdicts for one opcode, over all its instances examined."""

    name: str
    doc: str
    instances: int
    privileged: bool
    vacuous: bool  # privileged only because no pair survived the memory-trap exclusion
    privileged_witness: Witness | None  # an example pair (privileged) or a counterexample
    pairs: int  # privilege pairs checked (not memory-trapping)
    control: Witness | None
    location: Witness | None
    mode: Witness | None
    combined: Witness | None  # a pair differing in both mode and R, when neither kind alone differs
    user: Witness | None
    supervisor: Witness | None
    # An instance that is sensitive / user sensitive and not privileged: what
    # breaks Theorem 1 / Theorem 3.  Found per instance, not per opcode.
    unprivileged_sensitive: Witness | None
    unprivileged_user_sensitive: Witness | None
    unprivileged_counter: dict = field(default_factory=dict)  # "sensitive"/"user" -> non-privilege witness
    details: list = field(default_factory=list, repr=False)  # [(instance, {definition: Finding})]

    @property
    def behavior(self) -> Witness | None:
        return self.location or self.mode or self.combined

    @property
    def sensitive(self) -> bool:
        return bool(self.control or self.behavior)

    @property
    def innocuous(self) -> bool:
        return not self.sensitive

    def kinds(self) -> list[str]:
        """The kinds of sensitivity found: control, location, mode, location and mode."""
        return [k for k, w in (("control", self.control), ("location", self.location), ("mode", self.mode),
                               ("location and mode", self.combined)) if w is not None]

    def witnesses(self) -> list[Witness]:
        seen, out = set(), []
        for w in (self.privileged_witness, self.control, self.location, self.mode, self.combined,
                  self.user, self.supervisor):
            if w is not None and id(w) not in seen:
                seen.add(id(w))
                out.append(w)
        return out

    def to_json(self, adapter: ISAAdapter) -> dict:
        j = lambda w: None if w is None else w.to_json(adapter)  # noqa: E731
        return {
            "instruction": self.name,
            "doc": self.doc,
            "instances_examined": self.instances,
            "privileged": self.privileged,
            "privileged_vacuously": self.vacuous,
            "privilege_pairs_checked": self.pairs,
            "control_sensitive": self.control is not None,
            "location_sensitive": self.location is not None,
            "mode_sensitive": self.mode is not None,
            "location_and_mode_sensitive": self.combined is not None,
            "behavior_sensitive": self.behavior is not None,
            "user_sensitive": self.user is not None,
            "supervisor_sensitive": self.supervisor is not None,
            "sensitive": self.sensitive,
            "innocuous": self.innocuous,
            "witnesses": {
                "privileged" if self.privileged else "not_privileged": j(self.privileged_witness),
                "control_sensitive": j(self.control),
                "location_sensitive": j(self.location),
                "mode_sensitive": j(self.mode),
                "location_and_mode_sensitive": j(self.combined),
                "user_sensitive": j(self.user),
                "supervisor_sensitive": j(self.supervisor),
                "sensitive_and_unprivileged": j(self.unprivileged_sensitive),
                "user_sensitive_and_unprivileged": j(self.unprivileged_user_sensitive),
            },
        }


@dataclass
class Classification:
    """Verdicts for every instruction of one ISA, and how they were reached."""

    isa: str
    method: str  # "exhaustive" or "sampled"
    scope: str  # the bounds, or the sample size, in words
    scope_json: dict
    caveat: str
    verdicts: list[InstructionVerdict]
    executions: int
    seconds: float
    adapter: ISAAdapter = field(repr=False)

    def __getitem__(self, name: str) -> InstructionVerdict:
        for v in self.verdicts:
            if v.name == name or v.name == name.upper():
                return v
        raise KeyError(name)

    def to_json(self) -> dict:
        return {
            "isa": self.isa, "method": self.method, "scope": self.scope_json, "scope_text": self.scope,
            "caveat": self.caveat, "executions": self.executions, "seconds": round(self.seconds, 3),
            "instructions": [v.to_json(self.adapter) for v in self.verdicts],
        }


# ---------------------------------------------------------------------------
# aggregation


def _verdict(adapter: ISAAdapter, opcode: Any, per_instance: list[tuple[Any, dict]],
             keep_details: bool) -> InstructionVerdict:
    def first(get):
        for _, f in per_instance:
            w = get(f)
            if w is not None:
                return w
        return None

    def w(name):
        return lambda f: f[name].witness if f[name].holds else None

    def kind(k, mode=None):
        def get(f):
            b = f["behaviour sensitive"]
            found = b.by_kind.get(k)
            if found is None or (mode is not None and adapter.mode(found.executions[0].before) is not mode):
                return None
            return found
        return get

    privileged = all(f["privileged"].holds for _, f in per_instance)
    pairs = sum(f["privileged"].checked for _, f in per_instance)
    counter = first(lambda f: None if f["privileged"].holds else f["privileged"].witness)
    example = first(lambda f: f["privileged"].witness if f["privileged"].holds else None)

    def unpriv(defn):
        def get(f):
            if f["privileged"].holds or not f[defn].holds:
                return None
            # a user-mode control witness says the most: the guest can do it
            u = f["control sensitive (u)"]
            return u.witness if u.holds else f[defn].witness
        return get

    def unpriv_counter(defn):
        return lambda f: None if f["privileged"].holds or not f[defn].holds else f["privileged"].witness

    return InstructionVerdict(
        name=adapter.opcode_name(opcode), doc=adapter.opcode_doc(opcode), instances=len(per_instance),
        privileged=privileged, vacuous=privileged and pairs == 0,
        privileged_witness=counter if counter is not None else example, pairs=pairs,
        control=first(w("control sensitive (u)")) or first(w("control sensitive")),
        location=first(kind(LOCATION, U)) or first(kind(LOCATION)),
        mode=first(kind(MODE)),
        combined=first(kind(BOTH)),
        user=first(w("user sensitive")), supervisor=first(w("supervisor sensitive")),
        unprivileged_sensitive=first(unpriv("sensitive")),
        unprivileged_user_sensitive=first(unpriv("user sensitive")),
        unprivileged_counter={"sensitive": first(unpriv_counter("sensitive")),
                              "user": first(unpriv_counter("user sensitive"))},
        details=per_instance if keep_details else [],
    )


class _Runner:
    """Executes one instance, once per state (the definitions look at each execution several times)."""

    def __init__(self, adapter: ISAAdapter, instance: Any):
        self.adapter, self.instance = adapter, instance
        self.cache: dict = {}
        self.executions = 0

    def __call__(self, state):
        o = self.cache.get(state)
        if o is None:
            o = self.cache[state] = self.adapter.execute(self.instance, state)
            self.executions += 1
        return o


# ---------------------------------------------------------------------------
# engines


def exhaustive_space(adapter: ISAAdapter, instance: Any, states: list, runner: _Runner | None = None) -> ExecutionSpace:
    """The executions of ``instance`` on every state of ``states`` (supervisor mode) and its user twin."""
    run = runner or _Runner(adapter, instance)
    space = ExecutionSpace(adapter, instance)
    groups: dict = {}
    for s1 in states:
        o1, o2 = run(s1), run(adapter.with_mode(s1, U))
        space.singles += (o1, o2)
        space.pairs.append((o1, o2))
        g = groups.setdefault(adapter.view_key(s1), [])
        g += (o1, o2)
    space.groups = list(groups.values())
    return space


def _exhaustive(adapter: ISAAdapter, bounds: Bounds) -> tuple[list[InstructionVerdict], int]:
    states = list(adapter.states(bounds))
    verdicts, executions = [], 0
    for opcode in adapter.opcodes():
        per_instance = []
        for instance in adapter.instances(opcode, bounds):
            run = _Runner(adapter, instance)
            space = exhaustive_space(adapter, instance, states, run)
            per_instance.append((instance, instance_findings(space)))
            executions += run.executions
        verdicts.append(_verdict(adapter, opcode, per_instance, keep_details=True))
    return verdicts, executions


RELOCATIONS = (-3, -2, -1, 1, 2, 3)
#: a sampled 'privileged' resting on fewer pairs than this is searched again
REFUTE_BELOW = 8


def _sample_into(adapter: ISAAdapter, space: ExecutionSpace, run: _Runner, state, x: int, moved: Mode) -> None:
    """One sampled state: its s and u twins, and the ``moved`` one of them with R moved by x.

    The three are one view group: the mode pair, a location pair (same
    mode) and a pair that differs in both mode and R.
    """
    s1, s2 = adapter.with_mode(state, S), adapter.with_mode(state, U)
    o1, o2 = run(s1), run(s2)
    space.singles += (o1, o2)
    space.pairs.append((o1, o2))
    group = [o1, o2]
    m = adapter.counterpart(s1 if moved is S else s2, x, moved)
    if m is not None:
        om = run(m)
        space.singles.append(om)
        group.append(om)
    space.groups.append(group)


def _draw(adapter: ISAAdapter, rng: random.Random):
    return adapter.sample_state(rng), rng.choice(RELOCATIONS), rng.choice((S, U))


def _sampled(adapter: ISAAdapter, samples: int, seed: int) -> tuple[list[InstructionVerdict], int]:
    verdicts, executions = [], 0
    for opcode in adapter.opcodes():
        # One stream per opcode, so a verdict does not depend on which other
        # opcodes were classified (or on how a run is split over processes).
        rng = random.Random(f"{seed}:{adapter.opcode_name(opcode)}")
        spaces: dict = {}
        for _ in range(samples):
            instance = adapter.sample_instance(opcode, rng)
            if instance not in spaces:
                spaces[instance] = (ExecutionSpace(adapter, instance), _Runner(adapter, instance))
            space, run = spaces[instance]
            _sample_into(adapter, space, run, *_draw(adapter, rng))
        # A sensitive instance drawn only a few times may never have met a
        # refuting pair: search it on its own before calling it privileged
        # (at most two instances per opcode, each as long as the first search).
        pending = [(i, sp, r) for i, (sp, r) in spaces.items()
                   if D.privileged(sp).checked < REFUTE_BELOW and D.privileged(sp).holds
                   and D.sensitive(sp).holds][:2]
        for instance, space, run in pending:
            for _ in range(samples):
                _sample_into(adapter, space, run, *_draw(adapter, rng))
            space._memo.clear()
        per_instance = [(i, instance_findings(sp)) for i, (sp, _) in spaces.items()]
        executions += sum(r.executions for _, r in spaces.values())
        verdicts.append(_verdict(adapter, opcode, per_instance, keep_details=adapter.keep_details))
    return verdicts, executions


EXHAUSTIVE_CAVEAT = ("Exhaustive within these bounds: a 'no' is proven for the bounded machine; "
                     "behaviour that needs a larger machine or other word values is not covered.")
SAMPLED_CAVEAT = ("Sampled: every 'yes' for a sensitivity comes with a witness, but a 'no' only means "
                  "no witness was found -- absence is not proof. 'privileged' means no counterexample was found.")


def classify(isa: ISA | ISAAdapter, *, bounds: Bounds | None = None, samples: int | None = None,
             seed: int = 0) -> Classification:
    """Classify every instruction of ``isa``.

    Exhaustive over ``bounds`` (default ``Bounds()``) unless ``samples`` is
    given or the adapter cannot enumerate; then ``samples`` sampled states
    per instruction.
    """
    adapter = FormalAdapter(isa) if isinstance(isa, ISA) else isa
    t0 = time.perf_counter()
    if samples is None and adapter.supports_exhaustive:
        bounds = bounds or Bounds()
        verdicts, n = _exhaustive(adapter, bounds)
        method, scope, scope_json, caveat = "exhaustive", bounds.describe(), bounds.as_dict(), EXHAUSTIVE_CAVEAT
    else:
        samples = samples or 500
        verdicts, n = _sampled(adapter, samples, seed)
        method, caveat = "sampled", SAMPLED_CAVEAT
        scope = f"{samples} sampled states per instruction (seed {seed})"
        if isinstance(adapter, FormalAdapter):
            scope += f", q={adapter.sample_q} words, any word values"
        scope_json = {"samples_per_instruction": samples, "seed": seed}
    return Classification(adapter.name, method, scope, scope_json, caveat, verdicts, n,
                          time.perf_counter() - t0, adapter)
