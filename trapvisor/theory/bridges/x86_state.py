"""States of the simulated IA-32 CPU for the bridge: layout, sampling, execution.

A bridge state is a small, immutable description of a whole machine
(:class:`X86State`): the mode part (CPL, IOPL), the program-visible part
(general registers, EIP, EFLAGS, data-segment selectors, the bytes of the
guest's window) and the relocation part R (:class:`Reloc`: where the window
is in linear and physical memory, the paging setup, where the system tables
are, CR0), plus other system state the twins share (:class:`Sys`: CR4, the
I/O permission bitmap, whether an LDT is loaded, the SYSENTER MSRs).
:class:`Machine` turns a state into a real :class:`~trapvisor.machine.cpu.CPU`
with its memory, executes one instruction with ``CPU.step`` and records what
came out (:class:`Snapshot`) and whether the exception hook fired (a trap).

Memory layout (physical; the table area is identity mapped when paging is
on, supervisor only)::

    0x01000  GDT, IDT, TSS, LDT   (table layout A)
    0x06000  GDT, IDT, TSS, LDT   (table layout B: other addresses, and the TSS
                                   and LDT descriptors at other GDT indices)
    0x0A000  page directory + page table (CR3 choice 0)
    0x0C000  page directory + page table (CR3 choice 1)
    0x10000  four 16 KiB slots: the guest's window lives in one of them

The *window* is what a program can address: every code and data segment of
the bridge's GDT has base W (the window's linear address) and limit 0x3FFF,
so the system tables are outside it.  Inside the window (segment offsets)::

    0x0000  code page: the instruction under test at EIP, NOPs elsewhere
    0x1000  data page: memory operands ([EBX], [EBX+8], moffs, strings) land
            at 0x1100..0x117F
    0x2000  stack page: ESP near 0x2800
    0x3000  inner stacks (TSS SS0:ESP0, SS1:ESP1, SS2:ESP2)

Sampled contents are *shaped* like what x86 keeps in memory -- selectors of
this GDT and LDT with any RPL, far pointers, EFLAGS images, interrupt-return
frames, port and MSR numbers -- next to arbitrary values: the sampler knows
x86 data formats, never which instruction is sensitive.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from functools import lru_cache

from trapvisor.machine.bus import IoBus
from trapvisor.machine.cpu import CPU, MachineStop
from trapvisor.machine.cpu import descriptors as D
from trapvisor.machine.cpu.constants import (
    AC, CR0_AM, CR0_EM, CR0_ET, CR0_MP, CR0_NE, CR0_PE, CR0_PG, CR0_TS, CR0_WP, CR4_DE, CR4_PGE,
    CR4_PSE, CR4_TSD, CS, DF, DS, ES, EXCEPTION_NAMES, FS, GS, ID, IF, IOPL, NT, RF, SS, TF,
)
from trapvisor.machine.memory import PhysicalMemory
from trapvisor.machine.cpu.exits import ExceptionExit

MEM_SIZE = 0x20000
WINDOW = 0x4000          # bytes a program can address (segment limit + 1)
LIMIT = WINDOW - 1
SLOTS = tuple(0x10000 + k * WINDOW for k in range(4))
PD = (0xA000, 0xC000)    # page directory choices (page table right after)
TABLE_PAGES = range(1, 0x0A)   # the table area, identity mapped when paging

CODE_PAGE, DATA_PAGE, STACK_PAGE, INNER_PAGE = 0x0000, 0x1000, 0x2000, 0x3000
DATA_HOT, DATA_HOT_LEN = 0x1100, 0x80
STACK_HOT, STACK_HOT_LEN = 0x27C0, 0xC0
EIPS = (0x0100, 0x0234, 0x07F0)
GATE_TARGET, IDT_TARGET, SYSENTER_TARGET = 0x0800, 0x0900, 0x0300
ESP0, ESP1, ESP2 = 0x3FF0, 0x3C00, 0x3800

# Table layouts: (GDT, GDT limit, IDT, TSS, LDT, TSS selector, LDT selector).
TABLES = (
    dict(gdt=0x1000, gdt_limit=0x87, idt=0x2000, tss=0x3000, ldt=0x4000, tss_sel=0x28, ldt_sel=0x30),
    dict(gdt=0x6000, gdt_limit=0xFF, idt=0x7000, tss=0x8000, ldt=0x9000, tss_sel=0xF8, ldt_sel=0xF0),
)
IDT_LIMIT = 0x7FF
LDT_LIMIT = 0x17
IOMAP_OFFSET = 0x68
IOMAP_PORTS = 0x400      # the bitmap covers ports 0..0x3FF; higher ports are always denied

# Program-visible descriptors (same index in both table layouts).
# selector index -> (name, kind, DPL, type nibble including the accessed bit)
KCODE, KDATA, UCODE, UDATA = 0x08, 0x10, 0x1B, 0x23
CALL_GATE = 0x38
SPARE_TSS = 0x80         # an available TSS (the loaded one is busy), for LTR
SPARE_TSS_OFFSET = 0x200  # its place, after the loaded TSS
SEGMENTS = {
    0x08: ("kernel code", "code", 0, 0xB),
    0x10: ("kernel data", "data", 0, 0x3),
    0x18: ("user code", "code", 3, 0xB),
    0x20: ("user data", "data", 3, 0x3),
    0x40: ("ring-1 code", "code", 1, 0xB),
    0x48: ("ring-1 data", "data", 1, 0x3),
    0x50: ("ring-2 code", "code", 2, 0xB),
    0x58: ("ring-2 data", "data", 2, 0x3),
    0x60: ("conforming code", "code", 0, 0xF),
    0x68: ("user read-only data", "data", 3, 0x1),
    0x70: ("user execute-only code", "code", 3, 0x9),
    0x78: ("not-present user data", "absent", 3, 0x3),
}
LDT_SEGMENTS = {  # LDT index * 8 -> same shape
    0x00: ("LDT user data", "data", 3, 0x3),
    0x08: ("LDT user code", "code", 3, 0xB),
    0x10: ("LDT kernel data", "data", 0, 0x3),
}
CODE_FOR_CPL = {0: 0x08, 1: 0x41, 2: 0x52, 3: 0x1B}
STACK_FOR_CPL = {0: 0x10, 1: 0x49, 2: 0x5A, 3: 0x23}
# Far pointers the form generator puts into JMP/CALL ptr16:32: (selector, offset).
FAR_TARGETS = ((0x08, 0x0200), (0x1B, 0x0200), (0x3B, 0x0000), (0x60, 0x0200), (0x73, 0x0200), (0x41, 0x0200))

CODE_SELECTORS = (0x08, 0x1B, 0x41, 0x52, 0x60, 0x63, 0x73, 0x0F, 0x3B, 0x38)
DATA_SELECTORS = (0x10, 0x23, 0x49, 0x5A, 0x6B, 0x07, 0x7B, 0x17, 0x00, 0x20)
SYSTEM_SELECTORS = (0x28, 0x30, 0x38, 0x3B, 0x80, 0xF0, 0xF8)
# What DS, ES, FS, GS may hold in a sampled state: loadable at every CPL.
VISIBLE_DATA = (0x23, 0x23, 0x6B, 0x07, 0x00)


def _seg_descriptor(base: int, limit: int, access: int, flags: int = 0x4) -> int:
    return ((limit & 0xFFFF) | ((base & 0xFFFFFF) << 16) | (access << 40)
            | (((limit >> 16) & 0xF) << 48) | (flags << 52) | (((base >> 24) & 0xFF) << 56))


def _gate(selector: int, offset: int, access: int, params: int = 0) -> int:
    return ((offset & 0xFFFF) | (selector << 16) | (params << 32) | (access << 40)
            | (((offset >> 16) & 0xFFFF) << 48))


def _segment(base: int, kind: str, dpl: int, typ: int) -> int:
    present = 0 if kind == "absent" else 0x80
    return _seg_descriptor(base, LIMIT, present | (dpl << 5) | 0x10 | typ)


# ---------------------------------------------------------------------------
# the state


@dataclass(frozen=True)
class Reloc:
    """R: where the machine puts the guest, and how it translates its addresses.

    ``seg_base`` is W, the base of every segment (the window's linear
    address); with ``paging`` the window's linear pages map to the physical
    frames at ``frame`` through the page directory at ``cr3``; without it
    ``frame == seg_base``.  ``tables`` picks table layout A or B (GDTR, IDTR,
    TR and LDTR bases, and the GDT indices of the TSS and LDT descriptors).
    ``cr0`` is the whole of CR0 (PE=1; PG as ``paging``).
    """

    seg_base: int
    paging: bool
    frame: int
    cr3: int
    tables: int
    cr0: int

    def describe(self) -> str:
        where = f"W={self.seg_base:#x}"
        where += f" paging->frames {self.frame:#x} (CR3={self.cr3:#x})" if self.paging else " no paging"
        t = TABLES[self.tables]
        return (f"{where}, tables {'AB'[self.tables]} (GDT {t['gdt']:#x}, IDT {t['idt']:#x}, "
                f"TR {t['tss_sel']:#x}, LDTR {t['ldt_sel']:#x}), CR0={self.cr0:#010x}")


@dataclass(frozen=True)
class Sys:
    """System state besides M and R that both twins share."""

    cr4: int
    ldt_loaded: bool
    iomap: bytes | None       # I/O permission bitmap for ports 0..0x3FF, or no bitmap
    sysenter_cs: int
    tsc: int = 0


@dataclass(frozen=True)
class X86State:
    """One sampled machine state (see the module docstring).

    ``mode`` is the Popek-Goldberg mode the state stands for: ``s`` (CPL 0,
    the sampled IOPL ``iopl_s``), ``u`` (CPL 3, IOPL 0) or ``p`` (another
    CPL/IOPL combination, for the privilege profile).  ``tag`` is 0 for a
    sampled state and ``x`` for its relocated counterpart ``r (+) x``.
    """

    mode: str
    cpl: int
    iopl: int
    iopl_s: int
    eflags: int                   # IOPL field == iopl
    regs: tuple[int, ...]         # EAX ECX EDX EBX ESP EBP ESI EDI
    eip: int
    segs: tuple[int, int, int, int]  # ES DS FS GS selectors
    data_hot: bytes
    stack_hot: bytes
    R: Reloc
    sys: Sys
    tag: int = 0

    def with_privilege(self, mode: str, cpl: int, iopl: int) -> "X86State":
        flags = (self.eflags & ~IOPL) | (iopl << 12)
        if (mode, cpl, iopl, flags) == (self.mode, self.cpl, self.iopl, self.eflags):
            return self
        return self._copy(mode=mode, cpl=cpl, iopl=iopl, eflags=flags)

    def _copy(self, **changes) -> "X86State":
        """``dataclasses.replace`` without its checks: states are copied on every probe."""
        new = object.__new__(X86State)
        d = dict(self.__dict__)
        d.pop("_hash", None)
        d.update(changes)
        new.__dict__.update(d)
        return new

    def __hash__(self) -> int:
        # States are dictionary keys of every cache; their fields never change, so hash once.
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash((self.mode, self.cpl, self.iopl, self.iopl_s, self.eflags, self.regs, self.eip, self.segs,
                      self.data_hot, self.stack_hot, self.R, self.sys, self.tag))
            self.__dict__["_hash"] = h
        return h

    def __getstate__(self):
        # the cached hash is per process (str hashes are salted): never pickle it
        return {k: v for k, v in self.__dict__.items() if k != "_hash"}

    def __setstate__(self, state):
        self.__dict__.update(state)


@dataclass(frozen=True)
class Snapshot:
    """The machine after one step (or as loaded, for the 'before' resources)."""

    regs: tuple[int, ...]
    eip: int
    eflags: int
    cpl: int
    sel: tuple[int, ...]
    cache: tuple[tuple[int, int, int], ...]   # (base, limit, attr) per segment register
    gdtr: tuple[int, int]
    idtr: tuple[int, int]
    ldtr: tuple[int, int, int]
    tr: tuple[int, int, int, int]
    cr: tuple[int, int, int, int]             # CR0 CR2 CR3 CR4
    msrs: tuple[int, int, int]                # SYSENTER CS, ESP, EIP
    halted: bool
    window: bytes                             # the window through the *before* state's R
    ports: tuple                              # (port, size, value) written

    @property
    def iopl(self) -> int:
        return (self.eflags >> 12) & 3

    def resources(self, if_in_m: bool = True):
        """M and R and the rest of the system state a program must not change by itself.

        IF is part of it unless ``if_in_m`` is False (the reading that puts
        IF with the program-visible state, see ``X86Adapter``).
        """
        flags = self.eflags & (IOPL | IF) if if_in_m else self.eflags & IOPL
        return (self.cpl, flags, self.sel[CS], self.sel[SS], self.cache, self.gdtr,
                self.idtr, self.ldtr, self.tr, self.cr[0], self.cr[2], self.cr[3], self.msrs)

    @staticmethod
    def without_if(resources: tuple) -> tuple:
        """``resources()`` with IF taken out of the flags."""
        return (resources[0], resources[1] & IOPL) + tuple(resources[2:])

    def view(self, if_visible: bool = False):
        """What a program sees: registers, EIP, EFLAGS but IOPL (part of M) and, unless
        ``if_visible``, IF, the data-segment selectors, the window's bytes and what it
        wrote to I/O ports."""
        visible_sel = (self.sel[ES], self.sel[DS], self.sel[FS], self.sel[GS])
        hidden = IOPL | RF | (0 if if_visible else IF)
        return (self.regs, self.eip, self.eflags & ~hidden, visible_sel, self.window, self.ports)


# ---------------------------------------------------------------------------
# sampling


_EFLAGS_BITS = (0x1, 0x4, 0x10, 0x40, 0x80, 0x800)   # CF PF AF ZF SF OF
_MSRS = (0x10, 0x1B, 0x174, 0x175, 0x176, 0x1A0, 0x277, 0x8B)
_PORTS = (0x20, 0x21, 0x60, 0x64, 0x70, 0x71, 0x80, 0x3F8, 0x3FD, 0x1F0, 0xCF8, 0xF4)


def _selector(rng: random.Random, pool) -> int:
    sel = rng.choice(pool)
    if rng.random() < 0.3:
        sel = (sel & ~3) | rng.randrange(4)
    return sel


def _eflags_image(rng: random.Random) -> int:
    v = 0x2
    for b in _EFLAGS_BITS:
        if rng.random() < 0.5:
            v |= b
    for b, p in ((IF, 0.5), (DF, 0.2), (AC, 0.2), (ID, 0.2), (TF, 0.05), (NT, 0.05)):
        if rng.random() < p:
            v |= b
    return v | (rng.randrange(4) << 12)


def plausible(rng: random.Random) -> int:
    """A 32-bit value shaped like something x86 keeps in registers or memory."""
    r = rng.random()
    if r < 0.28:
        return _selector(rng, CODE_SELECTORS + DATA_SELECTORS + (0x28, 0x30, 0xF0, 0xF8, 0x80, 0x2B))
    if r < 0.42:
        return rng.randrange(16)
    if r < 0.52:
        return rng.randrange(0x1000)                     # an offset in the code page
    if r < 0.60:
        return rng.choice((DATA_HOT, STACK_HOT + 0x40, ESP0 - 0x10)) + 4 * rng.randrange(8)
    if r < 0.68:
        return _eflags_image(rng)
    if r < 0.73:
        return rng.choice(_MSRS)
    if r < 0.78:
        return rng.choice(_PORTS)
    return rng.getrandbits(32)


_RING_CODE = {0: (0x08, 0x60), 1: (0x41,), 2: (0x52,), 3: (0x1B, 0x1B, 0x73, 0x0F, 0x63)}
_RING_DATA = {0: (0x10, 0x14), 1: (0x49,), 2: (0x5A,), 3: (0x23, 0x23, 0x6B, 0x07)}
_RING_STACK = {0: (0x10,), 1: (0x49,), 2: (0x5A,), 3: (0x23, 0x23, 0x07)}


def _template(rng: random.Random, ring: int, weights: tuple[float, ...]) -> list[int]:
    """Words shaped like an x86 data structure, mostly for ``ring`` (selectors
    whose RPL and DPL match it).  Kinds, chosen with ``weights``: a far pointer
    (offset, selector); a far-return frame (EIP, CS, ESP, SS); an
    interrupt-return frame (EIP, CS, EFLAGS, ESP, SS); a run of selectors; and
    the 16-bit far pointer / far-return / interrupt-return frame, packed two
    16-bit words to a dword."""
    consistent = rng.random() < 0.8

    def pick(table, pool):
        return rng.choice(table[ring]) if consistent else _selector(rng, pool)

    def any_selector():
        r = rng.random()
        return pick(_RING_CODE, CODE_SELECTORS) if r < 0.45 else pick(_RING_STACK, DATA_SELECTORS) if r < 0.9 \
            else pick(_RING_DATA, DATA_SELECTORS)

    eip, esp = rng.randrange(0x1000), STACK_HOT + 4 * rng.randrange(8)
    kind = rng.choices(range(5), weights)[0]
    if kind == 0:
        return [eip, any_selector()]
    if kind == 1:
        return [eip, pick(_RING_CODE, CODE_SELECTORS), esp, pick(_RING_STACK, DATA_SELECTORS)]
    if kind == 2:
        return [eip, pick(_RING_CODE, CODE_SELECTORS), _eflags_image(rng), esp, pick(_RING_STACK, DATA_SELECTORS)]
    if kind == 3:
        return [pick(_RING_DATA, DATA_SELECTORS) if rng.random() < 0.7 else rng.choice(SYSTEM_SELECTORS)
                for _ in range(4)]
    r = rng.random()
    if r < 0.5:
        words16 = [eip, any_selector()]
    elif r < 0.7:
        words16 = [eip, pick(_RING_CODE, CODE_SELECTORS), esp, pick(_RING_STACK, DATA_SELECTORS)]
    else:
        words16 = [eip, pick(_RING_CODE, CODE_SELECTORS), _eflags_image(rng) & 0xFFFF, esp,
                   pick(_RING_STACK, DATA_SELECTORS), 0]
    return [(words16[i] & 0xFFFF) | ((words16[i + 1] & 0xFFFF) << 16) for i in range(0, len(words16), 2)]


# Template weights for memory that operands point at, and for the top of the stack.
DATA_TEMPLATES = (0.4, 0.05, 0.05, 0.25, 0.25)
STACK_TEMPLATES = (0.05, 0.25, 0.25, 0.3, 0.15)


@lru_cache(maxsize=1)
def _pool() -> tuple[int, ...]:
    """Plausible values, drawn once (filling memory word by word is the sampler's hot spot)."""
    rng = random.Random(0x86)
    return tuple(plausible(rng) for _ in range(8192))


def _fill(rng: random.Random, length: int, anchors: list[int], ring: int, weights) -> bytes:
    words = rng.choices(_pool(), k=length // 4)
    for a in anchors:
        if rng.random() < 0.85:
            for i, w in enumerate(_template(rng, ring, weights)):
                if 0 <= a // 4 + i < len(words):
                    words[a // 4 + i] = w
    return b"".join((w & 0xFFFFFFFF).to_bytes(4, "little") for w in words)


def random_state(rng: random.Random) -> X86State:
    """A state in supervisor mode (the classifier makes its twins with ``with_mode``)."""
    iopl = rng.randrange(4)
    flags = 0x2
    for b in _EFLAGS_BITS:
        if rng.random() < 0.5:
            flags |= b
    for b, p in ((IF, 0.5), (DF, 0.15), (AC, 0.2), (ID, 0.2)):
        if rng.random() < p:
            flags |= b
    flags |= iopl << 12
    ebx = DATA_HOT + 4 * rng.randrange(16) if rng.random() < 0.85 else plausible(rng)
    esp = STACK_HOT + 0x40 + 4 * rng.randrange(-4, 8) if rng.random() < 0.9 else plausible(rng)
    esi = DATA_HOT + 4 * rng.randrange(12) if rng.random() < 0.8 else plausible(rng)
    edi = DATA_HOT + 4 * rng.randrange(12) if rng.random() < 0.8 else plausible(rng)
    ring = rng.choices((3, 0, 1, 2), (0.45, 0.45, 0.05, 0.05))[0]   # whose selectors registers and memory hold

    def general() -> int:
        r = rng.random()
        if r < 0.36:
            return rng.choice((_RING_DATA[ring], _RING_CODE[ring], SYSTEM_SELECTORS)[int(r / 0.12)])
        return plausible(rng)

    regs = (general(), general(), general(), ebx, esp, plausible(rng), esi, edi)
    paging = rng.random() < 0.5
    w = rng.choice(SLOTS)
    frame = rng.choice(SLOTS) if paging else w
    cr0 = CR0_PE | CR0_ET | (CR0_PG if paging else 0)
    for b, p in ((CR0_WP, 0.5), (CR0_AM, 0.3), (CR0_MP, 0.3), (CR0_TS, 0.2), (CR0_EM, 0.2), (CR0_NE, 0.5)):
        if rng.random() < p:
            cr0 |= b
    R = Reloc(w, paging, frame, rng.choice(PD) if paging else 0, rng.randrange(2), cr0)
    cr4 = 0
    for b, p in ((CR4_TSD, 0.5), (CR4_PSE, 0.3), (CR4_PGE, 0.3), (CR4_DE, 0.2)):
        if rng.random() < p:
            cr4 |= b
    r = rng.random()        # no bitmap (all ports closed), a random one, all open, all closed
    iomap = None if r < 0.25 else rng.randbytes(IOMAP_PORTS // 8) if r < 0.6 else \
        bytes(IOMAP_PORTS // 8) if r < 0.85 else b"\xff" * (IOMAP_PORTS // 8)
    sys = Sys(cr4, rng.random() < 0.7, iomap, KCODE if rng.random() < 0.7 else 0)
    segs = tuple(rng.choice(VISIBLE_DATA) if rng.random() < 0.6 else UDATA for _ in range(4))
    if not sys.ldt_loaded:      # an LDT selector in a segment register needs the LDT
        segs = tuple(UDATA if sel & 4 else sel for sel in segs)
    data = _fill(rng, DATA_HOT_LEN, [ebx - DATA_HOT, ebx + 8 - DATA_HOT], ring, DATA_TEMPLATES)
    stack = _fill(rng, STACK_HOT_LEN, [esp - STACK_HOT], ring, STACK_TEMPLATES)
    return X86State("s", 0, iopl, iopl, flags, regs, rng.choice(EIPS), segs, data, stack, R, sys)


def relocate(state: X86State, x: int) -> X86State | None:
    """``r (+) x``: the same program-visible machine hosted differently.

    Every relocation gives the machine other system tables (GDT, IDT, TSS and
    LDT elsewhere, the TSS and LDT descriptors in other GDT slots) and another
    machine status word (CR0.MP, TS, NE flipped) -- a monitor's real tables
    and CR0 are always its own -- and moves the window: x = +1/-1 by the
    segment bases (one 16 KiB slot up/down), x = +2 onto other physical frames
    through another page directory (paging turned on if it was off), x = -2
    by switching paging the other way (identity frames when turned on), and
    x = +3/-3 both by the segment bases and onto other frames.  None if the
    window cannot move that way.
    """
    R = state.R
    R = replace(R, tables=1 - R.tables, cr0=R.cr0 ^ (CR0_MP | CR0_TS | CR0_NE))
    if x in (1, -1, 3, -3):
        w = R.seg_base + (1 if x > 0 else -1) * WINDOW
        if w not in SLOTS:
            return None
        R = replace(R, seg_base=w, frame=R.frame if R.paging else w)
    if x in (2, 3, -3):
        frames = [s for s in SLOTS if s != R.frame]
        frame = frames[(SLOTS.index(R.seg_base) + 1) % len(frames)]
        cr3 = PD[1] if R.cr3 == PD[0] else PD[0]
        R = replace(R, paging=True, frame=frame, cr3=cr3, cr0=R.cr0 | CR0_PG)
    elif x == -2:
        if R.paging:
            R = replace(R, paging=False, frame=R.seg_base, cr3=0, cr0=R.cr0 & ~CR0_PG)
        else:
            R = replace(R, paging=True, frame=R.seg_base, cr3=PD[1], cr0=R.cr0 | CR0_PG)
    elif x not in (1, -1):
        return None
    return state._copy(R=R, tag=x)


# ---------------------------------------------------------------------------
# building and running a machine


class _Ports:
    """Every I/O port: reads return a value fixed by the port, writes are recorded."""

    def __init__(self):
        self.log: list = []

    def io_read(self, port: int, size: int) -> int:
        return ((port * 0x9E3779B1) >> 5) & ((1 << (8 * size)) - 1)

    def io_write(self, port: int, size: int, value: int) -> None:
        self.log.append((port, size, value))


def _w32(buf: bytearray, addr: int, v: int) -> None:
    buf[addr:addr + 4] = (v & 0xFFFFFFFF).to_bytes(4, "little")


def _w64(buf: bytearray, addr: int, v: int) -> None:
    buf[addr:addr + 8] = v.to_bytes(8, "little")


def _descriptor_table(w: int, layout: int) -> dict[int, int]:
    t = TABLES[layout]
    gdt = {idx: _segment(w, *spec[1:]) for idx, spec in SEGMENTS.items()}
    gdt[CALL_GATE] = _gate(KCODE, GATE_TARGET, 0x80 | (3 << 5) | 0x0C)
    gdt[t["tss_sel"]] = _seg_descriptor(t["tss"], IOMAP_OFFSET + IOMAP_PORTS // 8, 0x8B, 0)  # busy 32-bit TSS
    gdt[t["ldt_sel"]] = _seg_descriptor(t["ldt"], LDT_LIMIT, 0x82, 0)
    gdt[SPARE_TSS] = _seg_descriptor(t["tss"] + SPARE_TSS_OFFSET, 0x67, 0x89, 0)          # available 32-bit TSS
    return gdt


@lru_cache(maxsize=64)
def _caches(w: int, layout: int) -> dict[int, tuple[int, int, int]]:
    """Descriptor caches (base, limit, attr) by selector without RPL, as a segment load fills them."""
    out = {}
    for idx, d in _descriptor_table(w, layout).items():
        out[idx] = (D.d_base(d), D.d_limit(d), D.d_attr(d))
    for idx, (_, kind, dpl, typ) in LDT_SEGMENTS.items():
        d = _segment(w, kind, dpl, typ)
        out[idx | 4] = (D.d_base(d), D.d_limit(d), D.d_attr(d))
    return out


class Machine:
    """One reusable memory + I/O bus; a fresh CPU for every execution."""

    def __init__(self, strict: bool = False, software_interrupts_trap: bool = True):
        self.strict = strict
        self.software_interrupts_trap = software_interrupts_trap
        self.mem = PhysicalMemory(MEM_SIZE)
        self.ports = _Ports()
        self.bus = IoBus()
        self.bus.register(0, 0x10000, self.ports)
        self._images: dict = {}

    # -- memory image -----------------------------------------------------
    def base_image(self, R: Reloc) -> bytes:
        """The memory of a machine with relocation ``R``: tables, page tables, NOP code page.

        Cached: it depends only on where things are, not on the sampled contents.
        """
        key = (R.seg_base, R.paging, R.frame, R.cr3, R.tables)
        img = self._images.get(key)
        if img is None:
            img = self._images[key] = bytes(self._build(R))
        return img

    def _build(self, R: Reloc) -> bytearray:
        buf = bytearray(MEM_SIZE)
        t = TABLES[R.tables]
        w = R.seg_base
        for idx, d in _descriptor_table(w, R.tables).items():
            _w64(buf, t["gdt"] + idx, d)
        for idx, (_, kind, dpl, typ) in LDT_SEGMENTS.items():
            _w64(buf, t["ldt"] + idx, _segment(w, kind, dpl, typ))
        for v in range(256):
            dpl = 3 if v in (3, 4, 0x80) else 0
            _w64(buf, t["idt"] + 8 * v, _gate(KCODE, IDT_TARGET + v, 0x80 | (dpl << 5) | 0x0E))
        tss = t["tss"]
        for n, (esp, ss) in enumerate(((ESP0, 0x10), (ESP1, 0x49), (ESP2, 0x5A))):
            _w32(buf, tss + 4 + 8 * n, esp)
            _w32(buf, tss + 8 + 8 * n, ss)
        if R.paging:
            pt = R.cr3 + 0x1000
            _w32(buf, R.cr3, pt | 0x7)
            for page in TABLE_PAGES:                      # the table area, identity, supervisor
                _w32(buf, pt + 4 * page, (page << 12) | 0x3)
            for i in range(WINDOW // 0x1000):
                _w32(buf, pt + 4 * ((w >> 12) + i), (R.frame + 0x1000 * i) | 0x7)
        f = R.frame
        buf[f + CODE_PAGE:f + CODE_PAGE + 0x1000] = b"\x90" * 0x1000
        return buf

    def _fill_memory(self, st: X86State, raw: bytes) -> None:
        ram = self.mem.ram
        R, sys = st.R, st.sys
        ram[:] = self.base_image(R)
        tss = TABLES[R.tables]["tss"]
        if sys.iomap is not None:
            ram[tss + 0x66:tss + 0x68] = IOMAP_OFFSET.to_bytes(2, "little")
            ram[tss + IOMAP_OFFSET:tss + IOMAP_OFFSET + len(sys.iomap)] = sys.iomap
            ram[tss + IOMAP_OFFSET + len(sys.iomap)] = 0xFF
        else:
            ram[tss + 0x66:tss + 0x68] = b"\xff\xff"      # beyond the limit: no bitmap
        f = R.frame
        ram[f + DATA_HOT:f + DATA_HOT + len(st.data_hot)] = st.data_hot
        ram[f + STACK_HOT:f + STACK_HOT + len(st.stack_hot)] = st.stack_hot
        at = f + CODE_PAGE + st.eip
        ram[at:at + len(raw)] = raw

    # -- CPU --------------------------------------------------------------
    def load(self, st: X86State, raw: bytes) -> CPU:
        mem = self.mem
        self._fill_memory(st, raw)
        mem.code_pages[:] = bytes(len(mem.code_pages))
        self.ports.log = []
        cpu = CPU(mem, self.bus, strict=self.strict)
        R, sys = st.R, st.sys
        t = TABLES[R.tables]
        cpu.set_cr4(sys.cr4)
        cpu.set_cr3(R.cr3)
        cpu.set_cr0(R.cr0)
        cpu.gdtr = (t["gdt"], t["gdt_limit"])
        cpu.idtr = (t["idt"], IDT_LIMIT)
        if sys.ldt_loaded:
            cpu.ldtr, cpu.ldt_base, cpu.ldt_limit = t["ldt_sel"], t["ldt"], LDT_LIMIT
        tss = _seg_descriptor(t["tss"], IOMAP_OFFSET + IOMAP_PORTS // 8, 0x8B, 0)
        cpu.tr, cpu.tr_base, cpu.tr_limit, cpu.tr_attr = t["tss_sel"], t["tss"], D.d_limit(tss), D.d_attr(tss)
        cpu.sysenter_cs, cpu.sysenter_esp, cpu.sysenter_eip = sys.sysenter_cs, ESP0, SYSENTER_TARGET
        cpu.set_eflags(st.eflags)
        cache = _caches(R.seg_base, R.tables)
        cpu.set_segment_cache(CS, CODE_FOR_CPL[st.cpl], *cache[CODE_FOR_CPL[st.cpl] & ~3])
        cpu.set_segment_cache(SS, STACK_FOR_CPL[st.cpl], *cache[STACK_FOR_CPL[st.cpl] & ~3])
        for s, sel in zip((ES, DS, FS, GS), st.segs):
            cpu.set_segment_cache(s, sel, *cache[sel & ~3] if sel & ~3 else (0, 0, 0))
        cpu.set_cpl(st.cpl)
        cpu.regs = list(st.regs)
        cpu.eip = st.eip
        return cpu

    def snapshot(self, cpu: CPU, st: X86State, window: bool = True) -> Snapshot:
        """The machine as the CPU holds it; ``window=False`` leaves out the window's bytes (for resources)."""
        p = st.R.frame
        return Snapshot(
            tuple(cpu.regs), cpu.eip, cpu.get_eflags(), cpu.cpl, tuple(cpu.sel),
            tuple(zip(cpu.base, cpu.limit, cpu.attr)), tuple(cpu.gdtr), tuple(cpu.idtr),
            (cpu.ldtr, cpu.ldt_base, cpu.ldt_limit), (cpu.tr, cpu.tr_base, cpu.tr_limit, cpu.tr_attr),
            (cpu.cr0, cpu.cr2, cpu.cr3, cpu.cr4), (cpu.sysenter_cs, cpu.sysenter_esp, cpu.sysenter_eip),
            bool(cpu.halted), bytes(self.mem.ram[p:p + WINDOW]) if window else b"", tuple(self.ports.log))

    def run(self, st: X86State, raw: bytes, before: bool = True) -> tuple[Snapshot | None, Snapshot, tuple | None, str | None]:
        """Execute ``raw`` once on ``st``: (before, after, trap, stop); ``before`` is None unless asked for.

        ``trap`` is (vector, error code, kind) if the exception hook fired --
        the trap sequence, which the bridge takes before any IDT delivery --
        and ``stop`` the reason if the CPU stopped the machine instead (a
        task switch, an unimplemented case): an execution outside the model.
        """
        cpu = self.load(st, raw)
        before = self.snapshot(cpu, st, window=False) if before else None
        events = []
        # Every event exits instead of being delivered (the trap the bridge takes), but
        # INT n when it is read as a far call through a gate (delivered through the IDT).
        ic = cpu.intercepts
        ic.exception_bitmap, ic.external_interrupt_exiting = (1 << 32) - 1, True
        ic.software_interrupt_exiting = self.software_interrupts_trap
        stop = None
        try:
            ex = cpu.step()
            if isinstance(ex, ExceptionExit):
                events.append((ex.vector, ex.error_code, ex.kind))
        except MachineStop as e:
            stop = f"{e.reason}: {e.detail}" if e.detail else e.reason
        if cpu.stop is not None and stop is None:
            stop = f"{cpu.stop.reason}: {cpu.stop.detail}" if cpu.stop.detail else cpu.stop.reason
        after = self.snapshot(cpu, st)
        return before, after, (events[0] if events else None), stop


def trap_text(trap: tuple | None) -> str | None:
    if trap is None:
        return None
    vector, err, kind = trap
    if kind == "software":
        return f"INT {vector:#x} (software interrupt)"
    name = EXCEPTION_NAMES.get(vector, f"vector {vector}")
    return name if err is None else f"{name}({err:#x})"


__all__ = ["X86State", "Reloc", "Sys", "Snapshot", "Machine", "random_state", "relocate", "trap_text"]
