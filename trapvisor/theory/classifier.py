"""Classifying instructions by the definitions of Popek & Goldberg 1974.

Definitions (CACM 17(7), "classes of instructions"; wording as in
``shared/reference/virtualization.md`` section 1), as applied here:

*Privileged.*  For **every** pair ``S1 = (e, s, p, r)``, ``S2 = (e, u, p, r)`` in
which neither execution memory-traps, ``i(S2)`` traps and ``i(S1)`` does not.
A user-mode instruction that merely does nothing is therefore *not*
privileged: it has to trap.  If no pair survives the memory-trap exclusion
the statement holds vacuously, and we say so.

*Control sensitive.*  There is a state ``S1`` with ``i(S1) = S2`` reached
without the trap sequence in which ``r1 != r2`` or ``m1 != m2``.

*Behaviour sensitive.*  There are ``x`` and states ``S1 = (e|r, m1, p, r)``,
``S2 = (e|r(+)x, m2, p, r(+)x)``, neither trapping, whose results differ in
the visible storage or in ``P``.  Pairs with ``x != 0`` and ``m1 = m2`` make it
*location* sensitive; pairs with ``x = 0`` and ``m1 != m2`` make it *mode*
sensitive.  A pair that changes both at once is not reported on its own:
if the intermediate state (e|r(+)x, m1, p, r(+)x) runs without trapping and
neither pair through it differs, the two ends cannot differ either.

*User / supervisor sensitive.*  Control or behaviour sensitive from some
state in user / supervisor mode: a control witness in that mode, a location
witness whose states are in that mode, or a mode witness (one of its two
states is in each mode, so a mode-sensitive instruction is both).

*Innocuous.*  Not sensitive.

**Which executions count.**  The reference glosses control sensitivity as
changing the resources "without the trap sequence", and we apply that to
every sensitivity definition: an execution that traps (for any reason) is the
hardware handing control to the supervisor, which is precisely how a monitor
intercepts, so only effects reached *without* trapping can be sensitive.
Counting trapping executions would make every privileged instruction both
control and mode sensitive (it traps in one mode and not the other) without
changing any theorem's verdict, since those instructions are privileged.

**Two engines.**  ``classify(..., bounds=Bounds(...))`` enumerates every state
of a bounded machine (and every operand value) and is exhaustive within those
bounds; the bounds are part of every verdict.  ``classify(..., samples=N)``
uses hypothesis to draw states of a machine too large to enumerate: it reports
the witnesses it found, and a verdict that nothing was found is not a proof.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from trapvisor.theory.adapter import Bounds, FormalAdapter, ISAAdapter, Outcome
from trapvisor.theory.isa import ISA
from trapvisor.theory.formal_machine import Mode

S, U = Mode.S, Mode.U


@dataclass
class Witness:
    """Executions that satisfy (or, for 'not privileged', refute) a definition."""

    definition: str
    instance: str
    executions: list[Outcome]
    note: str

    def to_json(self, adapter: ISAAdapter) -> dict:
        return {
            "definition": self.definition,
            "instruction": self.instance,
            "note": self.note,
            "executions": [
                {"state": adapter.state_json(o.before), "result": adapter.state_json(o.after), "trap": o.trap}
                for o in self.executions
            ],
        }

    def lines(self, adapter: ISAAdapter) -> list[str]:
        out = [f"{self.definition}: {self.instance} -- {self.note}"]
        for n, o in enumerate(self.executions, 1):
            out.append(f"  S{n}  = {adapter.describe(o.before)}")
            trap = f"   [trap: {o.trap}]" if o.trap else ""
            out.append(f"  i(S{n}) = {adapter.describe(o.after)}{trap}")
        return out


@dataclass
class _InstanceFacts:
    """What one instance (opcode + operands) was found to do."""

    instance: Any
    pairs: int = 0  # privilege pairs not excluded by memory traps
    priv_example: Witness | None = None  # a pair as the definition wants
    priv_counter: Witness | None = None  # a pair refuting it
    control: dict = field(default_factory=dict)  # mode -> Witness
    location: dict = field(default_factory=dict)  # mode -> Witness
    mode: Witness | None = None

    @property
    def privileged(self) -> bool:
        return self.priv_counter is None

    def sensitive_witness(self) -> Witness | None:
        for w in (*self.control.values(), *self.location.values(), self.mode):
            if w is not None:
                return w
        return None

    def user_witness(self) -> Witness | None:
        return self.control.get(U) or self.location.get(U) or self.mode

    def supervisor_witness(self) -> Witness | None:
        return self.control.get(S) or self.location.get(S) or self.mode


@dataclass
class InstructionVerdict:
    """The verdicts for one opcode, over all its instances examined."""

    name: str
    doc: str
    instances: int
    privileged: bool
    vacuous: bool  # privileged only because no pair survived the exclusion
    privileged_witness: Witness | None  # example pair (privileged) or counterexample
    pairs: int
    control: Witness | None
    location: Witness | None
    mode: Witness | None
    user: Witness | None
    supervisor: Witness | None
    # An instance that is sensitive / user sensitive and not privileged: what
    # breaks Theorem 1 / Theorem 3.  Found per instance, not per opcode.
    unprivileged_sensitive: Witness | None
    unprivileged_user_sensitive: Witness | None
    unprivileged_counter: dict = field(default_factory=dict)  # kind -> the non-privilege witness

    @property
    def behavior(self) -> Witness | None:
        return self.location or self.mode

    @property
    def sensitive(self) -> bool:
        return bool(self.control or self.location or self.mode)

    @property
    def innocuous(self) -> bool:
        return not self.sensitive

    def witnesses(self) -> list[Witness]:
        seen, out = set(), []
        for w in (self.privileged_witness, self.control, self.location, self.mode, self.user, self.supervisor):
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
            if v.name == name.upper() or v.name == name:
                return v
        raise KeyError(name)

    def to_json(self) -> dict:
        return {
            "isa": self.isa,
            "method": self.method,
            "scope": self.scope_json,
            "scope_text": self.scope,
            "caveat": self.caveat,
            "executions": self.executions,
            "seconds": round(self.seconds, 3),
            "instructions": [v.to_json(self.adapter) for v in self.verdicts],
        }


# ---------------------------------------------------------------------------
# the definitions, applied to executions


class _Prober:
    """Feeds executions of one instance to the definitions, keeping witnesses."""

    def __init__(self, adapter: ISAAdapter, instance: Any):
        self.a = adapter
        self.facts = _InstanceFacts(instance)
        self.name = str(instance)
        self.executions = 0

    def run(self, state: Any) -> Outcome:
        self.executions += 1
        return self.a.execute(self.facts.instance, state)

    def privilege_pair(self, o1: Outcome, o2: Outcome) -> None:
        """``o1`` ran in supervisor mode, ``o2`` on the same (e, p, r) in user mode."""
        if o1.memory_trap or o2.memory_trap:
            return  # the definition excludes memory-trapping executions
        f = self.facts
        f.pairs += 1
        if o2.trapped and not o1.trapped:
            if f.priv_example is None:
                f.priv_example = Witness("privileged", self.name, [o1, o2],
                                         "traps in user mode (S2), runs without trapping in supervisor mode (S1)")
        elif f.priv_counter is None:
            why = "does not trap in user mode (S2)" if not o2.trapped else "traps in supervisor mode too (S1)"
            f.priv_counter = Witness("not privileged", self.name, [o1, o2], why)

    def single(self, o: Outcome) -> None:
        """Control sensitivity: resources change without the trap sequence."""
        if o.trapped:
            return
        m = self.a.mode(o.before)
        f = self.facts
        if m not in f.control and self.a.resources(o.before) != self.a.resources(o.after):
            f.control[m] = Witness("control sensitive", self.name, [o],
                                   f"changes M or R without trapping, from {m} mode")

    def behavior_pair(self, o1: Outcome, o2: Outcome) -> None:
        """Two non-trapping executions on the same visible storage."""
        if o1.trapped or o2.trapped:
            return
        a, f = self.a, self.facts
        m1, m2 = a.mode(o1.before), a.mode(o2.before)
        x = a.base(o2.before) - a.base(o1.before)
        if a.observe(o1) == a.observe(o2):
            return
        if x != 0 and m1 == m2 and m1 not in f.location:
            f.location[m1] = Witness("location sensitive", self.name, [o1, o2],
                                     f"same visible storage moved by x={x}, {m1} mode: results differ")
        elif x == 0 and m1 != m2 and f.mode is None:
            f.mode = Witness("mode sensitive", self.name, [o1, o2],
                             "same state in the other mode: results differ in visible storage or P")


def _group_behavior(prober: _Prober, groups: dict) -> None:
    """Find behaviour witnesses among executions grouped by ``view_key``."""
    for slot in groups.values():
        if len(slot) < 2:
            continue
        entries = [(base, mode, obs, o) for (base, mode), d in slot.items() for obs, o in d.items()]
        for i, (b1, m1, obs1, o1) in enumerate(entries):
            for b2, m2, obs2, o2 in entries[i + 1:]:
                if obs1 != obs2 and ((b1 != b2 and m1 == m2) or (b1 == b2 and m1 != m2)):
                    prober.behavior_pair(o1, o2)


def _verdict(adapter: ISAAdapter, opcode: Any, facts: list[_InstanceFacts]) -> InstructionVerdict:
    def first(get):
        for f in facts:
            w = get(f)
            if w is not None:
                return w
        return None

    counter = first(lambda f: f.priv_counter)
    pairs = sum(f.pairs for f in facts)
    privileged = counter is None
    return InstructionVerdict(
        name=adapter.opcode_name(opcode),
        doc=adapter.opcode_doc(opcode),
        instances=len(facts),
        privileged=privileged,
        vacuous=privileged and pairs == 0,
        privileged_witness=counter if counter else first(lambda f: f.priv_example),
        pairs=pairs,
        control=first(lambda f: f.control.get(U) or f.control.get(S)),
        location=first(lambda f: f.location.get(U) or f.location.get(S)),
        mode=first(lambda f: f.mode),
        user=first(lambda f: f.user_witness()),
        supervisor=first(lambda f: f.supervisor_witness()),
        unprivileged_sensitive=first(lambda f: None if f.privileged else f.sensitive_witness()),
        unprivileged_user_sensitive=first(lambda f: None if f.privileged else f.user_witness()),
        unprivileged_counter={
            "sensitive": first(lambda f: f.priv_counter if f.sensitive_witness() else None),
            "user": first(lambda f: f.priv_counter if f.user_witness() else None),
        },
    )


# ---------------------------------------------------------------------------
# engines


def _exhaustive(adapter: ISAAdapter, bounds: Bounds) -> tuple[list[InstructionVerdict], int]:
    states = list(adapter.states(bounds))
    verdicts, executions = [], 0
    for opcode in adapter.opcodes():
        facts = []
        for instance in adapter.instances(opcode, bounds):
            p = _Prober(adapter, instance)
            groups: dict = {}
            for s1 in states:
                o1 = p.run(s1)
                o2 = p.run(adapter.with_mode(s1, U))
                p.privilege_pair(o1, o2)
                for o in (o1, o2):
                    if o.trapped:
                        continue
                    p.single(o)
                    slot = groups.setdefault(adapter.view_key(o.before), {})
                    d = slot.setdefault((adapter.base(o.before), adapter.mode(o.before)), {})
                    d.setdefault(adapter.observe(o), o)
            _group_behavior(p, groups)
            facts.append(p.facts)
            executions += p.executions
        verdicts.append(_verdict(adapter, opcode, facts))
    return verdicts, executions


def _refuter(p: _Prober, cfg, given, adapter: ISAAdapter):
    """A hypothesis search for a pair refuting privilege of ``p``'s instance."""

    @cfg
    @given(state=adapter.state_strategy())
    def refute(state):
        p.privilege_pair(p.run(adapter.with_mode(state, S)), p.run(adapter.with_mode(state, U)))

    return refute


def _sampled(adapter: ISAAdapter, samples: int, seed: int) -> tuple[list[InstructionVerdict], int]:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as fixed_seed
    from hypothesis import strategies as st

    settings_ = settings(max_examples=samples, database=None, deadline=None,
                         phases=[Phase.generate], suppress_health_check=list(HealthCheck))

    def cfg(test):  # reproducible: the same seed draws the same examples
        return fixed_seed(seed)(settings_(test))
    verdicts, executions = [], 0
    for opcode in adapter.opcodes():
        probers: dict[Any, _Prober] = {}

        def prober(instance) -> _Prober:
            if instance not in probers:
                probers[instance] = _Prober(adapter, instance)
            return probers[instance]

        @cfg
        @given(instance=adapter.instance_strategy(opcode), state=adapter.state_strategy(),
               x=st.integers(-3, 3).filter(bool))
        def probe(instance, state, x):
            p = prober(instance)
            s1 = adapter.with_mode(state, S)
            s2 = adapter.with_mode(state, U)
            o1, o2 = p.run(s1), p.run(s2)
            p.privilege_pair(o1, o2)
            p.single(o1)
            p.single(o2)
            p.behavior_pair(o1, o2)  # x = 0, modes differ: the mode kind
            for o in (o1, o2):
                moved = adapter.counterpart(o.before, x, adapter.mode(o.before))
                if moved is not None:
                    p.behavior_pair(o, p.run(moved))  # same mode, moved: the location kind

        probe()
        # A sensitive instance drawn once may never have met a refuting pair:
        # search that instance alone before calling it privileged (a few
        # instances per opcode; each search costs as much as the first).
        pending = [p for p in probers.values() if p.facts.sensitive_witness() and p.facts.privileged]
        for p in pending[:2]:
            _refuter(p, cfg, given, adapter)()
        facts = [p.facts for p in probers.values()]
        executions += sum(p.executions for p in probers.values())
        verdicts.append(_verdict(adapter, opcode, facts))
    return verdicts, executions


def classify(
    isa: ISA | ISAAdapter,
    *,
    bounds: Bounds | None = None,
    samples: int | None = None,
    seed: int = 0,
) -> Classification:
    """Classify every instruction of ``isa``.

    Exhaustive over ``bounds`` (default ``Bounds()``) unless ``samples`` is
    given or the adapter cannot enumerate; then a hypothesis search of
    ``samples`` examples per instruction.
    """
    adapter = FormalAdapter(isa) if isinstance(isa, ISA) else isa
    t0 = time.perf_counter()
    if samples is None and adapter.supports_exhaustive:
        bounds = bounds or Bounds()
        verdicts, n = _exhaustive(adapter, bounds)
        method, scope, scope_json = "exhaustive", bounds.describe(), bounds.as_dict()
        caveat = ("Exhaustive within these bounds: a 'no' is proven for the bounded machine; "
                  "behaviour that needs a larger machine or other word values is not covered.")
    else:
        samples = samples or 500
        verdicts, n = _sampled(adapter, samples, seed)
        method = "sampled"
        scope = f"hypothesis search, {samples} examples per instruction"
        if isinstance(adapter, FormalAdapter):
            scope += f", q={adapter.sample_q} words, any word values"
        scope_json = {"samples_per_instruction": samples, "seed": seed}
        caveat = ("Sampled: every 'yes' for a sensitivity comes with a witness, but a 'no' only means "
                  "no witness was found -- absence is not proof. 'privileged' means no counterexample was found.")
    return Classification(adapter.name, method, scope, scope_json, caveat, verdicts, n,
                          time.perf_counter() - t0, adapter)
