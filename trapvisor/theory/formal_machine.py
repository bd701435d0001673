"""The formal machine of Popek & Goldberg 1974, CACM 17(7), section 2 (the model of a third generation machine).

A state is the 4-tuple S = (E, M, P, R):

* ``E``  executable storage, ``q`` words, ``E[i]`` is word ``i``;
* ``M``  the mode, supervisor ``s`` or user ``u``;
* ``P``  the program counter, an address *relative to* ``R``;
* ``R = (l, b)`` the relocation-bounds register: ``l`` is the absolute base,
  ``b`` the bound.  The whole memory is ``(0, q-1)``.

``(M, P, R)`` is the program status word (PSW) and fits in one word.  There is
no I/O and there are no interrupts; an instruction is a function from states to
states.  A *trap* stores the old PSW in ``E[0]`` and loads the new PSW from
``E[1]``, leaving every other word as it was: that is all the machine does to
hand control to a supervisor.

**Memory-trap comparison.**  The paper's transcriptions differ on whether the
bound is compared with ``>`` or ``>=``.  This module uses

    virtual address ``a`` traps  iff  ``a > b``  or  ``a + l >= q``,

that is, ``b`` is the *largest legal virtual address* (inclusive).  That is the
reading under which ``(0, q-1)`` is exactly the whole memory, as the paper
says; with ``a >= b`` the whole-memory register would have to be ``(0, q)``.

**Traps we model.**  Three causes run the trap sequence: a memory trap (the
address check above fails, on the fetch or on an operand), a privilege trap
(an instruction the ISA reserves for supervisor mode executed in user mode) and
an illegal-instruction trap (a word that decodes to no instruction).  The paper
has only the first two; the third keeps ``step`` total over arbitrary memory.
Which cause it was is recorded beside the resulting state (the paper's
definitions need to know whether an execution "memory-traps"), but the state
itself is exactly the paper's: old PSW in ``E[0]``, new PSW from ``E[1]``.

**Word format.**  A machine family fixes the width of an address field (``A``
bits, so ``q <= 2**A``) and of a word (``W`` bits).  Every machine of the
family encodes PSWs and instructions the same way whatever its ``q``: this is
what lets a guest image written for a small bare machine run, unchanged, in a
partition of a larger one under a monitor.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Callable, NamedTuple

if TYPE_CHECKING:  # pragma: no cover - typing only
    from trapvisor.theory.isa import ISA, Instance


class Mode(str, Enum):
    """M: supervisor (``s``) or user (``u``)."""

    S = "s"
    U = "u"

    def __str__(self) -> str:
        return self.value

    @property
    def other(self) -> "Mode":
        return Mode.U if self is Mode.S else Mode.S


S, U = Mode.S, Mode.U


class Reloc(NamedTuple):
    """R = (l, b): absolute base ``l`` and inclusive bound ``b``."""

    l: int
    b: int

    def shifted(self, x: int) -> "Reloc":
        """``r (+) x = (l + x, b)``: the paper's relocation of a register."""
        return Reloc(self.l + x, self.b)

    def __str__(self) -> str:
        return f"({self.l},{self.b})"


class PSW(NamedTuple):
    """The program status word (M, P, R)."""

    M: Mode
    P: int
    R: Reloc

    def __str__(self) -> str:
        return f"<{self.M}, {self.P}, {self.R}>"


class State(NamedTuple):
    """S = (E, M, P, R).  Immutable, hashable, comparable."""

    E: tuple[int, ...]
    M: Mode
    P: int
    R: Reloc

    @property
    def q(self) -> int:
        return len(self.E)

    @property
    def psw(self) -> PSW:
        return PSW(self.M, self.P, self.R)

    def with_mode(self, m: Mode) -> "State":
        return self._replace(M=m)

    def visible(self) -> tuple[int | None, ...]:
        """E|r: the words visible through R, by virtual address 0..b.

        A virtual address whose absolute address falls outside storage maps to
        ``None`` ("no such word"), so two windows are equal only if they expose
        the same words at the same virtual addresses.
        """
        l, b = self.R
        q = len(self.E)
        return tuple(self.E[l + a] if l + a < q else None for a in range(b + 1))

    def __str__(self) -> str:
        return f"E={list(self.E)} M={self.M} P={self.P} R={self.R}"


class TrapKind(str, Enum):
    MEMORY = "memory"
    PRIVILEGE = "privilege"
    ILLEGAL = "illegal"

    def __str__(self) -> str:
        return self.value


class Trap(Exception):
    """Raised inside an instruction's semantics to abandon it and trap."""

    kind: TrapKind = TrapKind.PRIVILEGE

    def __init__(self, detail: str = ""):
        super().__init__(detail)
        self.detail = detail


class MemoryTrap(Trap):
    kind = TrapKind.MEMORY


class PrivilegeTrap(Trap):
    kind = TrapKind.PRIVILEGE


class IllegalInstruction(Trap):
    kind = TrapKind.ILLEGAL


def translate(a: int, r: Reloc, q: int) -> int:
    """Relocate virtual address ``a`` through ``r``; raise MemoryTrap if illegal.

    The comparison is ``a > b or a + l >= q`` (see the module docstring).
    """
    l, b = r
    if a > b or a + l >= q or a < 0:
        raise MemoryTrap(f"address {a} outside R={r} (q={q})")
    return a + l


@dataclass(frozen=True)
class WordFormat:
    """How a machine family lays out PSWs in a word.

    PSW word = ``m | P << 1 | l << (1 + A) | b << (1 + 2A)`` with ``m = 0`` for
    supervisor and ``1`` for user, each field ``A`` bits wide.
    """

    addr_bits: int
    word_bits: int

    def __post_init__(self) -> None:
        if self.word_bits < 1 + 3 * self.addr_bits:
            raise ValueError("a word must hold a PSW: word_bits >= 1 + 3*addr_bits")

    @property
    def max_q(self) -> int:
        return 1 << self.addr_bits

    @property
    def mask(self) -> int:
        return (1 << self.word_bits) - 1

    def pack_psw(self, psw: PSW) -> int:
        A = self.addr_bits
        am = (1 << A) - 1
        m = 0 if psw.M is Mode.S else 1
        return m | (psw.P & am) << 1 | (psw.R.l & am) << (1 + A) | (psw.R.b & am) << (1 + 2 * A)

    def unpack_psw(self, word: int) -> PSW:
        A = self.addr_bits
        am = (1 << A) - 1
        return PSW(
            Mode.U if word & 1 else Mode.S,
            (word >> 1) & am,
            Reloc((word >> (1 + A)) & am, (word >> (1 + 2 * A)) & am),
        )


class Execution(NamedTuple):
    """One application of an instruction: ``after = i(before)``.

    ``trap`` says whether (and why) the trap sequence ran.  ``reads`` and
    ``writes`` are the absolute addresses the instruction itself touched
    (empty when it trapped: a trapping instruction has no effect besides the
    trap sequence); a monitor uses them to audit resource control.
    """

    before: State
    after: State
    trap: TrapKind | None
    instance: "Instance | None"
    reads: tuple[int, ...] = ()
    writes: tuple[int, ...] = ()

    @property
    def memory_trapped(self) -> bool:
        return self.trap is TrapKind.MEMORY

    @property
    def trapped(self) -> bool:
        return self.trap is not None


class Context:
    """The draft of ``i(S)`` that an instruction's semantics edits.

    Semantics read the machine through this object and describe the new state
    by editing it; ``Machine.execute`` turns the draft into the next state.
    Unless the semantics set the program counter (``jump``, ``set_psw``), it
    advances by one.  Every memory access goes through the relocation-bounds
    register and may raise :class:`MemoryTrap`.
    """

    __slots__ = ("fmt", "q", "_E", "_mem", "mode", "R", "pc", "_next_pc", "reads", "writes")

    def __init__(self, fmt: WordFormat, state: State):
        self.fmt = fmt
        self.q = len(state.E)
        self._E = state.E
        self._mem: list[int] | None = None  # copy-on-write
        self.mode = state.M
        self.R = state.R
        self.pc = state.P
        self._next_pc: int | None = None
        self.reads: list[int] = []
        self.writes: list[int] = []

    # -- memory through R -------------------------------------------------
    def load(self, a: int) -> int:
        phys = translate(a, self.R, self.q)
        self.reads.append(phys)
        return self._mem[phys] if self._mem is not None else self._E[phys]

    def store(self, a: int, value: int) -> None:
        phys = translate(a, self.R, self.q)
        if self._mem is None:
            self._mem = list(self._E)
        self._mem[phys] = value & self.fmt.mask
        self.writes.append(phys)

    # -- control ----------------------------------------------------------
    def jump(self, target: int) -> None:
        self._next_pc = target

    def supervisor_only(self) -> None:
        """Trap unless in supervisor mode: what makes an instruction privileged."""
        if self.mode is Mode.U:
            raise PrivilegeTrap("supervisor-only instruction in user mode")

    def set_psw(self, psw: PSW) -> None:
        self.mode, self.R = psw.M, psw.R
        self._next_pc = psw.P

    @property
    def psw(self) -> PSW:
        return PSW(self.mode, self.pc, self.R)

    def pack_psw(self, psw: PSW) -> int:
        return self.fmt.pack_psw(psw)

    def unpack_psw(self, word: int) -> PSW:
        return self.fmt.unpack_psw(word)

    def result(self) -> State:
        E = tuple(self._mem) if self._mem is not None else self._E
        pc = self._next_pc if self._next_pc is not None else self.pc + 1
        return State(E, self.mode, pc & ((1 << self.fmt.addr_bits) - 1), self.R)


Semantics = Callable[..., None]


class Machine:
    """A machine of one ISA with ``q`` words of storage."""

    def __init__(self, isa: "ISA", q: int):
        if not 2 <= q <= isa.fmt.max_q:
            raise ValueError(f"q must be in 2..{isa.fmt.max_q} for ISA {isa.name}")
        self.isa = isa
        self.q = q
        self.fmt = isa.fmt

    # -- the trap sequence ------------------------------------------------
    def trap(self, state: State) -> State:
        """Store the old PSW in E[0], load the new PSW from E[1] (P&G 1974)."""
        E = list(state.E)
        E[0] = self.fmt.pack_psw(state.psw)
        new = self.fmt.unpack_psw(state.E[1])
        return State(tuple(E), new.M, new.P, new.R)

    # -- instructions as functions from states to states ------------------
    def execute(self, instance: "Instance", state: State) -> Execution:
        """Apply instruction ``instance`` to ``state``: ``i(S)``.

        The instruction is applied as if it had been fetched from ``P``: the
        fetch address is checked first, so an execution from a ``P`` outside
        ``R`` memory-traps, exactly as :meth:`step` would.
        """
        try:
            translate(state.P, state.R, len(state.E))
            ctx = Context(self.fmt, state)
            instance.op.semantics(ctx, *instance.args)
        except Trap as t:
            return Execution(state, self.trap(state), t.kind, instance)
        return Execution(state, ctx.result(), None, instance, tuple(ctx.reads), tuple(ctx.writes))

    def fetch(self, state: State) -> "Instance | None":
        """Decode the word at P; raises MemoryTrap if P is outside R."""
        return self.isa.decode(state.E[translate(state.P, state.R, len(state.E))])

    def step(self, state: State) -> Execution:
        """Fetch the instruction at P and execute it (one machine cycle)."""
        try:
            instance = self.fetch(state)
        except MemoryTrap:
            return Execution(state, self.trap(state), TrapKind.MEMORY, None)
        if instance is None:
            return Execution(state, self.trap(state), TrapKind.ILLEGAL, None)
        return self.execute(instance, state)

    def run(self, state: State, steps: int) -> tuple[State, list[Execution]]:
        """Run up to ``steps`` cycles; stop early at a fixed point (``i(S) = S``).

        A fixed point is how a program halts in a model without a halt
        instruction: ``HALT`` is a jump to itself, after which nothing changes.
        """
        trace: list[Execution] = []
        for _ in range(steps):
            ex = self.step(state)
            trace.append(ex)
            if ex.after == state:
                break
            state = ex.after
        return state, trace

    # -- states -----------------------------------------------------------
    def state(self, E, M: Mode = Mode.S, P: int = 0, R: Reloc | tuple | None = None) -> State:
        E = tuple(int(w) & self.fmt.mask for w in E)
        if len(E) != self.q:
            raise ValueError(f"storage must have q={self.q} words, got {len(E)}")
        R = Reloc(*R) if R is not None else Reloc(0, self.q - 1)
        return State(E, Mode(M), P, R)
