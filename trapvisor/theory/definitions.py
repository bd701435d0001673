"""Popek & Goldberg's definitions, literally, one function each.

Source: G. J. Popek and R. P. Goldberg, "Formal Requirements for
Virtualizable Third Generation Architectures", CACM 17(7):412-421, July 1974.
The states, the trap, and the classes of instructions are defined in the
paper's model of a third generation machine (section 2); the monitor and
Theorem 1 follow it; Theorems 2 and 3 have sections of their own.  Every
function below quotes the definition it implements (in ASCII: ``(+)`` for the
paper's relocation operator, ``|`` for "restricted to") and says which
reading it takes where the paper leaves room.

The functions do not enumerate anything themselves.  They are predicates
over the executions of one instruction instance that an engine collected
into an :class:`ExecutionSpace`: every state of a bounded machine (the
exhaustive engine of ``classifier.py``) or a sample of states (the sampled
engine).  What the quantifiers of a definition range over is therefore the
space; a verdict is a proof within the bounds when the space is exhaustive,
and a search result when it is sampled.

A state is whatever the adapter (``adapter.py``) says it is; for the formal
machine it is S = (E, M, P, R) exactly (``formal_machine.State``).  An
execution is an :class:`~trapvisor.theory.adapter.Outcome`: the state, the
result i(S), and whether (and how) the trap sequence ran.

**Which executions are excluded.**  Only memory traps, as the paper says: an
execution that traps for any other reason (a privileged instruction in user
mode, an instruction of the ISA's own that traps) *counts*, and the trap
sequence is part of its result -- the old PSW stored, the new PSW loaded,
which usually changes M and R.  So a privileged instruction is control
sensitive too (its user-mode trap changes the mode), and an instruction that
traps in supervisor mode only is sensitive and not privileged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from trapvisor.theory.formal_machine import Mode

if TYPE_CHECKING:  # pragma: no cover
    from trapvisor.theory.adapter import ISAAdapter, Outcome

S, U = Mode.S, Mode.U

#: Where each notion is defined in Popek & Goldberg 1974 (CACM 17(7)).
SECTIONS = {
    "state": "section 2, the model of a third generation machine (machine states)",
    "trap": "section 2, the model of a third generation machine (traps)",
    "classes": "section 2, the model of a third generation machine (instruction behaviour)",
    "monitor": "section 3, virtual machine monitors (the control program and its three properties)",
    "theorem 1": "section 3, virtual machine monitors (Theorem 1)",
    "theorem 2": "the section on recursive virtualization (Theorem 2)",
    "theorem 3": "the section on hybrid virtual machines (Theorem 3)",
}

#: Kinds of behaviour-sensitivity pairs: what differs between S1 and S2 besides the view.
LOCATION, MODE, BOTH = "location", "mode", "location and mode"


@dataclass
class Witness:
    """Executions that satisfy (or, for 'not privileged', refute) a definition."""

    definition: str
    instance: str
    executions: list["Outcome"]
    note: str

    def to_json(self, adapter: "ISAAdapter") -> dict:
        return {
            "definition": self.definition,
            "instruction": self.instance,
            "note": self.note,
            "executions": [
                {"state": adapter.state_json(o.before), "result": adapter.state_json(o.after), "trap": o.trap}
                for o in self.executions
            ],
        }

    def lines(self, adapter: "ISAAdapter") -> list[str]:
        out = [f"{self.definition}: {self.instance} -- {self.note}"]
        for n, o in enumerate(self.executions, 1):
            out.append(f"  S{n}  = {adapter.describe(o.before)}")
            trap = f"   [trap: {o.trap}]" if o.trap else ""
            out.append(f"  i(S{n}) = {adapter.describe(o.after)}{trap}")
        return out


@dataclass
class Finding:
    """The verdict of one definition on one instance, and what it rests on.

    ``holds`` is the definition's truth value over the space; ``witness``
    shows why (for an existential definition: the executions that satisfy
    it; for *privileged*: a counterexample when it fails, an example pair
    when it holds).  ``checked`` counts the executions or pairs the
    definition ranged over, ``excluded`` those left out because an execution
    memory-trapped.
    """

    holds: bool
    witness: Witness | None = None
    checked: int = 0
    excluded: int = 0
    by_kind: dict = field(default_factory=dict)  # behaviour: kind -> Witness

    @property
    def vacuous(self) -> bool:
        return self.holds and self.checked == 0


@dataclass
class ExecutionSpace:
    """The executions of one instance that the definitions range over.

    ``singles``: every execution i(S) of the space (both modes).
    ``pairs``: (i(e, s, p, r), i(e, u, p, r)) for every (e, p, r) of the space.
    ``groups``: executions whose states have the same view -- the same
    storage visible through R, the same P and the same bound -- so that any
    two of them, S1 and S2, are related as the behaviour definition asks:
    S2 is S1 with R moved by some x (possibly 0), possibly another mode, and
    possibly other words outside the window.
    """

    adapter: "ISAAdapter"
    instance: Any
    singles: list = field(default_factory=list)
    pairs: list = field(default_factory=list)
    groups: list = field(default_factory=list)
    _memo: dict = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return str(self.instance)


# ---------------------------------------------------------------------------
# the machine


def state(E, M: Mode, P: int, R) -> tuple:
    """A machine state, S = (E, M, P, R).

    Popek & Goldberg 1974, section 2 (machine states): "S = <E, M, P, R>":
    E is executable storage (q words, E[i] word i), M the processor mode
    (s or u), P the program counter, relative to R, and R = (l, b) the
    relocation-bounds register, l the absolute base and b the bound of the
    virtual memory.  The formal machine's ``State`` is exactly this tuple.
    """
    from trapvisor.theory.formal_machine import Reloc, State

    return State(tuple(E), Mode(M), P, Reloc(*R))


def memory_trap(outcome: "Outcome") -> bool:
    """Whether the execution i(S) memory-traps.

    Popek & Goldberg 1974, section 2 (traps): an address a is relocated to
    E[a + l]; "if a + l >= q or a > b" the access is illegal and the
    instruction memory-traps, i.e. runs the trap sequence (the old PSW into
    E[0], the new PSW from E[1]) instead of its effect.  The paper's
    transcriptions differ between ``a > b`` and ``a >= b``; the formal
    machine uses ``a > b`` (``formal_machine.translate``), under which
    (0, q-1) is the whole memory.  A real machine's adapter decides which of
    its traps are memory traps (``Outcome.memory_trap``).
    """
    return bool(outcome.memory_trap)


# ---------------------------------------------------------------------------
# instruction behaviour


def privileged(space: ExecutionSpace) -> Finding:
    """Whether the instruction is privileged.

    Popek & Goldberg 1974, section 2 (instruction behaviour): "an instruction
    i is privileged if and only if for any pair of states S1 = <e, s, p, r>
    and S2 = <e, u, p, r> in which i(S1) and i(S2) do not memory trap: i(S2)
    traps and i(S1) does not."

    So an instruction that merely does nothing in user mode is not
    privileged (it has to trap), nor is one that traps in both modes.  When
    every pair of the space memory-traps the definition holds vacuously
    (``Finding.vacuous``).
    """
    memo = space._memo.get("privileged")
    if memo is not None:
        return memo
    checked = excluded = 0
    example = counter = None
    for o1, o2 in space.pairs:
        if memory_trap(o1) or memory_trap(o2):
            excluded += 1
            continue
        checked += 1
        if o2.trapped and not o1.trapped:
            if example is None:
                example = Witness("privileged", space.name, [o1, o2],
                                  "traps in user mode (S2), runs without trapping in supervisor mode (S1)")
        elif counter is None:
            why = "does not trap in user mode (S2)" if not o2.trapped else "traps in supervisor mode too (S1)"
            counter = Witness("not privileged", space.name, [o1, o2], why)
    f = Finding(counter is None, counter or example, checked, excluded)
    space._memo["privileged"] = f
    return f


def control_sensitive(space: ExecutionSpace, mode: Mode | None = None) -> Finding:
    """Whether the instruction is control sensitive (from a state in ``mode``, if given).

    Popek & Goldberg 1974, section 2 (instruction behaviour): "an instruction
    i is control sensitive if there exists a state S1 = <e1, m1, p1, r1> and
    i(S1) = S2 = <e2, m2, p2, r2> such that i(S1) does not memory trap, and
    either r1 != r2 or m1 != m2 or both."

    Only memory traps are excluded: a trap for another reason loads the new
    PSW from E[1], and if that changes M or R the execution satisfies the
    definition.  ``mode`` restricts S1 to one mode, which is what user and
    supervisor sensitivity need.
    """
    key = ("control", mode)
    memo = space._memo.get(key)
    if memo is not None:
        return memo
    a = space.adapter
    checked = excluded = 0
    witness = None
    for o in space.singles:
        m = a.mode(o.before)
        if mode is not None and m is not mode:
            continue
        if memory_trap(o):
            excluded += 1
            continue
        checked += 1
        if witness is None and a.resources(o.before) != a.resources_after(o):
            how = "through the trap sequence" if o.trapped else "without trapping"
            witness = Witness("control sensitive", space.name, [o], f"changes M or R {how}, from {m} mode")
    f = Finding(witness is not None, witness, checked, excluded)
    space._memo[key] = f
    return f


def pair_kind(adapter: "ISAAdapter", s1, s2) -> str | None:
    """What differs between two states of the same view: ``LOCATION``, ``MODE`` or ``BOTH``.

    Two states with the same view differ in M, or in R's base and the words
    outside the window (the paper's r (+) x moves the window, and the
    definition says nothing of storage outside it), or both.  None if they
    are the same state.
    """
    if s1 == s2:
        return None
    m1, m2 = adapter.mode(s1), adapter.mode(s2)
    if m1 is m2:
        return LOCATION
    return MODE if adapter.with_mode(s1, m2) == s2 else BOTH


def _behavior_scan(space: ExecutionSpace) -> dict:
    """All pairs the behaviour definition relates, once: the first differing pair per (kind, modes).

    Mode pairs (x = 0, the same storage, m1 != m2) are the twins of
    ``space.pairs``.  The others come from the view groups: executions with
    equal results cannot differ from each other, so each group keeps one
    execution per (base, mode, result) and compares those pairwise -- exact,
    since any differing pair has a representative pair of the same kind
    unless it is a mode pair, which the twins already cover.
    """
    memo = space._memo.get("behavior")
    if memo is not None:
        return memo
    a = space.adapter
    found: dict = {}   # (kind, frozenset of modes) -> Witness
    checked = excluded = 0

    def note(kind, o1, o2):
        x = a.base(o2.before) - a.base(o1.before)
        where = f"moved by x={x}" if x else "the same base, other words outside the window"
        m1 = a.mode(o1.before)
        return {LOCATION: f"same view, {where}, {m1} mode: results differ",
                MODE: "the same state in the other mode: results differ",
                BOTH: f"same view {where}, and the other mode: results differ"}[kind]

    def record(kind, o1, o2):
        key = (kind, frozenset((a.mode(o1.before), a.mode(o2.before))))
        if key not in found:
            name = "behaviour sensitive (location and mode)" if kind == BOTH else f"{kind} sensitive"
            found[key] = Witness(name, space.name, [o1, o2], note(kind, o1, o2))

    for o1, o2 in space.pairs:
        if memory_trap(o1) or memory_trap(o2):
            continue
        if a.observe(o1) != a.observe(o2):
            record(MODE, o1, o2)
    for group in space.groups:
        live = []
        for o in group:
            if memory_trap(o):
                excluded += 1
            else:
                live.append(o)
        n = len(live)
        checked += n * (n - 1) // 2
        reps: dict = {}
        for o in live:
            reps.setdefault((a.base(o.before), a.mode(o.before), a.observe(o)), o)
        entries = list(reps.items())
        for i, ((_, _, obs1), o1) in enumerate(entries):
            for (_, _, obs2), o2 in entries[i + 1:]:
                if obs1 != obs2:
                    kind = pair_kind(a, o1.before, o2.before)
                    if kind is not None:
                        record(kind, o1, o2)
    memo = {"found": found, "checked": checked, "excluded": excluded}
    space._memo["behavior"] = memo
    return memo


def _behavior_finding(space: ExecutionSpace, kinds: Iterable[str], mode: Mode | None) -> Finding:
    scan = _behavior_scan(space)
    kinds = set(kinds)
    by_kind = {}
    for (kind, modes), w in scan["found"].items():
        if kind in kinds and (mode is None or mode in modes) and kind not in by_kind:
            by_kind[kind] = w
    witness = next((by_kind[k] for k in (LOCATION, MODE, BOTH) if k in by_kind), None)
    return Finding(witness is not None, witness, scan["checked"], scan["excluded"], by_kind)


def behavior_sensitive(space: ExecutionSpace, mode: Mode | None = None) -> Finding:
    """Whether the instruction is behaviour sensitive (with a state in ``mode``, if given).

    Popek & Goldberg 1974, section 2 (instruction behaviour): "an instruction
    i is behavior sensitive if there exists an integer x and states
    S1 = <e|r, m1, p, r> and S2 = <e|r(+)x, m2, p, r(+)x>, where
    i(S1) = <e1, m1', p1, r1>, i(S2) = <e2, m2', p2, r2>, neither i(S1) nor
    i(S2) memory traps, and e1|r != e2|r(+)x or p1 != p2", with
    r (+) x = (l + x, b).  Informally: the effect depends on the value of R
    (location sensitive) or on the mode (mode sensitive).

    The quantifiers range over x, m1 and m2 *together*: a pair of states
    that differ in both the mode and the relocation register counts, even if
    neither change alone makes a difference (the states in between may
    memory-trap).  ``mode`` asks for a pair one of whose states is in that
    mode, which is what user and supervisor sensitivity need.
    """
    return _behavior_finding(space, (LOCATION, MODE, BOTH), mode)


def location_sensitive(space: ExecutionSpace, mode: Mode | None = None) -> Finding:
    """Behaviour sensitivity through R alone: the pairs of the definition with m1 = m2.

    Popek & Goldberg 1974, section 2 (instruction behaviour): "intuitively,
    an instruction is behavior sensitive if the effect of its execution
    depends on the value of the relocation-bounds register, i.e. upon its
    location in real memory, or on the mode" -- the first case (the IBM
    360/67's LRA, load real address).  Here: S1 and S2 in the same mode, R
    moved by x, or the same R with other words outside the window.
    """
    return _behavior_finding(space, (LOCATION,), mode)


def mode_sensitive(space: ExecutionSpace) -> Finding:
    """Behaviour sensitivity through M alone: the pairs of the definition with x = 0 and m1 != m2.

    Popek & Goldberg 1974, section 2 (instruction behaviour): "intuitively,
    an instruction is behavior sensitive if the effect of its execution
    depends on the value of the relocation-bounds register, i.e. upon its
    location in real memory, or on the mode" -- the second case (the
    PDP-11/45's MFPI).  Here: S1 and S2 the same state but for M.
    """
    return _behavior_finding(space, (MODE,), None)


def sensitive(space: ExecutionSpace) -> Finding:
    """Whether the instruction is sensitive: control sensitive or behaviour sensitive.

    Popek & Goldberg 1974, section 2 (instruction behaviour): "an instruction
    is sensitive if it is either control sensitive or behavior sensitive."
    """
    c = control_sensitive(space)
    return c if c.holds else behavior_sensitive(space)


def innocuous(space: ExecutionSpace) -> Finding:
    """Whether the instruction is innocuous: not sensitive.

    Popek & Goldberg 1974, section 2 (instruction behaviour): "an instruction
    that is not sensitive is innocuous."  The finding carries no witness: it
    is the absence of one over the space.
    """
    s = sensitive(space)
    c, b = control_sensitive(space), behavior_sensitive(space)
    return Finding(not s.holds, None, c.checked + b.checked, c.excluded + b.excluded)


def user_sensitive(space: ExecutionSpace) -> Finding:
    """Whether the instruction is user sensitive.

    Popek & Goldberg 1974, the section on hybrid virtual machines: "an
    instruction i is user sensitive if there exists a state S = <E, u, P, R>
    for which i is control sensitive or behavior sensitive."  Read verbatim:
    control sensitive from a user-mode state, or behaviour sensitive on a
    pair one of whose states is that user-mode state (a mode-sensitivity
    pair has one state in each mode, so it makes an instruction both user
    and supervisor sensitive).
    """
    c = control_sensitive(space, U)
    return c if c.holds else behavior_sensitive(space, U)


def supervisor_sensitive(space: ExecutionSpace) -> Finding:
    """Whether the instruction is supervisor sensitive: as user sensitive, from a state in mode s.

    Popek & Goldberg 1974, the section on hybrid virtual machines: as for
    user sensitivity, "there exists a state S = <E, s, P, R> for which i is
    control sensitive or behavior sensitive"; an instruction sensitive only
    from such states (the PDP-10's JRST 1, return to user mode) does not
    stand in the way of a hybrid monitor.
    """
    c = control_sensitive(space, S)
    return c if c.holds else behavior_sensitive(space, S)


DEFINITIONS = {
    "privileged": privileged,
    "control sensitive": control_sensitive,
    "behaviour sensitive": behavior_sensitive,
    "location sensitive": location_sensitive,
    "mode sensitive": mode_sensitive,
    "sensitive": sensitive,
    "innocuous": innocuous,
    "user sensitive": user_sensitive,
    "supervisor sensitive": supervisor_sensitive,
}
