"""The x86 instruction forms the bridge classifies, enumerated rather than listed.

A *form* is one iced-x86 ``Code``: an opcode with its operand shape and size,
e.g. ``MOV r/m16, Sreg`` or ``PUSH CS``.  The candidates are every ``Code``
that

* has a legacy (non-VEX/EVEX) 32-bit encoding, and
* whose mnemonic the simulated CPU's handler registry
  (``trapvisor/machine/cpu/registry.py`` ``HANDLERS``) compiles.

Nothing here knows which instructions are privileged or sensitive; that is
the classifier's job.  For each form this module builds a few concrete
*encodings* (the classifier's instances) byte by byte from iced's opcode
tables -- register operands, a memory operand through EBX into the data page,
small immediates, short branch displacements, far pointers naming selectors
of the bridge's GDT -- and keeps an encoding only if iced decodes it back to
the same form and the CPU compiles it.

Forms left out, each for a stated reason (``skipped()`` lists them):

* **x87** (``F...`` mnemonics): the CPU has no x87 unit; its handler only
  performs the #NM checks of CR0.EM/TS and otherwise stops the machine as
  not implemented, so there is no semantics to classify;
* **no 32-bit encoding** survives the decode round trip (forms of 16-bit or
  64-bit mode only, such as ``POP CS``);
* **not implemented by the CPU**: every encoding is refused at compile time
  (``Unsupported``: e.g. the 486 test registers ``MOV r32, TR``, SSE forms that
  share a string-instruction mnemonic such as ``MOVSD xmm``).

Individual encodings the CPU refuses are dropped too (``MOV CS, r/m16`` is
#UD; ``MOV r32, CR1`` does not exist), without dropping the form.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import lru_cache

import iced_x86 as iced

K = iced.OpCodeOperandKind
T = iced.OpCodeTableKind
MP = iced.MandatoryPrefix

# Operand-kind groups (iced's OpCodeOperandKind).
_RM = {K.R8_OR_MEM: 1, K.R16_OR_MEM: 2, K.R32_OR_MEM: 4, K.R32_RM: 4, K.R16_RM: 2, K.MEM: 0,
       K.R16_REG_MEM: 2, K.R32_REG_MEM: 4}
_REG = {K.R8_REG: 1, K.R16_REG: 2, K.R32_REG: 4, K.SEG_REG: "seg", K.CR_REG: "cr", K.DR_REG: "dr",
        K.TR_REG: "tr"}
_OPCODE_REG = {K.R8_OPCODE: 1, K.R16_OPCODE: 2, K.R32_OPCODE: 4}
_IMM = {K.IMM8: 1, K.IMM8SEX16: 1, K.IMM8SEX32: 1, K.IMM16: 2, K.IMM32: 4}
_REL = {K.BR16_1: 1, K.BR32_1: 1, K.BR16_2: 2, K.BR32_4: 4}
_FAR = {K.FARBR2_2: 2, K.FARBR4_2: 4}
# Operands with no bytes of their own (fixed registers, string operands, "1").
_IMPLICIT = {K.AL, K.AX, K.EAX, K.CL, K.DX, K.CS, K.DS, K.ES, K.FS, K.GS, K.SS, K.ES_RDI, K.SEG_RSI,
             K.SEG_RBX_AL, K.IMM8_CONST_1, K.MEM_OFFS}

# Choices per operand.  Register numbers are ModRM encodings (0 EAX/AL/ES/CR0,
# 1 ECX, 2 EDX, 3 EBX, 4 ESP/AH, ...).  EBX is the base of every memory operand
# and ESP the stack pointer, so the register choices avoid them except where
# the register itself is the point (segment and control registers: all).
_REG_CHOICES = {1: (0,), 2: (0,), 4: (0, 4), "seg": (0, 1, 2, 3, 4, 5), "cr": (0, 2, 3, 4),
                "dr": (0, 6, 7), "tr": (6,)}
_RM_REG_CHOICES = (1, 2)
# Memory operands: [EBX] (mod=00 rm=011) and, for forms with a memory-only
# operand, also [EBX+8] (mod=01 rm=011 disp8).
_MEM_CHOICES = (b"\x03", b"\x43\x08")
_IMM_CHOICES = {1: (0x01, 0x80, 0x03), 2: (0x0004, 0x8000), 4: (0x00000010, 0xFFFFFFF0)}
_REL_CHOICES = {1: (0x10, 0xF0), 2: (0x0020,), 4: (0x00000020,)}
# MEM_OFFS (moffs): an absolute offset into the data page of the window.
MOFFS = 0x1100


@dataclass(frozen=True)
class Encoding:
    """One concrete instance of a form: its bytes (ending at ``len(raw)``)."""

    code: int
    raw: bytes
    text: str  # disassembly

    def __str__(self) -> str:
        return self.text

    def decode(self, ip: int = 0):
        return iced.Decoder(32, self.raw, ip=ip).decode()


@dataclass
class Form:
    """One iced ``Code``: what a verdict is reported for."""

    code: int
    mnemonic: str          # iced mnemonic, upper case (e.g. PUSHFD)
    name: str              # instruction string, unique (e.g. "PUSH CS" or "o32 PUSH CS")
    opcode: str            # opcode string as in the SDM (e.g. "o32 0E")
    encodings: list[Encoding] = field(default_factory=list)

    def __str__(self) -> str:
        return self.name

    def __hash__(self):
        return hash(self.code)

    def __eq__(self, other):
        return isinstance(other, Form) and other.code == self.code


@dataclass(frozen=True)
class Skipped:
    name: str
    opcode: str
    reason: str


_FORMATTER = iced.Formatter(iced.FormatterSyntax.INTEL)
_MNEMONIC_NAMES = {v: k for k, v in vars(iced.Mnemonic).items() if not k.startswith("_") and isinstance(v, int)}


def mnemonic_name(m: int) -> str:
    return _MNEMONIC_NAMES[m]


def _table_bytes(oi) -> bytes | None:
    t = oi.table
    if t == T.NORMAL:
        return b""
    if t == T.T0F:
        return b"\x0f"
    if t == T.T0F38:
        return b"\x0f\x38"
    if t == T.T0F3A:
        return b"\x0f\x3a"
    return None


def _prefixes(oi) -> bytes:
    p = b""
    if oi.address_size == 16:
        p += b"\x67"
    if oi.operand_size == 16:
        p += b"\x66"
    mp = oi.mandatory_prefix
    if mp == MP.P66:
        p += b"\x66"
    elif mp == MP.PF3:
        p += b"\xf3"
    elif mp == MP.PF2:
        p += b"\xf2"
    return p


def _candidates(oi) -> list[bytes]:
    """Byte strings that should encode form ``oi`` (each is checked by decoding)."""
    table = _table_bytes(oi)
    if table is None:
        return []
    kinds = [oi.op_kind(i) for i in range(oi.op_count)]
    op = oi.op_code
    op_bytes = op.to_bytes(oi.op_code_len, "big") if oi.op_code_len > 1 else bytes([op & 0xFF])
    needs_modrm = oi.is_group or any(k in _RM or k in _REG for k in kinds)
    # Per-operand choices, in operand order.
    reg_field: list[tuple] = [(oi.group_index,)] if oi.is_group else []
    rm_field: list[tuple] = []
    opcode_reg: list[tuple] = []
    tail: list[tuple] = []    # byte strings after ModRM/displacement (immediates, rel, far ptr, moffs)
    for k in kinds:
        if k in _REG:
            reg_field.append(_REG_CHOICES[_REG[k]])
        elif k in _RM:
            regs = tuple(bytes([0xC0 | r]) for r in _RM_REG_CHOICES)
            if k == K.MEM:
                rm_field.append(_MEM_CHOICES)
            elif k in (K.R32_RM, K.R16_RM):
                rm_field.append(regs)
            else:
                rm_field.append(_MEM_CHOICES[:1] + regs)
        elif k in _OPCODE_REG:
            opcode_reg.append((0, 1, 3) if _OPCODE_REG[k] != 4 else (0, 1, 4))
        elif k in _IMM:
            n = _IMM[k]
            tail.append(tuple(v.to_bytes(n, "little") for v in _IMM_CHOICES[n]))
        elif k in _REL:
            n = _REL[k]
            tail.append(tuple(v.to_bytes(n, "little") for v in _REL_CHOICES[n]))
        elif k in _FAR:
            n = _FAR[k]
            # offset, then selector: the far pointers name selectors of the
            # bridge's GDT (x86_state.FAR_TARGETS), with different privilege levels.
            from trapvisor.theory.bridges.x86_state import FAR_TARGETS
            tail.append(tuple(off.to_bytes(n, "little") + sel.to_bytes(2, "little")
                              for sel, off in FAR_TARGETS))
        elif k == K.MEM_OFFS:
            size = 2 if oi.address_size == 16 else 4
            tail.append((MOFFS.to_bytes(size, "little"),))
        elif k in _IMPLICIT:
            continue
        else:
            return []   # an operand kind this generator does not build (x87 ST(i), XMM, ...)
    out = []
    if oi.is_rm_group:
        rm_field = [(bytes([0xC0 | oi.rm_group_index]),)]
    if needs_modrm and not rm_field:
        rm_field = [tuple(bytes([0xC0 | r]) for r in _RM_REG_CHOICES)]
    if needs_modrm and not reg_field:
        reg_field = [(0,)]
    if len(reg_field) > 1:    # a group opcode with a register operand too: never in IA-32
        return []
    for regs in itertools.product(*reg_field) if needs_modrm else [()]:
        for rms in itertools.product(*rm_field) if needs_modrm else [()]:
            for oregs in itertools.product(*opcode_reg):
                for tails in itertools.product(*tail):
                    b = _prefixes(oi) + table
                    if oregs:
                        b += op_bytes[:-1] + bytes([op_bytes[-1] | oregs[0]])
                    else:
                        b += op_bytes
                    if needs_modrm:
                        rm = rms[0]
                        modrm = rm[0] | (regs[0] << 3)
                        b += bytes([modrm]) + rm[1:]
                    b += b"".join(tails)
                    out.append(b)
    return out


def _legacy_32bit_forms():
    from trapvisor.machine.cpu import translate  # noqa: F401  (registers the handlers)
    from trapvisor.machine.cpu.registry import HANDLERS

    for name, code in sorted(vars(iced.Code).items(), key=lambda kv: kv[1] if isinstance(kv[1], int) else -1):
        if name.startswith("_") or not isinstance(code, int) or code == iced.Code.INVALID:
            continue
        oi = iced.OpCodeInfo(code)
        if not oi.is_instruction or not oi.mode32 or oi.encoding != iced.EncodingKind.LEGACY:
            continue
        if oi.mnemonic not in HANDLERS:
            continue
        yield code, oi


@lru_cache(maxsize=1)
def _enumerate() -> tuple[tuple[Form, ...], tuple[Skipped, ...]]:
    from trapvisor.machine.bus import IoBus
    from trapvisor.machine.cpu import CPU
    from trapvisor.machine.cpu.operands import Unsupported
    from trapvisor.machine.cpu.registry import HANDLERS
    from trapvisor.machine.memory import PhysicalMemory

    probe = CPU(PhysicalMemory(0x1000), IoBus())
    forms, skipped = [], []
    for code, oi in _legacy_32bit_forms():
        mn = mnemonic_name(oi.mnemonic)
        name = oi.instruction_string
        opcode = oi.op_code_string
        if mn.startswith("F"):
            skipped.append(Skipped(name, opcode, "x87: the CPU has no x87 unit (only the #NM checks of CR0.EM/TS)"))
            continue
        encodings, refused = [], []
        for raw in _candidates(oi):
            ins = iced.Decoder(32, raw + b"\x90" * 4, ip=0).decode()
            if ins.code != code or ins.len != len(raw):
                continue
            try:
                HANDLERS[ins.mnemonic](probe, ins)
            except Unsupported as e:
                refused.append(str(e))
                continue
            encodings.append(Encoding(code, raw, _FORMATTER.format(ins)))
        if not encodings:
            if refused:
                skipped.append(Skipped(name, opcode, f"not implemented by the CPU ({refused[0]})"))
            else:
                skipped.append(Skipped(name, opcode, "no 32-bit encoding survives the decode round trip"))
            continue
        # A few encodings per form keep the run short; spread the choice.
        if len(encodings) > 12:
            step = len(encodings) / 12
            encodings = [encodings[int(i * step)] for i in range(12)]
        forms.append(Form(code, mn, name, opcode, encodings))
    # Names must be unique: several forms share an instruction string (o16/o32
    # variants of operand-less forms); qualify those with the opcode string.
    counts: dict[str, int] = {}
    for f in forms:
        counts[f.name] = counts.get(f.name, 0) + 1
    for f in forms:
        if counts[f.name] > 1:
            f.name = f"{f.name} ({f.opcode})"
    return tuple(forms), tuple(skipped)


def forms() -> tuple[Form, ...]:
    """Every classified form, in iced ``Code`` order."""
    return _enumerate()[0]


def skipped() -> tuple[Skipped, ...]:
    """Candidate forms not classified, each with the reason."""
    return _enumerate()[1]
