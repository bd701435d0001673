"""The processor state a loader hands over, and the flat GDT it puts in memory.

Every loader here enters the kernel the way Multiboot 0.6.96 section 3.2
("Machine state") prescribes, which is also what QEMU's multiboot option ROM
does (pc-bios/optionrom/multiboot.S): 32-bit protected mode, paging off,
EFLAGS.IF = 0 and VM = 0, A20 on, CS a flat 32-bit execute/read code
segment, DS/ES/FS/GS/SS flat 32-bit read/write data segments.

The GDT is real: it lies in guest memory (by default at 0x500, just past the
BIOS data area) and the selectors refer to it, so a guest that reloads a
segment register (which Multiboot forbids before it has its own GDT) still
gets the same segment.  Its layout is QEMU's multiboot option ROM's:

====  =====================================================
0x00  null
0x08  code, base 0, limit 4 GiB, 32-bit, execute/read  (CS)
0x10  data, base 0, limit 4 GiB, 32-bit, read/write    (DS ES FS GS SS)
0x18  code, base 0, limit 64 KiB, 16-bit, conforming
0x20  data, base 0, limit 64 KiB, 16-bit, read/write
====  =====================================================

The descriptors carry the accessed bit (0x9B/0x93), as the processor sets it
when it loads them; the hidden parts in :class:`SegmentState` match the
descriptors exactly, so a CPU (or KVM_SET_SREGS) can load them without a GDT
walk.  TR and LDTR hold their reset values (SDM Vol. 3A Table 9-1), which
KVM also requires to be "usable" types (busy TSS, LDT).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

from ...errors import UserError
from ..cpu.constants import CS, DS, ES, FS, GS, SS

BOOT_GDT_ADDR = 0x500
BOOT_STACK_TOP = 0x7C00          # below the traditional boot-sector address; ESP is undefined by Multiboot
CODE32_SELECTOR = 0x08
DATA32_SELECTOR = 0x10
CODE16_SELECTOR = 0x18
DATA16_SELECTOR = 0x20

CR0_PE = 0x00000001
CR0_ET = 0x00000010
BOOT_CR0 = CR0_PE | CR0_ET
EFLAGS_RESERVED_1 = 0x00000002

PAGE_SIZE = 0x1000
MiB = 1 << 20


def descriptor(base: int, limit: int, access: int, flags: int) -> bytes:
    """An 8-byte segment descriptor (SDM Vol. 3A Figure 3-8); ``flags`` = G D/B L AVL nibble."""
    return struct.pack("<HHBBBB", limit & 0xFFFF, base & 0xFFFF, (base >> 16) & 0xFF, access,
                       ((flags & 0xF) << 4) | ((limit >> 16) & 0xF), (base >> 24) & 0xFF)


GDT_ENTRIES = (
    bytes(8),
    descriptor(0, 0xFFFFF, 0x9B, 0xC),   # 32-bit code, 4 KiB granular
    descriptor(0, 0xFFFFF, 0x93, 0xC),   # 32-bit data
    descriptor(0, 0x0FFFF, 0x9E, 0x0),   # 16-bit conforming code
    descriptor(0, 0x0FFFF, 0x92, 0x0),   # 16-bit data
)
BOOT_GDT = b"".join(GDT_ENTRIES)
BOOT_GDT_LIMIT = len(BOOT_GDT) - 1


@dataclass(frozen=True)
class SegmentState:
    """A segment register: selector plus the hidden descriptor cache.

    ``limit`` is the effective byte limit (granularity applied); ``attr`` is
    descriptor bits 40-55 (access byte; limit 19:16; AVL, L, D/B, G), the
    format ``CPU.set_segment_cache`` takes.
    """

    selector: int
    base: int
    limit: int
    attr: int

    @property
    def type(self) -> int:
        return self.attr & 0xF

    @property
    def s(self) -> int:
        return (self.attr >> 4) & 1

    @property
    def dpl(self) -> int:
        return (self.attr >> 5) & 3

    @property
    def present(self) -> int:
        return (self.attr >> 7) & 1

    @property
    def avl(self) -> int:
        return (self.attr >> 12) & 1

    @property
    def db(self) -> int:
        return (self.attr >> 14) & 1

    @property
    def g(self) -> int:
        return (self.attr >> 15) & 1


def segment_from_descriptor(selector: int, desc: bytes) -> SegmentState:
    lo, hi = struct.unpack("<II", desc)
    base = ((lo >> 16) & 0xFFFF) | ((hi & 0xFF) << 16) | (hi & 0xFF000000)
    limit = (lo & 0xFFFF) | (hi & 0x000F0000)
    attr = (hi >> 8) & 0xFFFF
    if attr & 0x8000:
        limit = (limit << 12) | 0xFFF
    return SegmentState(selector, base, limit, attr)


FLAT_CODE32 = segment_from_descriptor(CODE32_SELECTOR, GDT_ENTRIES[1])
FLAT_DATA32 = segment_from_descriptor(DATA32_SELECTOR, GDT_ENTRIES[2])
RESET_TR = SegmentState(0, 0, 0xFFFF, 0x008B)     # present, busy 32-bit TSS
RESET_LDTR = SegmentState(0, 0, 0xFFFF, 0x0082)   # present, LDT


@dataclass
class BootState:
    """Where and how a loaded kernel starts.

    ``registers`` holds the eight general registers by lower-case name
    (``eax`` ... ``edi``); ``segments`` holds ``cs ds es fs gs ss tr ldtr``.
    ``loaded`` lists the physical ranges [start, end) the loader wrote the
    kernel to (bss included); ``modules`` lists (start, end, string).
    """

    kind: str                               # "multiboot", "elf" or "raw"
    entry: int
    registers: dict
    segments: dict
    gdt_base: int
    gdt_limit: int = BOOT_GDT_LIMIT
    idt_base: int = 0
    idt_limit: int = 0x3FF
    cr0: int = BOOT_CR0
    cr3: int = 0
    cr4: int = 0
    eflags: int = EFLAGS_RESERVED_1
    a20: bool = True
    info_addr: int | None = None            # the Multiboot information structure
    loaded: list = field(default_factory=list)
    modules: list = field(default_factory=list)
    path: str | None = None

    @property
    def code_selector(self) -> int:
        return self.segments["cs"].selector

    @property
    def data_selector(self) -> int:
        return self.segments["ds"].selector

    @property
    def eip(self) -> int:
        return self.entry

    @property
    def eax(self) -> int:
        return self.registers["eax"]

    @property
    def ebx(self) -> int:
        return self.registers["ebx"]

    @property
    def esp(self) -> int:
        return self.registers["esp"]


# -- memory layout ----------------------------------------------------------------

class Layout:
    """Physical ranges taken so far, and where the next thing can go."""

    def __init__(self, memory_size: int):
        self.memory_size = memory_size
        self.used: list[tuple[int, int]] = []

    @classmethod
    def for_pc(cls, memory_size: int) -> "Layout":
        """A layout that keeps loader data out of the IVT/BDA and the EBDA-to-1 MiB hole."""
        from ..bios import BIOS_AREA_END, EBDA_BASE
        layout = cls(memory_size)
        layout.claim(0, BOOT_GDT_ADDR)
        layout.claim(EBDA_BASE, BIOS_AREA_END)
        return layout

    def claim(self, start: int, end: int) -> None:
        if end > start:
            self.used.append((start, end))

    def overlaps(self, start: int, end: int) -> bool:
        return any(s < end and start < e for s, e in self.used)

    def top(self) -> int:
        return max((e for _, e in self.used), default=0)

    def place(self, size: int, *, prefer: int | None = None, after: int = 0,
              align: int = 8, what: str = "data") -> int:
        """Find room for ``size`` bytes: at ``prefer`` if free, else the first
        ``align``-aligned free address at or above ``after``."""
        if prefer is not None and prefer + size <= self.memory_size \
                and not self.overlaps(prefer, prefer + size):
            self.claim(prefer, prefer + size)
            return prefer
        addr = _align_up(after, align)
        moved = True
        while moved:
            moved = False
            for s, e in self.used:
                if s < addr + size and addr < e:
                    addr = _align_up(e, align)
                    moved = True
        if addr + size > self.memory_size:
            raise UserError(f"{what} ({size} bytes) does not fit in guest memory "
                            f"({self.memory_size // 1024} KiB)")
        self.claim(addr, addr + size)
        return addr


def _align_up(x: int, align: int) -> int:
    return (x + align - 1) // align * align


def page_align(x: int) -> int:
    return _align_up(x, PAGE_SIZE)


# -- helpers shared by the loaders ------------------------------------------------------------

def read_file(path, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except IsADirectoryError:
        raise UserError(f"{what} {path} is a directory, not a file") from None
    except OSError as e:
        raise UserError(f"cannot read {what} {path}: {e.strerror or e}") from None


def check_in_memory(memory, start: int, end: int, what: str) -> None:
    if start < 0 or end > memory.size or end > 1 << 32:
        raise UserError(f"{what} at {start:#x}-{end:#x} lies outside guest memory "
                        f"(0-{memory.size:#x}, {memory.size // MiB} MiB)")


def load_segments(memory, segments, path, layout: Layout) -> list[tuple[int, int]]:
    """Write (paddr, file bytes, memsz) segments, zeroing the bss; returns the ranges."""
    name = os.path.basename(str(path))
    for paddr, data, memsz in segments:
        check_in_memory(memory, paddr, paddr + max(memsz, len(data)), f"{name}: segment")
    ranges = []
    for paddr, data, memsz in segments:
        if data:
            memory.write(paddr, data)
        if memsz > len(data):
            memory.fill(paddr + len(data), memsz - len(data), 0)
        end = paddr + max(memsz, len(data))
        ranges.append((paddr, end))
        layout.claim(paddr, end)
    return ranges


def flat_protected_mode(memory, layout: Layout, *, kind: str, entry: int, eax: int = 0,
                        ebx: int = 0, loaded=(), path=None, info_addr=None, modules=()) -> BootState:
    """Place the boot GDT and build the Multiboot machine state around ``entry``."""
    gdt = layout.place(len(BOOT_GDT), prefer=BOOT_GDT_ADDR, after=BOOT_GDT_ADDR, what="boot GDT")
    memory.write(gdt, BOOT_GDT)
    esp = BOOT_STACK_TOP if memory.size >= BOOT_STACK_TOP else memory.size & ~0xF
    regs = {"eax": eax & 0xFFFFFFFF, "ebx": ebx & 0xFFFFFFFF, "ecx": 0, "edx": 0,
            "esi": 0, "edi": 0, "ebp": 0, "esp": esp}
    segs = {"cs": FLAT_CODE32, "ds": FLAT_DATA32, "es": FLAT_DATA32, "fs": FLAT_DATA32,
            "gs": FLAT_DATA32, "ss": FLAT_DATA32, "tr": RESET_TR, "ldtr": RESET_LDTR}
    return BootState(kind=kind, entry=entry & 0xFFFFFFFF, registers=regs, segments=segs,
                     gdt_base=gdt, info_addr=info_addr, loaded=list(loaded),
                     modules=list(modules), path=str(path) if path is not None else None)


# -- the entry state ----------------------------------------------------------------------

# The general registers in their encoding order (SDM Vol. 2A Table 3-1), the
# order of ``CPU.regs``.
GENERAL_REGISTERS = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")


@dataclass(frozen=True)
class EntryState:
    """The architectural state a loaded kernel is entered in.

    Derived once from a loader's :class:`BootState` by :func:`entry_state`;
    the simulated CPU is put in it by :func:`apply_entry_state`, a KVM vCPU
    by ``kvm/entry_state.py``, so both start a kernel in the same state.
    ``registers`` holds all eight general registers by name, ``segments``
    ``cs ds es fs gs ss tr ldtr``.
    """

    eip: int
    registers: dict
    segments: dict
    gdtr: tuple[int, int]
    idtr: tuple[int, int]
    cr0: int
    cr3: int
    cr4: int
    eflags: int


def entry_state(boot: BootState) -> EntryState:
    """The entry state a loader's result describes."""
    regs = {name: boot.registers.get(name, 0) & 0xFFFFFFFF for name in GENERAL_REGISTERS}
    return EntryState(eip=boot.entry & 0xFFFFFFFF, registers=regs, segments=dict(boot.segments),
                      gdtr=(boot.gdt_base, boot.gdt_limit), idtr=(boot.idt_base, boot.idt_limit),
                      cr0=boot.cr0, cr3=boot.cr3, cr4=boot.cr4, eflags=boot.eflags)


# Descriptor bits 48-51 are the limit's bits 16-19; the simulated CPU keeps the
# attributes without them (``cpu/descriptors.d_attr``).
_CPU_ATTR_MASK = 0xF0FF


def apply_entry_state(cpu, entry: EntryState) -> None:
    """Put the simulated CPU in ``entry``: CR0.PE, the six segment registers, GDTR, IDTR,
    the general registers, EFLAGS and EIP.

    TR and LDTR are left as the simulated CPU resets them; KVM, which checks
    them on entry, takes them from ``entry.segments`` (``kvm/entry_state.py``).
    """
    if entry.cr0 & ~BOOT_CR0 or entry.cr3 or entry.cr4:
        # Setting CR0.PG or CR4 here would bypass the CPU's MOV CR0/CR4 (TLB, paging mode).
        raise ValueError("the simulated CPU is entered with paging off, as Multiboot leaves it")
    cpu.cr0 |= CR0_PE
    for index, name in ((CS, "cs"), (DS, "ds"), (ES, "es"), (FS, "fs"), (GS, "gs"), (SS, "ss")):
        seg = entry.segments[name]
        cpu.set_segment_cache(index, seg.selector, seg.base, seg.limit, seg.attr & _CPU_ATTR_MASK)
    cpu.set_cpl(entry.segments["cs"].selector & 3)
    cpu.gdtr = entry.gdtr
    cpu.idtr = entry.idtr
    for i, name in enumerate(GENERAL_REGISTERS):
        cpu.regs[i] = entry.registers[name]
    cpu.set_eflags(entry.eflags)
    cpu.eip = entry.eip
