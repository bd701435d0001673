"""The programs a monitor is tried on: every program within a bound, random ones, and witness replays.

Equivalence (Popek & Goldberg 1974, CACM 17(7), section 3: a program under
the monitor behaves as on the bare machine) is a statement about *every*
program.  Three sets of programs stand in for "every":

* :func:`bounded_programs` enumerates every program within a
  :class:`ProgramBounds` -- storage of q words, ``length`` instruction words
  (every instance of every opcode, operands 0..q-1, so some reach past a
  short bound, and with l > 0 past the storage), the remaining words from ``values``, and every
  start PSW of :func:`start_psws`, in both modes, whose R puts the code at
  absolute address 2 with bounds inside, at and beyond the storage.  A run
  that agrees on all of them is a proof *within that bound*;
* :func:`random_programs` samples larger programs (8 words by default) with
  PSW words that relocate and shrink R mid-run, operands past the bound,
  and start PSWs with l > 0 and b < q - 1: sampling, and said to be;
* :func:`witness_programs` turns each classification witness of a
  sensitive, unprivileged instance into a program that starts in the
  witness state with the instance at P: evidence aimed at the instruction
  the classification says is the problem.

Every program here is a :class:`GuestImage`: the storage of a bare machine
and the PSW it starts from.  ``E[0]`` receives the old PSW on a trap and
``E[1]`` holds the new one (the trap handler), as in the paper's machine.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Iterator

from trapvisor.theory.errors import TheoryError
from trapvisor.theory.formal_machine import PSW, Mode, Reloc
from trapvisor.theory.isa import ISA, Instance, Program

S, U = Mode.S, Mode.U
CODE = 2  # programs start at absolute address 2, just past the PSW slots
MAX_WITNESS_WORDS = 16


@dataclass
class GuestImage:
    """A program for a bare machine of ``len(image)`` words and the PSW it starts from."""

    image: tuple[int, ...]
    start: PSW
    name: str = "program"

    @classmethod
    def from_program(cls, program: Program) -> "GuestImage":
        return cls(program.image, program.start, program.source)

    def listing(self, isa: ISA) -> list[str]:
        out = []
        for addr, word in enumerate(self.image):
            text = f".psw {isa.fmt.unpack_psw(word)}" if addr == 1 else f".word {word}" if addr == 0 \
                else isa.disassemble(word)
            out.append(f"{addr:3}: {word:#08x}  {text}")
        return out


@dataclass(frozen=True)
class ProgramBounds:
    """Every program an exhaustive equivalence check runs (see the module docstring)."""

    q: int = 4
    length: int = 1
    values: tuple[int, ...] = (0, 1)
    steps: int = 12

    def check(self, isa: ISA) -> None:
        if not CODE + self.length <= self.q <= min(8, isa.fmt.max_q):
            raise TheoryError(f"program bound: q must be between {CODE + self.length} (2 + --length) and 8")
        if not 1 <= self.length <= 3:
            raise TheoryError("program bound: --length must be 1, 2 or 3")
        if not 1 <= self.steps <= 1000:
            raise TheoryError("program bound: --steps must be between 1 and 1000")
        if not self.values or min(self.values) < 0 or max(self.values) > isa.fmt.mask:
            raise TheoryError("program bound: --program-values must be word values")

    def describe(self) -> str:
        v = ",".join(map(str, self.values))
        return (f"every program of q={self.q} words: {self.length} instruction word(s) at E[2..], "
                f"each any instance with operands 0..{self.q - 1}, other words in {{{v}}}, every start PSW "
                f"of start_psws (both modes, R within, at and past the bounds); {self.steps} steps each")

    def as_dict(self) -> dict:
        return {"q": self.q, "length": self.length, "values": list(self.values), "steps": self.steps,
                "operands": f"0..{self.q - 1}", "start_psws": len(start_psws(self.q))}


def start_psws(q: int) -> list[PSW]:
    """Every start PSW whose program counter points at absolute address 2.

    Both modes; R = (l, b) for l in 0..2 (P = 2 - l) and every b >= P up to
    q - l: bounds that stop short of the storage's end (an access past b
    traps), that end exactly at it, and one that reaches past it (the
    a + l >= q check traps instead).
    """
    out = []
    for m in (S, U):
        for l in range(min(CODE, q - 1) + 1):
            p = CODE - l
            for b in range(p, q - l + 1):
                out.append(PSW(m, p, Reloc(l, b)))
    return out


def instances(isa: ISA, top: int) -> list[Instance]:
    """Every instance of every opcode with operands in 0..top."""
    out = []
    for ins in isa.instructions:
        for args in itertools.product(range(top + 1), repeat=len(ins.operands)):
            out.append(Instance(ins, args))
    return out


def count(isa: ISA, bounds: ProgramBounds) -> int:
    n_ins = len(instances(isa, bounds.q - 1))
    return n_ins ** bounds.length * len(bounds.values) ** (bounds.q - CODE - bounds.length) * len(start_psws(bounds.q))


def bounded_programs(isa: ISA, bounds: ProgramBounds) -> Iterator[GuestImage]:
    """Every program within ``bounds``, in a fixed order.

    E[1], the trap handler, is the PSW <s, 2, (0, q-1)>: a trap re-enters
    the program at its start in supervisor mode, so every program also runs
    its code in the other mode after its first trap.
    """
    bounds.check(isa)
    q = bounds.q
    words = [isa.encode(i) for i in instances(isa, q - 1)]
    handler = isa.fmt.pack_psw(PSW(S, CODE, Reloc(0, q - 1)))
    psws = start_psws(q)
    data_words = q - CODE - bounds.length
    n = 0
    for code in itertools.product(words, repeat=bounds.length):
        for data in itertools.product(bounds.values, repeat=data_words):
            image = (0, handler, *code, *data)
            for psw in psws:
                n += 1
                yield GuestImage(image, psw, f"bounded program #{n}")


def random_image(isa: ISA, rng: random.Random, size: int = 8, name: str = "random program") -> GuestImage:
    """A random program of ``size`` words (module docstring): mostly instructions, some data and PSW words."""
    fmt = isa.fmt
    E = [0] * size
    E[1] = fmt.pack_psw(PSW(rng.choice((S, S, U)), rng.randrange(CODE, size), Reloc(0, size - 1)))

    def operand() -> int:
        return rng.randrange(size) if rng.random() < 0.85 else rng.randrange(size, size + 3)

    def psw_word() -> int:
        l = rng.randrange(3)
        b = rng.randrange(size - l + 1) if rng.random() < 0.5 else size - 1 - l
        return fmt.pack_psw(PSW(rng.choice((S, U)), rng.randrange(size), Reloc(l, b)))

    for i in range(CODE, size):
        r = rng.random()
        if r < 0.75:
            ins = rng.choice(isa.instructions)
            E[i] = isa.encode(Instance(ins, tuple(operand() for _ in ins.operands)))
        elif r < 0.88:
            E[i] = rng.randrange(4)
        else:
            E[i] = psw_word()
    # Half start as an operating system would (supervisor mode), half as a
    # user program; half with R relocated or its bound short of the end.
    m = rng.choice((S, U))
    if rng.random() < 0.5:
        start = PSW(m, CODE, Reloc(0, size - 1))
    else:
        l = rng.randrange(CODE + 1)
        start = PSW(m, CODE - l, Reloc(l, rng.randrange(CODE - l, size - l + 1)))
    return GuestImage(tuple(E), start, name)


def random_programs(isa: ISA, n: int, *, seed: int = 0, size: int = 8) -> Iterator[GuestImage]:
    rng = random.Random(seed)
    for k in range(n):
        yield random_image(isa, rng, size, f"random program #{k}, seed {seed}")


def witness_programs(isa: ISA, classification, user: bool = False) -> list[GuestImage]:
    """One program per sensitive, unprivileged instance's witness execution (formal ISAs only).

    The program is the witness state's storage (grown to at least 4 words)
    with the instance written at the state's P, started from the state's
    PSW: the classification says this instruction, from this state, is the
    problem, and the program tries exactly that under the monitor.
    """
    out = []
    for v in classification.verdicts:
        w = v.unprivileged_user_sensitive if user else v.unprivileged_sensitive
        if w is None:
            continue
        for o in w.executions:
            st = o.before
            if not hasattr(st, "E"):
                return []
            if len(st.E) > MAX_WITNESS_WORDS:
                continue  # a sampled machine: too large to host beside the monitors
            E = list(st.E) + [0] * max(0, 4 - len(st.E))
            at = st.R.l + st.P
            text, _, rest = w.instance.partition(" ")
            args = [int(a) for a in rest.split(",") if a.strip()]
            try:
                E[at] = isa.encode(isa.instance(text, *args))
            except (TheoryError, IndexError):
                continue
            out.append(GuestImage(tuple(E), st.psw, f"witness program: {w.instance} from {st.M}-mode state"))
    return out
