"""Differential oracle: run a code snippet on unicorn (QEMU's TCG) and on our CPU.

A :class:`Case` is a snippet of 32-bit code plus an initial state: the eight
general registers, the arithmetic flags and DF, and a few memory writes.  Both
machines get the same flat memory (``MEM_SIZE`` bytes from address 0, no
paging, flat segments):

* code at ``CODE``; the snippet is followed by a HLT that marks its end
  (unicorn stops *at* it with ``until=``, our CPU executes it and halts);
* a data area ``DATA .. DATA+DATA_SIZE`` that memory operands point into
  (below 64 KiB so that 16-bit addressing can reach it);
* a stack area ``STACK .. STACK+STACK_SIZE``, ESP normally at ``STACK_TOP``.

:func:`check` runs both and compares the eight GPRs, EIP, the arithmetic
flags and DF, the data and stack areas, and the exception raised if any
(#DE from DIV/IDIV/AAM must occur in both, with the registers unchanged and
EIP at the faulting instruction).  Flags that Intel leaves undefined are
compared as well -- we match the oracle -- except for the deliberate
differences in :data:`DELIBERATE`, which is the table documented in
docs/undefined-flags.md.  A defined flag is never excused: an entry of
:data:`DELIBERATE` only masks the bits iced-x86 reports as undefined
(``Instruction.rflags_undefined``) for that instruction.

Snippets are assembled with iced-x86's BlockEncoder from ``Instruction``
objects: branch targets are the ``ip`` of another instruction of the list
(labels), see :func:`assemble`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import iced_x86 as iced
import unicorn as uc
from unicorn import x86_const as ux

from trapvisor.machine.bus import IoBus
from trapvisor.machine.cpu import CPU, enter_flat_protected_mode
from trapvisor.machine.cpu.constants import AF, CF, DF, OF, PF, SF, ZF
from trapvisor.machine.memory import PhysicalMemory

MEM_SIZE = 0x40000
CODE = 0x1000
DATA = 0x8000
DATA_SIZE = 0x4000
DATA_MID = DATA + DATA_SIZE // 2
STACK = 0x20000
STACK_SIZE = 0x10000
STACK_TOP = STACK + 0x8000
MAX_STEPS = 5000
# Paging (Case.paging): an identity map of all of MEM_SIZE through one page
# table, except Case.hole, a page left not present (for restartable #PF tests).
PD = 0x30000
PT = 0x31000

ARITH = CF | PF | AF | ZF | SF | OF
COMPARED_FLAGS = ARITH | DF
FLAG_NAMES = ((CF, "CF"), (PF, "PF"), (AF, "AF"), (ZF, "ZF"), (SF, "SF"), (OF, "OF"), (DF, "DF"))
REG_NAMES = ("EAX", "ECX", "EDX", "EBX", "ESP", "EBP", "ESI", "EDI")

_UC_REGS = (ux.UC_X86_REG_EAX, ux.UC_X86_REG_ECX, ux.UC_X86_REG_EDX, ux.UC_X86_REG_EBX,
            ux.UC_X86_REG_ESP, ux.UC_X86_REG_EBP, ux.UC_X86_REG_ESI, ux.UC_X86_REG_EDI)

# iced RflagsBits -> EFLAGS bits.
_RFLAGS = ((iced.RflagsBits.CF, CF), (iced.RflagsBits.PF, PF), (iced.RflagsBits.AF, AF),
           (iced.RflagsBits.ZF, ZF), (iced.RflagsBits.SF, SF), (iced.RflagsBits.OF, OF),
           (iced.RflagsBits.DF, DF))

M = iced.Mnemonic

# Deliberate differences from the oracle in flags Intel leaves undefined:
# mnemonic -> EFLAGS bits we do not compare (only ever applied to bits that
# iced reports as undefined for the instruction).  Keep in sync with the
# table in docs/undefined-flags.md.
DELIBERATE: dict[int, int] = {}


def undefined_flags(ins: iced.Instruction) -> int:
    """Intel's undefined EFLAGS bits for one instruction, per iced-x86."""
    u = ins.rflags_undefined
    return sum(bit for rb, bit in _RFLAGS if u & rb)


def scaled_examples(n: int) -> int:
    """Example count for a test, scaled by $TRAPVISOR_ORACLE_EXAMPLES (a factor, default 1)."""
    factor = float(os.environ.get("TRAPVISOR_ORACLE_EXAMPLES", "1"))
    return max(1, int(n * factor))


# ---------------------------------------------------------------- assembly
_FORMATTER = iced.Formatter(iced.FormatterSyntax.INTEL)


def assemble(instrs: list[iced.Instruction], ip: int = CODE, fixup=None) -> bytes:
    """Encode a list of instructions; ``ins.ip`` of each is its label.

    Instructions whose ip is 0 get fresh labels.  Branches created with
    ``Instruction.create_branch(code, label)`` jump to the instruction whose
    ip is ``label``.  A HLT (label ``END``) is appended: the end of the snippet.

    ``fixup(addresses)``, if given, is called with a dict label -> address
    after a first encoding and returns the final list of instructions (same
    labels and sizes), for snippets that need an address as an immediate.
    """
    out = _with_labels(instrs)
    code = _encode(out, ip)
    if fixup is not None:
        addrs = label_addresses(out, code, ip)
        out = _with_labels(fixup(addrs))
        code = _encode(out, ip)
        if label_addresses(out, code, ip) != addrs:
            raise ValueError("fixup changed the layout of the snippet")
    return code


def _with_labels(instrs):
    out = []
    used = {i.ip for i in instrs if i.ip}
    nxt = 1
    for ins in instrs:
        if not ins.ip:
            while nxt in used or nxt == END:
                nxt += 1
            ins.ip = nxt
            used.add(nxt)
        out.append(ins)
    return out


def _encode(instrs, ip):
    hlt = iced.Instruction.create(iced.Code.HLT)
    hlt.ip = END
    be = iced.BlockEncoder(32)
    be.add_many(list(instrs) + [hlt])
    return be.encode(ip)


def label_addresses(instrs, code: bytes, ip: int = CODE) -> dict[int, int]:
    """Label -> address, matching the decoded code to the instructions one to one."""
    dec = disassemble(code, ip)
    if len(dec) != len(instrs) + 1:
        raise ValueError("snippet does not decode one to one")
    addrs = {ins.ip: d.ip for ins, d in zip(instrs, dec)}
    addrs[END] = dec[-1].ip
    return addrs


END = 0xE0D   # label of the final HLT


def disassemble(code: bytes, ip: int = CODE) -> list[iced.Instruction]:
    return list(iced.Decoder(32, code, ip=ip))


def listing(code: bytes, ip: int = CODE) -> str:
    lines = []
    for ins in disassemble(code, ip):
        raw = code[ins.ip - ip: ins.ip - ip + ins.len].hex(" ")
        lines.append(f"  {ins.ip:#07x}: {raw:<36} {_FORMATTER.format(ins)}")
    return "\n".join(lines)


# ------------------------------------------------------------------- cases
@dataclass
class Case:
    code: bytes
    regs: list[int]
    eflags: int = 0
    writes: list[tuple[int, bytes]] = field(default_factory=list)
    ignore_flags: int = 0          # extra flags a test chooses not to compare
    max_steps: int = MAX_STEPS
    paging: bool = False
    hole: int | None = None        # with paging: a not-present page

    def page_tables(self) -> list[tuple[int, bytes]]:
        if not self.paging:
            return []
        pt = b"".join(((p << 12) | 7 if (p << 12) != self.hole else 0).to_bytes(4, "little")
                      for p in range(MEM_SIZE >> 12))
        return [(PT, pt), (PD, (PT | 7).to_bytes(4, "little"))]

    def write(self, addr: int, value: int, size: int) -> None:
        self.writes.append((addr, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")))

    def describe(self) -> str:
        regs = "  ".join(f"{n}={v:08x}" for n, v in zip(REG_NAMES, self.regs))
        fl = " ".join(n for b, n in FLAG_NAMES if self.eflags & b) or "-"
        w = ", ".join(f"[{a:#x}]={b.hex()}" for a, b in self.writes if len(b) <= 16)
        return f"{listing(self.code)}\n  initial: {regs}\n  flags: {fl}\n  memory: {w}"


@dataclass
class Outcome:
    regs: list[int]
    eip: int
    eflags: int
    fault: int | None          # exception vector, None if the snippet ran to its end
    data: bytes
    stack: bytes
    note: str = ""
    cr2: int = 0


# ------------------------------------------------------------------- unicorn
_ZERO = bytes(MEM_SIZE)


class _Unicorn:
    """One unicorn instance, reused for every case (its TB cache is flushed)."""

    def __init__(self):
        self.mu = uc.Uc(uc.UC_ARCH_X86, uc.UC_MODE_32)
        self.mu.mem_map(0, MEM_SIZE)
        self.fault = None
        self.mu.hook_add(uc.UC_HOOK_INTR, self._intr)

    def _intr(self, mu, intno, user_data):
        self.fault = intno
        mu.emu_stop()

    def run(self, case: Case) -> Outcome:
        mu = self.mu
        mu.mem_write(0, _ZERO)     # all of it: a case may write outside the compared areas
        mu.mem_write(CODE, case.code)
        for addr, b in case.writes + case.page_tables():
            mu.mem_write(addr, b)
        if case.paging:
            mu.reg_write(ux.UC_X86_REG_CR3, PD)
            mu.reg_write(ux.UC_X86_REG_CR0, mu.reg_read(ux.UC_X86_REG_CR0) | 0x80000001)
        mu.ctl_remove_cache(CODE, CODE + len(case.code) + 16)
        for r, v in zip(_UC_REGS, case.regs):
            mu.reg_write(r, v)
        mu.reg_write(ux.UC_X86_REG_EFLAGS, (case.eflags & COMPARED_FLAGS) | 2)
        mu.reg_write(ux.UC_X86_REG_EIP, CODE)
        end = CODE + len(case.code) - 1   # the HLT
        self.fault = None
        note = ""
        try:
            mu.emu_start(CODE, end, count=case.max_steps)
        except uc.UcError as e:
            if e.errno == uc.UC_ERR_INSN_INVALID:
                self.fault = 6
            else:
                note = f"unicorn: {e}"
        regs = [mu.reg_read(r) for r in _UC_REGS]
        eip = mu.reg_read(ux.UC_X86_REG_EIP)
        if self.fault is None and not note and eip != end:
            note = f"unicorn stopped at {eip:#x} (step budget {case.max_steps}?)"
        return Outcome(regs, eip, mu.reg_read(ux.UC_X86_REG_EFLAGS), self.fault,
                       bytes(mu.mem_read(DATA, DATA_SIZE)), bytes(mu.mem_read(STACK, STACK_SIZE)), note,
                       mu.reg_read(ux.UC_X86_REG_CR2))


_UC: _Unicorn | None = None


def run_unicorn(case: Case) -> Outcome:
    global _UC
    if _UC is None:
        _UC = _Unicorn()
    out = _UC.run(case)
    if out.fault is not None or out.note or case.paging:
        # After an exception unicorn's CPU believes it is still delivering it
        # (the next one would become a double fault): start afresh.
        _UC = None
    return out


# ------------------------------------------------------------------- ours
class _Stop(Exception):
    pass


def run_ours(case: Case) -> Outcome:
    mem = PhysicalMemory(MEM_SIZE)
    mem.write(CODE, case.code)
    for addr, b in case.writes + case.page_tables():
        mem.write(addr, b)
    cpu = CPU(mem, IoBus())
    enter_flat_protected_mode(cpu)
    if case.paging:
        cpu.set_cr3(PD)
        cpu.set_cr0(cpu.cr0 | 0x80000001)
    cpu.regs[:] = case.regs
    cpu.set_eflags((case.eflags & COMPARED_FLAGS) | 2)
    cpu.eip = CODE
    fault = []
    from trapvisor.machine.cpu.exits import ExceptionExit
    # Every event exits: the oracle stops there.
    ic = cpu.intercepts
    ic.exception_bitmap, ic.software_interrupt_exiting, ic.external_interrupt_exiting = 0xFFFFFFFF, True, True
    ex = cpu.run(case.max_steps)
    if isinstance(ex, ExceptionExit):
        fault.append(ex.vector)
    end = CODE + len(case.code) - 1
    eip = cpu.eip
    note = ""
    if fault:
        pass
    elif cpu.halted:
        eip -= 1    # our CPU executed the HLT; unicorn stops in front of it
    elif cpu.stop is not None:
        note = f"our CPU stopped: {cpu.stop.reason}: {cpu.stop.detail}"
    else:
        note = f"our CPU did not reach the end (EIP {eip:#x}, {cpu.icount} instructions)"
    if not fault and not note and eip != end:
        note = f"our CPU halted at {eip:#x}, not at the end {end:#x}"
    return Outcome(list(cpu.regs), eip, cpu.get_eflags(), fault[0] if fault else None,
                   bytes(mem.ram[DATA:DATA + DATA_SIZE]), bytes(mem.ram[STACK:STACK + STACK_SIZE]), note,
                   cpu.cr2)


# ---------------------------------------------------------------- compare
def _flags_str(v: int) -> str:
    return " ".join(n for b, n in FLAG_NAMES if v & b) or "-"


def _mem_diff(name: str, base: int, a: bytes, b: bytes, limit: int = 8) -> list[str]:
    if a == b:
        return []
    out = []
    i = 0
    n = len(a)
    while i < n and len(out) < limit:
        if a[i] != b[i]:
            j = i
            while j < n and j < i + 16 and a[j] != b[j]:
                j += 1
            out.append(f"{name} [{base + i:#x}..{base + j - 1:#x}]: unicorn {a[i:j].hex()} ours {b[i:j].hex()}")
            i = j
        else:
            i += 1
    return out


def compare(case: Case, ref: Outcome, ours: Outcome) -> list[str]:
    """Differences between the oracle's outcome and ours, as readable lines."""
    diffs = []
    if ref.note:
        raise AssertionError(f"the oracle could not run the case ({ref.note}):\n{case.describe()}")
    if ours.note:
        diffs.append(ours.note)
    if ref.fault != ours.fault:
        diffs.append(f"exception: unicorn {ref.fault} ours {ours.fault}")
    elif ref.fault == 14 and ref.cr2 != ours.cr2:
        diffs.append(f"CR2: unicorn {ref.cr2:08x} ours {ours.cr2:08x}")
    for n, a, b in zip(REG_NAMES, ref.regs, ours.regs):
        if a != b:
            diffs.append(f"{n}: unicorn {a:08x} ours {b:08x}")
    if ref.eip != ours.eip:
        diffs.append(f"EIP: unicorn {ref.eip:08x} ours {ours.eip:08x}")
    instrs = disassemble(case.code)
    ignored = case.ignore_flags
    undefined = 0
    for ins in instrs:
        u = undefined_flags(ins)
        undefined |= u
        ignored |= DELIBERATE.get(ins.mnemonic, 0) & u
    fd = (ref.eflags ^ ours.eflags) & COMPARED_FLAGS & ~ignored
    if fd:
        kind = "undefined " if fd & ~undefined == 0 else ""
        diffs.append(f"{kind}flags differ in {_flags_str(fd)}: unicorn {_flags_str(ref.eflags)} "
                     f"ours {_flags_str(ours.eflags)}")
    diffs += _mem_diff("data", DATA, ref.data, ours.data)
    diffs += _mem_diff("stack", STACK, ref.stack, ours.stack)
    return diffs


def check(case: Case, ignore_if=None) -> Outcome:
    """Run the case on both machines; raise AssertionError describing any difference.

    ``ignore_if(ref_outcome)``, if given, returns extra flags not to compare
    (for known oracle bugs that depend on the path taken).
    """
    ref = run_unicorn(case)
    ours = run_ours(case)
    if ignore_if is not None:
        case.ignore_flags |= ignore_if(ref)
    diffs = compare(case, ref, ours)
    if diffs:
        raise AssertionError("our CPU differs from unicorn:\n" + case.describe() + "\n  "
                             + "\n  ".join(diffs))
    return ref
