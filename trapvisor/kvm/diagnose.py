"""Explaining why a guest stopped under KVM: registers, the instruction at RIP, and why.

When KVM cannot run a guest, the exit alone (KVM_EXIT_INTERNAL_ERROR,
suberror 1) says nothing a person can act on.  Here the bytes at the guest's
RIP are read (from KVM's own copy when it supplies one, else from guest RAM
through KVM_TRANSLATE), decoded with iced-x86 in the CPU's current mode, and
put beside what is known about this host's KVM.
"""

from __future__ import annotations

from dataclasses import dataclass

CR0_PE = 1
CR0_PG = 1 << 31
EFER_LMA = 1 << 10


@dataclass
class GuestInstruction:
    rip: int
    linear: int
    physical: int | None
    bitness: int
    cpl: int
    insn_bytes: bytes
    text: str
    mnemonic: str

    def where(self) -> str:
        return f"{self.rip:#x}" + (f" (physical {self.physical:#x})" if self.physical not in (None, self.linear) else "")


def cpu_bitness(sregs) -> int:
    if not sregs.cr0 & CR0_PE:
        return 16
    if sregs.efer & EFER_LMA and sregs.cs.l:
        return 64
    return 32 if sregs.cs.db else 16


def decode_bytes(data: bytes, bitness: int, ip: int) -> tuple[str, str, int]:
    """(GAS text, mnemonic name, length) of the first instruction in ``data``."""
    from iced_x86 import Decoder, Formatter, FormatterSyntax, Mnemonic
    if not data:
        return "(no bytes readable)", "", 0
    ins = Decoder(bitness, data, ip=ip).decode()
    if ins.is_invalid:
        return f"(undecodable: {data[:8].hex(' ')})", "", 0
    names = {v: k for k, v in vars(Mnemonic).items() if not k.startswith("_")}
    return Formatter(FormatterSyntax.GAS).format(ins), names.get(ins.mnemonic, "").lower(), ins.len


def read_guest(memory, physical: int | None, n: int) -> bytes:
    if physical is None or physical >= memory.size:
        return b""
    return memory.read(physical, min(n, memory.size - physical))


def instruction_at_rip(vcpu, memory, kvm_bytes: bytes = b"") -> GuestInstruction:
    regs, sregs = vcpu.get_regs(), vcpu.get_sregs()
    bitness = cpu_bitness(sregs)
    linear = regs.rip if bitness == 64 else (sregs.cs.base + regs.rip) & 0xFFFF_FFFF
    physical = vcpu.translate(linear) if sregs.cr0 & CR0_PG else linear
    data = kvm_bytes or read_guest(memory, physical, 15)
    text, mnemonic, length = decode_bytes(data, bitness, regs.rip)
    cpl = sregs.cs.selector & 3 if sregs.cr0 & CR0_PE else 0
    return GuestInstruction(regs.rip, linear, physical, bitness, cpl, data[:length or 8], text, mnemonic)


def iret_target_cpl(vcpu, memory, insn: GuestInstruction) -> int | None:
    """For an IRET, the privilege level it returns to (RPL of the CS on the stack)."""
    regs, sregs = vcpu.get_regs(), vcpu.get_sregs()
    width = 8 if insn.bitness == 64 else 4
    sp = regs.rsp if insn.bitness == 64 else (sregs.ss.base + (regs.rsp & 0xFFFF_FFFF)) & 0xFFFF_FFFF
    phys = vcpu.translate(sp + width) if sregs.cr0 & CR0_PG else sp + width
    raw = read_guest(memory, phys, 2)
    return (raw[0] & 3) if len(raw) == 2 else None


def explain_emulation_failure(vcpu, memory, host, kvm_bytes: bytes = b"") -> tuple[str, list[str]]:
    """One line saying which instruction failed where and why, plus detail lines."""
    insn = instruction_at_rip(vcpu, memory, kvm_bytes)
    lines = [f"instruction bytes: {insn.insn_bytes.hex(' ')} ({insn.bitness}-bit code, CPL {insn.cpl})"]
    why = []
    if insn.cpl == 3:
        why.append("the guest was in ring 3, and user mode does not work on this host's KVM")
    if insn.mnemonic.startswith("iret"):
        target = iret_target_cpl(vcpu, memory, insn)
        if target == 3 and insn.cpl == 0:
            why.append("it is an IRET from ring 0 to ring 3, which this host's KVM cannot emulate")
    if not host.hardware_assisted:
        why.append(f"this host's KVM is {host.kind}, not hardware-assisted: every guest instruction goes "
                   "through KVM's instruction emulator, which cannot run this one")
    else:
        why.append("KVM's instruction emulator (used for MMIO and some real-mode code) cannot run it")
    line = (f"KVM could not run `{insn.text}` at guest address {insn.where()}: " + "; ".join(why))
    return line, lines


def register_dump(vcpu) -> list[str]:
    """The vCPU's registers, as a guest-fault report shows them."""
    r, s = vcpu.get_regs(), vcpu.get_sregs()
    out = [
        f"RAX={r.rax:016x} RBX={r.rbx:016x} RCX={r.rcx:016x} RDX={r.rdx:016x}",
        f"RSI={r.rsi:016x} RDI={r.rdi:016x} RBP={r.rbp:016x} RSP={r.rsp:016x}",
        f"R8 ={r.r8:016x} R9 ={r.r9:016x} R10={r.r10:016x} R11={r.r11:016x}",
        f"R12={r.r12:016x} R13={r.r13:016x} R14={r.r14:016x} R15={r.r15:016x}",
        f"RIP={r.rip:016x} RFLAGS={r.rflags:08x}",
    ]
    for name in ("cs", "ss", "ds", "es", "fs", "gs", "tr", "ldt"):
        seg = getattr(s, name)
        out.append(f"{name.upper():3s} sel={seg.selector:04x} base={seg.base:016x} limit={seg.limit:08x} "
                   f"type={seg.type:x} dpl={seg.dpl} p={seg.present} db={seg.db} l={seg.l} g={seg.g}")
    out.append(f"GDT base={s.gdt.base:016x} limit={s.gdt.limit:04x}  IDT base={s.idt.base:016x} limit={s.idt.limit:04x}")
    out.append(f"CR0={s.cr0:08x} CR2={s.cr2:016x} CR3={s.cr3:016x} CR4={s.cr4:08x} EFER={s.efer:x}")
    return out
