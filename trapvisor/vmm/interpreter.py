"""Interpreter routines: emulate one guest instruction's effect on the virtual CPU.

Popek and Goldberg's monitor has one interpreter routine v_i per privileged
instruction (:func:`interpret`).  trapvisor derives all of them generically, from the
instruction's own definition: the virtual CPU is a complete IA-32 CPU holding
the guest's view of the machine (virtual CPL 0, the guest's CR3, GDT, IDT,
IF, IOPL), so emulating an instruction means

1. **pull**: copy what the guest changed while it ran directly on the host
   (general registers, EIP, the unprivileged EFLAGS bits, segment registers)
   into the virtual CPU, undoing ring compression;
2. execute that one instruction on the virtual CPU (``CPU.step``), which
   applies exactly the semantics and privilege rules of the real machine at
   the guest's virtual privilege level, including the faults it would raise
   (delivered through the guest's own IDT);
3. **push**: copy the result back to the host CPU, applying ring
   compression, and let the allocator react to what changed (CR3, CR0, the
   GDT).

The same pull/execute/push path reflects exceptions and injects interrupts:
delivery through the guest's IDT and TSS is performed by the virtual CPU.
"""

from __future__ import annotations

from ..machine.cpu.constants import IF, IOPL, VM, EFLAGS_RESERVED_1
from ..machine.cpu.cpu import CpuFault
from .shadow_descriptors import (
    HOST_RING, compress_attr, compress_selector, decompress_attr, decompress_selector, guest_cpl,
    host_segment,
)

# EFLAGS bits the guest controls directly on the host; IF and IOPL are virtual.
DIRECT_FLAGS = 0x3F7FFF & ~(IF | IOPL | VM)


def pull(host, vcpu) -> None:
    """Host CPU state -> virtual CPU (after the guest ran directly).

    A segment register the guest reloaded while running directly (its
    selector differs from what was pushed) gets its hidden part from the
    guest's own descriptor, not from the host's compressed, truncated copy.
    """
    vcpu.regs[:] = host.regs
    vcpu.eip = host.eip
    hf = host.get_eflags()
    vf = vcpu.get_eflags()
    vcpu.set_eflags((hf & DIRECT_FLAGS) | (vf & (IF | IOPL)) | EFLAGS_RESERVED_1)
    vcpu.set_cpl(guest_cpl(host.cpl, vcpu.cpl))
    pushed = getattr(host, "pushed_sel", None)
    for s in range(6):
        if pushed is not None and host.sel[s] == pushed[s]:
            continue
        sel = decompress_selector(host.sel[s])
        if sel & ~3 == 0:
            vcpu.set_segment_cache(s, sel, 0, 0, 0)
            continue
        from ..machine.cpu.descriptors import descriptor_address, d_attr, d_base, d_limit
        addr = descriptor_address(vcpu, sel)
        try:
            d = vcpu.sys_read(addr, 8) if addr is not None else 0
        except CpuFault:
            # The guest unmapped its GDT after the shadow copy was made (a real CPU would
            # have faulted on the load itself): keep what the host loaded from the copy,
            # rather than let the guest's #PF escape from the monitor.
            vcpu.set_segment_cache(s, sel, host.base[s], host.limit[s], decompress_attr(host.attr[s]))
            continue
        vcpu.set_segment_cache(s, sel, d_base(d), d_limit(d), d_attr(d) | 1)


def push(vcpu, host) -> None:
    """Virtual CPU -> host CPU (before the guest runs directly again)."""
    host.regs[:] = vcpu.regs
    host.eip = vcpu.eip
    vf = vcpu.get_eflags()
    # The host keeps IF=1 (the monitor must see its own interrupts) and IOPL=0
    # (every IN/OUT and CLI/STI of the guest kernel traps).
    host.set_eflags((vf & DIRECT_FLAGS) | IF | EFLAGS_RESERVED_1)
    for s in range(6):
        # Limits cut below the monitor window; a segment no limit keeps out of
        # it goes to the host not present (every access traps): host_segment.
        limit, attr = host_segment(vcpu.base[s], vcpu.limit[s], vcpu.attr[s])
        host.set_segment_cache(s, compress_selector(vcpu.sel[s]), vcpu.base[s], limit,
                               compress_attr(attr))
    host.set_cpl(HOST_RING[vcpu.cpl])
    host.pushed_sel = list(host.sel)


class SystemState:
    """The parts of the virtual CPU the allocator watches across an interpreter routine."""

    __slots__ = ("cr0", "cr3", "cr4", "gdtr", "ldtr", "tr")

    def __init__(self, vcpu):
        self.cr0, self.cr3, self.cr4 = vcpu.cr0, vcpu.cr3, vcpu.cr4
        self.gdtr, self.ldtr, self.tr = vcpu.gdtr, vcpu.ldtr, vcpu.tr


def interpret(vcpu):
    """One interpreter routine: execute the instruction at the virtual EIP on the
    virtual CPU, with the guest's privileges, tables and faults.  Returns the
    decoded instruction (None if it could not be fetched) and its mnemonic."""
    try:
        ins = vcpu.translator.decode_one(vcpu.eip)
        mnemonic = _mnemonic(ins)
    except CpuFault:
        ins, mnemonic = None, "?"
    # This instruction comes after any STI / MOV SS it may follow: the one-instruction
    # interrupt shadow ends with it (the virtual CPU only ever steps, and CPU.step
    # leaves the flag to the block loop; stale, it blocked every injection).
    vcpu.inhibit_irq = False
    vcpu.step()
    return ins, mnemonic


def _mnemonic(ins) -> str:
    from ..machine.cpu.translate import disassemble
    text = disassemble(ins)
    return text.split(" ")[0] if text else "?"
