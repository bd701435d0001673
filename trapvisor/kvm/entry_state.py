"""The register state a vCPU starts in, and putting it into KVM.

A vCPU starts from a :class:`CpuEntry`.  A Multiboot or ELF kernel's comes
from the same :class:`~trapvisor.machine.loader.boot_state.EntryState` the
simulated CPU is entered in (:func:`cpu_entry_from`), so both start a kernel
in one state; the Linux loader builds one for the 64-bit entry.  :func:`apply_cpu_entry` writes it with KVM_SET_SREGS
and KVM_SET_REGS; the hidden segment parts come from the loader, which wrote
matching descriptors in guest memory (KVM does not walk the GDT on SET_SREGS).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import ioctls


@dataclass(frozen=True)
class Segment:
    selector: int
    base: int
    limit: int
    type: int
    s: int = 1
    dpl: int = 0
    present: int = 1
    db: int = 0
    l: int = 0          # noqa: E741 - the descriptor bit's name
    g: int = 0
    avl: int = 0

    @classmethod
    def from_attr(cls, selector: int, base: int, limit: int, attr: int) -> "Segment":
        """From descriptor bits 40-55 (access byte, then AVL L D/B G), the loader's format."""
        return cls(selector, base, limit, type=attr & 0xF, s=(attr >> 4) & 1, dpl=(attr >> 5) & 3,
                   present=(attr >> 7) & 1, avl=(attr >> 12) & 1, l=(attr >> 13) & 1,
                   db=(attr >> 14) & 1, g=(attr >> 15) & 1)


@dataclass
class CpuEntry:
    rip: int
    segments: dict            # cs ds es fs gs ss tr ldt -> Segment
    gdt: tuple[int, int]      # (base, limit)
    idt: tuple[int, int] = (0, 0x3FF)
    cr0: int = 0x11
    cr3: int = 0
    cr4: int = 0
    efer: int = 0
    rflags: int = 0x2
    registers: dict = field(default_factory=dict)   # rax.. r15, rsp (64-bit names)
    msrs: dict = field(default_factory=dict)


_REG32_TO_64 = {"eax": "rax", "ebx": "rbx", "ecx": "rcx", "edx": "rdx", "esi": "rsi",
                "edi": "rdi", "esp": "rsp", "ebp": "rbp"}


def cpu_entry_from(entry) -> CpuEntry:
    """An :class:`~trapvisor.machine.loader.boot_state.EntryState` (32-bit protected mode,
    paging off) as KVM's sregs and regs."""
    segs = {"ldt" if name == "ldtr" else name: Segment.from_attr(seg.selector, seg.base, seg.limit, seg.attr)
            for name, seg in entry.segments.items()}
    regs = {_REG32_TO_64[name]: value for name, value in entry.registers.items()}
    return CpuEntry(rip=entry.eip, segments=segs, gdt=entry.gdtr, idt=entry.idtr, cr0=entry.cr0,
                    cr3=entry.cr3, cr4=entry.cr4, rflags=entry.eflags, registers=regs)


def _put_segment(dst: ioctls.kvm_segment, seg: Segment) -> None:
    dst.selector, dst.base, dst.limit = seg.selector, seg.base, seg.limit
    dst.type, dst.s, dst.dpl, dst.present = seg.type, seg.s, seg.dpl, seg.present
    dst.db, dst.l, dst.g, dst.avl, dst.unusable = seg.db, seg.l, seg.g, seg.avl, 0


def apply_cpu_entry(vcpu, entry: CpuEntry) -> None:
    sregs = vcpu.get_sregs()
    for name, seg in entry.segments.items():
        _put_segment(getattr(sregs, name), seg)
    sregs.gdt.base, sregs.gdt.limit = entry.gdt
    sregs.idt.base, sregs.idt.limit = entry.idt
    sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer = entry.cr0, entry.cr3, entry.cr4, entry.efer
    vcpu.set_sregs(sregs)
    regs = ioctls.kvm_regs()
    for name, value in entry.registers.items():
        setattr(regs, name, value)
    regs.rip, regs.rflags = entry.rip, entry.rflags
    vcpu.set_regs(regs)
    vcpu.set_initial_fpu()
    if entry.msrs:
        vcpu.set_msrs(entry.msrs)
