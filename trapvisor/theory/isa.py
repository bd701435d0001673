"""Defining an instruction set for the formal machine, and assembling programs.

In Popek & Goldberg 1974 (CACM 17(7)) an instruction is simply a function from
states to states.  Here an ISA is a named table of such functions, each with a
binary encoding so that programs can live in storage and be fetched::

    from trapvisor.theory.isa import ISA

    isa = ISA("tiny", "A two-instruction toy.")

    @isa.instruction("MOV a, b")
    def mov(c, a, b):
        "E[b] := E[a]"
        c.store(b, c.load(a))

    @isa.instruction("LPSW a")
    def lpsw(c, a):
        "load the PSW from E[a]; supervisor only"
        c.supervisor_only()
        c.set_psw(c.unpack_psw(c.load(a)))

The semantics receive a :class:`~trapvisor.theory.formal_machine.Context` (the draft
of the next state) and the operand values; they trap by raising (memory
accesses and ``supervisor_only`` do that for them) and otherwise the program
counter advances by one unless they jump.  Nothing else is needed: the
classifier, the theorems and the recipe-built monitor all work from this
table alone.

**Encoding.**  A word holds ``opcode << 2A | x << A | y`` where ``A`` is the
family's address width and ``x``, ``y`` are the first and second operand
fields (an instruction with fewer operands leaves the rest ignored).  A word
whose opcode field names no instruction is illegal and traps.

**Assembly syntax** (one statement a line, ``;`` starts a comment)::

    .q 8                      ; storage size of the bare machine
    .start main               ; initial P (default: 2, just past the PSW slots)
    .mode s                   ; initial mode (default s)
    .reloc 0, 7               ; initial R (default (0, q-1))
    .org 0                    ; set the location counter
    old:    .word 0           ; E[0] receives the old PSW on a trap
    new:    .psw s, handler, 0, 7   ; E[1] holds the new PSW
    main:   MOV x, y          ; operands are numbers, labels or label+n
    x:      .word 5

Unset words are zero.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

from trapvisor.theory.errors import TheoryError
from trapvisor.theory.formal_machine import PSW, Machine, Mode, Reloc, State, WordFormat

OPERAND_SLOTS = 2


@dataclass(frozen=True)
class Instruction:
    """One opcode of an ISA: its mnemonic, encoding and semantics."""

    mnemonic: str
    opcode: int
    operands: tuple[str, ...]
    semantics: Callable[..., None] = field(compare=False)
    doc: str = ""

    @property
    def signature(self) -> str:
        return f"{self.mnemonic} {', '.join(self.operands)}".strip()


class Instance(NamedTuple):
    """An instruction in the paper's sense: an opcode with its operands fixed."""

    op: Instruction
    args: tuple[int, ...]

    def __str__(self) -> str:
        return f"{self.op.mnemonic} {', '.join(map(str, self.args))}".strip()


_SIG = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_.]*)\s*(.*)$")


class ISA:
    """A named instruction set for the formal machine."""

    def __init__(
        self,
        name: str,
        doc: str = "",
        *,
        models: str = "",
        addr_bits: int = 6,
        opcode_bits: int = 4,
        default_q: int = 8,
    ):
        self.name = name
        self.doc = doc.strip()
        self.models = models.strip()
        self.addr_bits = addr_bits
        self.opcode_bits = opcode_bits
        self.default_q = default_q
        word_bits = max(1 + 3 * addr_bits, opcode_bits + OPERAND_SLOTS * addr_bits)
        self.fmt = WordFormat(addr_bits, word_bits)
        self.instructions: list[Instruction] = []
        self._by_opcode: dict[int, Instruction] = {}
        self._by_mnemonic: dict[str, Instruction] = {}
        # Hints a monitor may use (see recipe_vmm): a partition alignment the
        # monitor should respect.  Default 1 = none.
        self.partition_alignment = 1
        # Prose an ISA may carry for the theorem report: why a monitor works
        # although a theorem's condition fails ("full" / "hybrid").
        self.notes: dict[str, str] = {}

    # -- defining ---------------------------------------------------------
    def instruction(self, signature: str, *, opcode: int | None = None, doc: str | None = None):
        """Decorator: add the decorated function as the semantics of ``signature``."""

        def register(fn: Callable[..., None]) -> Callable[..., None]:
            self.add(signature, fn, opcode=opcode, doc=doc if doc is not None else (fn.__doc__ or ""))
            return fn

        return register

    def add(self, signature: str, semantics: Callable[..., None], *, opcode: int | None = None, doc: str = "") -> Instruction:
        m = _SIG.match(signature)
        if not m:
            raise TheoryError(f"ISA {self.name}: bad instruction signature {signature!r}")
        mnemonic = m.group(1).upper()
        operands = tuple(o.strip() for o in m.group(2).split(",") if o.strip())
        if len(operands) > OPERAND_SLOTS:
            raise TheoryError(f"ISA {self.name}: {mnemonic} has more than {OPERAND_SLOTS} operands")
        if mnemonic in self._by_mnemonic:
            raise TheoryError(f"ISA {self.name}: {mnemonic} defined twice")
        if opcode is None:
            opcode = next(i for i in range(1 << 16) if i not in self._by_opcode)
        if opcode in self._by_opcode:
            raise TheoryError(f"ISA {self.name}: opcode {opcode} used by {self._by_opcode[opcode].mnemonic} and {mnemonic}")
        if opcode >= 1 << self.opcode_bits:
            raise TheoryError(f"ISA {self.name}: opcode {opcode} of {mnemonic} does not fit in {self.opcode_bits} bits")
        ins = Instruction(mnemonic, opcode, operands, semantics, " ".join(doc.split()))
        self.instructions.append(ins)
        self._by_opcode[opcode] = ins
        self._by_mnemonic[mnemonic] = ins
        return ins

    def extended(self, name: str, doc: str | None = None, *, models: str | None = None) -> "ISA":
        """A copy of this ISA under a new name, ready for more instructions.

        Encodings are kept, so programs for the original run on the copy.
        """
        new = ISA(
            name,
            self.doc if doc is None else doc,
            models=self.models if models is None else models,
            addr_bits=self.addr_bits,
            opcode_bits=self.opcode_bits,
            default_q=self.default_q,
        )
        for ins in self.instructions:
            new.add(ins.signature, ins.semantics, opcode=ins.opcode, doc=ins.doc)
        new.partition_alignment = self.partition_alignment
        new.notes = dict(self.notes)
        return new

    # -- looking up -------------------------------------------------------
    def __getitem__(self, mnemonic: str) -> Instruction:
        try:
            return self._by_mnemonic[mnemonic.upper()]
        except KeyError:
            raise TheoryError(f"ISA {self.name} has no instruction {mnemonic!r}") from None

    def __contains__(self, mnemonic: str) -> bool:
        return mnemonic.upper() in self._by_mnemonic

    def instance(self, mnemonic: str, *args: int) -> Instance:
        ins = self[mnemonic]
        if len(args) != len(ins.operands):
            raise TheoryError(f"{ins.mnemonic} takes {len(ins.operands)} operand(s), got {len(args)}")
        return Instance(ins, tuple(args))

    def machine(self, q: int | None = None) -> Machine:
        return Machine(self, q or self.default_q)

    # -- encoding ---------------------------------------------------------
    def encode(self, instance: Instance) -> int:
        A = self.addr_bits
        am = (1 << A) - 1
        word = instance.op.opcode << (OPERAND_SLOTS * A)
        for slot, value in enumerate(instance.args):
            if not 0 <= value <= am:
                raise TheoryError(f"operand {value} of {instance.op.mnemonic} does not fit in {A} bits")
            word |= value << (A * (OPERAND_SLOTS - 1 - slot))
        return word

    def decode(self, word: int) -> Instance | None:
        A = self.addr_bits
        ins = self._by_opcode.get(word >> (OPERAND_SLOTS * A))
        if ins is None:
            return None
        am = (1 << A) - 1
        args = tuple((word >> (A * (OPERAND_SLOTS - 1 - slot))) & am for slot in range(len(ins.operands)))
        return Instance(ins, args)

    def disassemble(self, word: int) -> str:
        ins = self.decode(word)
        return str(ins) if ins is not None else f".word {word}"

    def assemble(self, text: str, *, source: str = "<program>") -> "Program":
        return assemble(self, text, source=source)

    def __repr__(self) -> str:
        return f"ISA({self.name!r}, {len(self.instructions)} instructions)"


# ---------------------------------------------------------------------------
# assembler


@dataclass
class Program:
    """An assembled memory image and the PSW it starts from."""

    isa: ISA
    image: tuple[int, ...]
    start: PSW
    labels: dict[str, int]
    lines: dict[int, str]  # address -> source text, for listings
    source: str = "<program>"

    @property
    def q(self) -> int:
        return len(self.image)

    def initial_state(self) -> State:
        return State(self.image, self.start.M, self.start.P, self.start.R)

    def machine(self) -> Machine:
        return Machine(self.isa, self.q)

    def listing(self) -> list[tuple[int, int, str]]:
        """(address, word, source or disassembly) for every non-zero word."""
        out = []
        for addr, word in enumerate(self.image):
            if word or addr in self.lines:
                out.append((addr, word, self.lines.get(addr, self.isa.disassemble(word))))
        return out


_LABEL = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*:\s*(.*)$")
_EXPR = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*|0x[0-9a-fA-F]+|\d+)\s*(?:([+-])\s*(0x[0-9a-fA-F]+|\d+))?$")


def assemble(isa: ISA, text: str, *, source: str = "<program>") -> Program:
    """Assemble ``text`` for ``isa`` (syntax in the module docstring)."""
    q = isa.default_q
    mode = Mode.S
    start_expr: tuple[str, int] | None = None
    reloc_exprs: tuple[tuple[str, int], tuple[str, int]] | None = None
    loc = 0
    words: dict[int, tuple[Callable[[dict[str, int]], int], int]] = {}
    lines: dict[int, str] = {}
    labels: dict[str, int] = {}

    def err(lineno: int, msg: str) -> TheoryError:
        return TheoryError(f"{source}:{lineno}: {msg}")

    def expr(s: str, lineno: int) -> Callable[[dict[str, int]], int]:
        m = _EXPR.match(s.strip())
        if not m:
            raise err(lineno, f"bad operand {s.strip()!r}")
        base, sign, off = m.groups()
        offset = 0 if sign is None else (int(off, 0) if sign == "+" else -int(off, 0))

        def value(labels: dict[str, int]) -> int:
            if base[0].isdigit():
                return int(base, 0) + offset
            if base not in labels:
                raise err(lineno, f"undefined label {base!r}")
            return labels[base] + offset

        return value

    def emit(lineno: int, value: Callable[[dict[str, int]], int], text: str) -> None:
        nonlocal loc
        if loc in words:
            raise err(lineno, f"address {loc} assembled twice")
        words[loc] = (value, lineno)
        lines[loc] = text
        loc += 1

    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split(";", 1)[0].strip()
        while line:
            m = _LABEL.match(line)
            if not m:
                break
            if m.group(1) in labels:
                raise err(lineno, f"label {m.group(1)!r} defined twice")
            labels[m.group(1)] = loc
            line = m.group(2).strip()
        if not line:
            continue
        head, _, rest = line.partition(" ")
        args = [a.strip() for a in rest.split(",")] if rest.strip() else []
        head_l = head.lower()
        if head_l == ".q":
            if len(args) != 1 or not args[0].isdigit():
                raise err(lineno, ".q takes one number")
            q = int(args[0])
        elif head_l == ".mode":
            if args not in (["s"], ["u"]):
                raise err(lineno, ".mode takes s or u")
            mode = Mode(args[0])
        elif head_l == ".start":
            if len(args) != 1:
                raise err(lineno, ".start takes one address")
            start_expr = (args[0], lineno)
        elif head_l == ".reloc":
            if len(args) != 2:
                raise err(lineno, ".reloc takes l, b")
            reloc_exprs = ((args[0], lineno), (args[1], lineno))
        elif head_l == ".org":
            if len(args) != 1:
                raise err(lineno, ".org takes one address")
            loc = expr(args[0], lineno)(labels)
        elif head_l == ".isa":
            if len(args) != 1:
                raise err(lineno, ".isa takes one name")
            if args[0] != isa.name:
                raise err(lineno, f"program is for ISA {args[0]!r}, not {isa.name!r}")
        elif head_l == ".word":
            for a in args:
                emit(lineno, expr(a, lineno), f".word {a}")
        elif head_l == ".psw":
            if len(args) != 4 or args[0] not in ("s", "u"):
                raise err(lineno, ".psw takes M, P, l, b (M is s or u)")
            m_, p_, l_, b_ = Mode(args[0]), expr(args[1], lineno), expr(args[2], lineno), expr(args[3], lineno)
            emit(
                lineno,
                lambda lab, m_=m_, p_=p_, l_=l_, b_=b_: isa.fmt.pack_psw(PSW(m_, p_(lab), Reloc(l_(lab), b_(lab)))),
                f".psw {', '.join(args)}",
            )
        elif head.startswith("."):
            raise err(lineno, f"unknown directive {head}")
        else:
            if head.upper() not in isa:
                raise err(lineno, f"ISA {isa.name} has no instruction {head!r}")
            ins = isa[head]
            if len(args) != len(ins.operands):
                raise err(lineno, f"{ins.mnemonic} takes {len(ins.operands)} operand(s) ({ins.signature}), got {len(args)}")
            exprs = [expr(a, lineno) for a in args]
            emit(
                lineno,
                lambda lab, ins=ins, exprs=exprs: isa.encode(Instance(ins, tuple(e(lab) for e in exprs))),
                f"{ins.mnemonic} {', '.join(args)}".strip(),
            )

    if not 2 <= q <= isa.fmt.max_q:
        raise TheoryError(f"{source}: .q must be in 2..{isa.fmt.max_q}")
    image = [0] * q
    for addr, (value, lineno) in words.items():
        if not 0 <= addr < q:
            raise err(lineno, f"address {addr} outside storage of {q} words")
        try:
            image[addr] = value(labels)
        except TheoryError:
            raise
        if not 0 <= image[addr] <= isa.fmt.mask:
            raise err(lineno, f"value {image[addr]} does not fit in a {isa.fmt.word_bits}-bit word")
    start = start_expr[0] if start_expr else None
    P = expr(start, start_expr[1])(labels) if start else 2
    if reloc_exprs:
        R = Reloc(expr(*reloc_exprs[0])(labels), expr(*reloc_exprs[1])(labels))
    else:
        R = Reloc(0, q - 1)
    return Program(isa, tuple(image), PSW(mode, P, R), labels, lines, source)
