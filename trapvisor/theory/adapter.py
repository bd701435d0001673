"""The plug-in point between a concrete machine and Popek & Goldberg's definitions.

The definitions of Popek & Goldberg 1974 (CACM 17(7), section 2) -- privileged,
control sensitive, behaviour sensitive (``definitions.py``) -- talk about a machine only through a handful
of questions: run instruction ``i`` on state ``S``; did it trap, and was that a
memory trap?  What are ``M`` and ``R`` before and after?  What does the program
see (``E|r`` and ``P``)?  Give me the same state in the other mode, or with the
same visible storage moved by ``x`` (``r (+) x``).  :class:`ISAAdapter` is
exactly that list.  The classifier (``classifier.py``) asks nothing else, so
any machine that answers these questions can be classified:

* :class:`FormalAdapter` answers them for an ISA written with ``isa.py`` and can
  also *enumerate* every state of a bounded machine, which makes the verdicts
  exhaustive within the bounds;
* a bridge to a large real machine (the x86 bridge, which needs the simulated
  PC) answers them with *sampled* states -- drawn from a seeded random
  stream -- and sets ``supports_exhaustive = False``; its verdicts are then
  witnesses found, never proofs of absence.

A bridge module registers itself with ``trapvisor.theory.registry``.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from typing import Any, Hashable, Iterable, Iterator, Sequence

from trapvisor.theory.isa import ISA, Instance, Instruction
from trapvisor.theory.formal_machine import PSW, Execution, Machine, Mode, Reloc, State, TrapKind


class Outcome:
    """What an adapter reports for one execution ``after = i(before)``.

    ``trap`` is None when the instruction completed without the trap
    sequence, else a short string; ``memory_trap`` says whether the trap was a
    memory trap (the executions the definitions exclude).
    """

    __slots__ = ("before", "after", "trap", "memory_trap")

    def __init__(self, before: Any, after: Any, trap: str | None, memory_trap: bool):
        self.before, self.after, self.trap, self.memory_trap = before, after, trap, memory_trap

    @property
    def trapped(self) -> bool:
        return self.trap is not None


@dataclass(frozen=True)
class Bounds:
    """The finite state space an exhaustive classification covers.

    ``q`` words of storage, every word taking each value in ``values``, both
    modes, every ``R = (l, b)`` with ``0 <= l, b < q``, every ``P < q``; each
    opcode with every operand value in ``0..q-1``.
    """

    q: int = 3
    values: tuple[int, ...] = (0, 1, 2, 3)

    def describe(self) -> str:
        v = self.values
        vals = f"{v[0]}..{v[-1]}" if v == tuple(range(v[0], v[-1] + 1)) else ",".join(map(str, v))
        return (
            f"q={self.q} words, each word in {{{vals}}}, M in {{s,u}}, "
            f"P < {self.q}, R=(l,b) with l,b < {self.q}, operands in 0..{self.q - 1}"
        )

    def as_dict(self) -> dict:
        return {"q": self.q, "values": list(self.values), "modes": ["s", "u"], "P": f"0..{self.q - 1}",
                "R": f"(l,b), l,b in 0..{self.q - 1}", "operands": f"0..{self.q - 1}"}


class ISAAdapter:
    """The questions the classifier asks a machine (see the module docstring).

    States and instructions are opaque to the classifier; they only need to be
    hashable (states) and printable.
    """

    name: str = "?"
    description: str = ""
    supports_exhaustive: bool = False
    #: keep every instance's findings in the verdicts (``theory explain``); a
    #: bridge whose witnesses are large turns this off.
    keep_details: bool = True

    # -- instructions -----------------------------------------------------
    def opcodes(self) -> Sequence[Any]:
        """The instructions to classify, as the unit a verdict is reported for."""
        raise NotImplementedError

    def opcode_name(self, opcode: Any) -> str:
        return str(opcode)

    def opcode_doc(self, opcode: Any) -> str:
        return ""

    def instances(self, opcode: Any, bounds: Bounds) -> Iterable[Any]:
        """Every instance of ``opcode`` within ``bounds`` (exhaustive mode)."""
        raise NotImplementedError

    def sample_instance(self, opcode: Any, rng) -> Any:
        """One instance of ``opcode`` drawn from ``rng`` (a ``random.Random``; sampled mode)."""
        raise NotImplementedError

    # -- states -----------------------------------------------------------
    def states(self, bounds: Bounds) -> Iterator[Any]:
        """Every supervisor-mode state within ``bounds`` (exhaustive mode).

        The classifier pairs each with its user-mode twin via ``with_mode``.
        """
        raise NotImplementedError

    def sample_state(self, rng) -> Any:
        """One state drawn from ``rng`` (a ``random.Random``; sampled mode)."""
        raise NotImplementedError

    def execute(self, instance: Any, state: Any) -> Outcome:
        raise NotImplementedError

    def mode(self, state: Any) -> Mode:
        raise NotImplementedError

    def with_mode(self, state: Any, mode: Mode) -> Any:
        """The same (E, P, R) in another mode."""
        raise NotImplementedError

    def base(self, state: Any) -> int:
        """``l``, the absolute base of R."""
        raise NotImplementedError

    def resources(self, state: Any) -> Hashable:
        """``(M, R)``: what control sensitivity watches."""
        raise NotImplementedError

    def resources_after(self, outcome: Outcome) -> Hashable:
        """``(M, R)`` of ``i(S)``, the trap sequence included when the execution trapped."""
        return self.resources(outcome.after)

    def view_key(self, state: Any) -> Hashable:
        """What a program sees of a state besides M and ``l``: ``(E|r, P, b)``.

        Two states with equal view keys differ only in mode, base and
        invisible storage -- the pairs the behaviour definition compares.
        """
        raise NotImplementedError

    def observe(self, outcome: Outcome) -> Hashable:
        """What a program sees of ``i(S)``: visible storage through S's R, and P."""
        raise NotImplementedError

    def counterpart(self, state: Any, x: int, mode: Mode) -> Any | None:
        """``(e|r(+)x, mode, p, r(+)x)``: same visible storage moved by ``x``.

        None if no such state exists (the moved window leaves storage).
        """
        raise NotImplementedError

    def describe(self, state: Any) -> str:
        return str(state)

    def state_json(self, state: Any) -> Any:
        return str(state)


class FormalAdapter(ISAAdapter):
    """Adapter for an ISA of the formal machine (``isa.py``)."""

    supports_exhaustive = True

    def __init__(self, isa: ISA, sample_q: int | None = None):
        self.isa = isa
        self.name = isa.name
        self.description = isa.doc
        # sampled mode uses one machine size (default: the largest the word
        # format allows, i.e. a machine too big to enumerate).
        self.sample_q = sample_q or isa.fmt.max_q
        self._machines: dict[int, Machine] = {}

    def machine(self, q: int) -> Machine:
        m = self._machines.get(q)
        if m is None:
            m = self._machines[q] = Machine(self.isa, q)
        return m

    # -- instructions -----------------------------------------------------
    def opcodes(self) -> Sequence[Instruction]:
        return list(self.isa.instructions)

    def opcode_name(self, opcode: Instruction) -> str:
        return opcode.mnemonic

    def opcode_doc(self, opcode: Instruction) -> str:
        return opcode.doc

    def instances(self, opcode: Instruction, bounds: Bounds) -> Iterable[Instance]:
        for args in product(range(bounds.q), repeat=len(opcode.operands)):
            yield Instance(opcode, args)

    def sample_instance(self, opcode: Instruction, rng) -> Instance:
        # operands mostly inside storage, sometimes anywhere in the field
        top = (1 << self.isa.addr_bits) - 1
        return Instance(opcode, tuple(rng.randrange(self.sample_q) if rng.random() < 0.8 else rng.randrange(top + 1)
                                      for _ in opcode.operands))

    # -- states -----------------------------------------------------------
    def states(self, bounds: Bounds) -> Iterator[State]:
        q = bounds.q
        for E in product(bounds.values, repeat=q):
            for l in range(q):
                for b in range(q):
                    for p in range(q):
                        # A fetch from outside R memory-traps in either mode,
                        # and the definitions exclude memory-trapping
                        # executions, so such states can never witness anything.
                        if p > b or p + l >= q:
                            continue
                        yield State(E, Mode.S, p, Reloc(l, b))

    def sample_state(self, rng) -> State:
        """A state of a ``sample_q``-word machine (by default the largest the word format allows)."""
        return self._random_state(rng)

    def _random_state(self, rng) -> State:
        q, fmt = self.sample_q, self.isa.fmt

        def word() -> int:
            r = rng.random()
            if r < 0.4:
                return rng.randrange(4)
            if r < 0.6:
                # PSW-shaped words matter: instructions that load a PSW only
                # change R to something interesting if storage holds one.
                l = rng.randrange(q)
                return fmt.pack_psw(PSW(rng.choice((Mode.S, Mode.U)), rng.randrange(q), Reloc(l, rng.randrange(q))))
            return rng.randrange(fmt.mask + 1)

        l = rng.randrange(q)
        # small windows often, so that a window moved by x still fits
        b = rng.randrange(8) if rng.random() < 0.5 else rng.randrange(q)
        # P inside R: a fetch outside R memory-traps and witnesses nothing
        p = rng.randrange(min(b, q - 1 - l) + 1)
        return State(tuple(word() for _ in range(q)), rng.choice((Mode.S, Mode.U)), p, Reloc(l, b))

    def execute(self, instance: Instance, state: State) -> Outcome:
        ex: Execution = self.machine(len(state.E)).execute(instance, state)
        return Outcome(state, ex.after, None if ex.trap is None else str(ex.trap), ex.trap is TrapKind.MEMORY)

    def mode(self, state: State) -> Mode:
        return state.M

    def with_mode(self, state: State, mode: Mode) -> State:
        return state._replace(M=mode)

    def base(self, state: State) -> int:
        return state.R.l

    def resources(self, state: State) -> Hashable:
        return (state.M, state.R)

    def view_key(self, state: State) -> Hashable:
        return (state.visible(), state.P, state.R.b)

    def observe(self, outcome: Outcome) -> Hashable:
        before, after = outcome.before, outcome.after
        return (after._replace(R=before.R).visible(), after.P)

    def counterpart(self, state: State, x: int, mode: Mode) -> State | None:
        l, b = state.R
        q = len(state.E)
        nl = l + x
        if nl < 0 or nl >= q:
            return None
        E = list(state.E)
        # Copy the visible window to its new place; words outside both windows
        # keep their values, so only the location of the window changes.
        window = [state.E[l + a] if l + a < q else None for a in range(b + 1)]
        for a, w in enumerate(window):
            if nl + a < q:
                if w is None:
                    return None  # the old window ran off storage where the new one does not
                E[nl + a] = w
            elif w is not None:
                return None
        return State(tuple(E), mode, state.P, Reloc(nl, b))

    def describe(self, state: State) -> str:
        return f"E={list(state.E)} M={state.M} P={state.P} R={state.R}"

    def state_json(self, state: State) -> dict:
        return {"E": list(state.E), "M": str(state.M), "P": state.P, "R": {"l": state.R.l, "b": state.R.b}}
