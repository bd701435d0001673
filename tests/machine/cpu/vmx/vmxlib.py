"""A small VMX world for the tests: a host CPU in VMX root operation, a VMCS
for a flat protected-mode guest, hand-assembled guest code, and an EPT that
maps guest-physical memory onto host memory.

Layout of the 8 MiB of host memory:
  0x001000  host page directory (4 MiB pages, identity)
  0x002000  VMXON region           0x003000  VMCS region
  0x004000  I/O bitmap A           0x005000  I/O bitmap B
  0x006000  MSR bitmap             0x007000  guest IDT
  0x008000.. EPT tables (PML4, PDPT, PD, PTs)
  0x100000  guest code (guest-physical GUEST_CODE)
  0x400000  guest-physical 0 with EPT (GUEST_BASE)
"""

from __future__ import annotations

import struct

from trapvisor.machine.bus import IoBus
from trapvisor.machine.cpu import CPU, enter_flat_protected_mode
from trapvisor.machine.cpu.vmx import VmxHost
from trapvisor.machine.cpu.vmx import capabilities as C
from trapvisor.machine.memory import PhysicalMemory

HOST_PD, VMXON, VMCS = 0x1000, 0x2000, 0x3000
IO_A, IO_B, MSR_BITMAP, GUEST_IDT = 0x4000, 0x5000, 0x6000, 0x7000
EPT_PML4, EPT_PDPT, EPT_PD, EPT_PT = 0x8000, 0x9000, 0xA000, 0xB000
GUEST_CODE = 0x100000
GUEST_BASE = 0x400000     # host-physical of guest-physical 0 under EPT
MEM = 8 << 20


class Port:
    def __init__(self):
        self.writes = []

    def io_read(self, port, size):
        return 0x5A

    def io_write(self, port, size, value):
        self.writes.append((port, size, value))


def host_cpu(profile="late"):
    mem = PhysicalMemory(MEM)
    bus = IoBus()
    bus.register(0x80, 1, Port())
    cpu = CPU(mem, bus, vmx=profile)
    enter_flat_protected_mode(cpu)
    for i in range(2):           # identity map of 8 MiB with 4 MiB pages
        struct.pack_into("<I", mem.ram, HOST_PD + 4 * i, (i << 22) | 0x83)
    cpu.set_cr4(0x10 | C.CR4_VMXE)          # PSE, VMXE
    cpu.set_cr3(HOST_PD)
    cpu.set_cr0(cpu.cr0 | 0x80000021)       # PG, NE, PE
    cpu.regs[4] = 0x80000
    for region in (VMXON, VMCS):
        struct.pack_into("<I", mem.ram, region, cpu.vmx.profile.revision)
    cpu.set_segment_cache(4 - 2, 0x10, 0, 0xFFFFFFFF, 0xC093)   # SS
    cpu.tr, cpu.tr_base, cpu.tr_limit, cpu.tr_attr = 0x18, 0, 0x67, 0x8B
    return cpu


def ept_identity(cpu, base=GUEST_BASE, size=4 << 20, ad=False):
    """EPT mapping guest-physical [0, size) onto host [base, base + size) with 4 KiB
    pages, read/write/execute, write-back; returns the EPTP."""
    ram = cpu.mem.ram
    struct.pack_into("<Q", ram, EPT_PML4, EPT_PDPT | 7)
    struct.pack_into("<Q", ram, EPT_PDPT, EPT_PD | 7)
    for pd in range(size >> 21):
        pt = EPT_PT + pd * 0x1000
        struct.pack_into("<Q", ram, EPT_PD + 8 * pd, pt | 7)
        for i in range(512):
            struct.pack_into("<Q", ram, pt + 8 * i, (base + (pd << 21) + (i << 12)) | 6 << 3 | 7)
    return EPT_PML4 | 3 << 3 | 6 | (1 << 6 if ad else 0)


def ept_entry_addr(gpa):
    """Host address of the EPT PTE of guest-physical ``gpa`` (ept_identity's layout)."""
    return EPT_PT + (gpa >> 21) * 0x1000 + ((gpa >> 12) & 0x1FF) * 8


def setup_vmcs(cpu, code: bytes, *, ept=False, proc=0, proc2=0, pin=0, rip=None, guest_base=0):
    """VMXON, VMCLEAR, VMPTRLD and a complete VMCS for a flat 32-bit guest at CPL 0
    whose code is ``code`` at guest address GUEST_CODE; returns the VmxHost."""
    h = VmxHost(cpu)
    h.vmxon(VMXON)
    h.vmclear(VMCS)
    h.vmptrld(VMCS)
    p = cpu.vmx.profile
    low = lambda kind: p.allowed(kind)[0]          # noqa: E731
    w = h.vmwrite
    w("PIN_BASED_VM_EXEC_CONTROL", low("pin") | pin)
    if ept:
        proc2 |= C.SEC_ENABLE_EPT
    if proc2:
        proc |= C.CPU_ACTIVATE_SECONDARY
    w("CPU_BASED_VM_EXEC_CONTROL", low("proc") | proc)
    w("SECONDARY_VM_EXEC_CONTROL", proc2)
    w("VM_EXIT_CONTROLS", low("exit"))
    w("VM_ENTRY_CONTROLS", low("entry"))
    if ept:
        eptp = ept_identity(cpu)
        w("EPT_POINTER", eptp)
        w("EPT_POINTER_HIGH" if False else 0x201B, 0)
    cpu.mem.ram[guest_base + GUEST_CODE:guest_base + GUEST_CODE + len(code)] = code
    # Host state: the host CPU's own.
    w("HOST_CR0", cpu.cr0)
    w("HOST_CR3", cpu.cr3)
    w("HOST_CR4", cpu.cr4)
    w("HOST_CS_SELECTOR", 0x08)
    for s in ("SS", "DS", "ES", "FS", "GS"):
        w(f"HOST_{s}_SELECTOR", 0x10)
    w("HOST_TR_SELECTOR", 0x18)
    w("HOST_RSP", 0x80000)
    w("HOST_RIP", 0x0)
    # Guest state: flat protected mode, CPL 0, paging off (EPT) or as the host's.
    w("GUEST_CR0", 0x80000031 if not ept else 0x31 | (0x80000000 if not proc2 & C.SEC_UNRESTRICTED_GUEST else 0))
    w("GUEST_CR3", HOST_PD)
    w("GUEST_CR4", 0x10 | C.CR4_VMXE)
    for s in ("ES", "SS", "DS", "FS", "GS"):
        w(f"GUEST_{s}_SELECTOR", 0x10)
        w(f"GUEST_{s}_LIMIT", 0xFFFFFFFF)
        w(f"GUEST_{s}_AR_BYTES", 0xC093)
    w("GUEST_CS_SELECTOR", 0x08)
    w("GUEST_CS_LIMIT", 0xFFFFFFFF)
    w("GUEST_CS_AR_BYTES", 0xC09B)
    w("GUEST_TR_SELECTOR", 0x18)
    w("GUEST_TR_LIMIT", 0x67)
    w("GUEST_TR_AR_BYTES", 0x8B)
    w("GUEST_LDTR_AR_BYTES", 1 << 16)
    w("GUEST_IDTR_BASE", GUEST_IDT)
    w("GUEST_IDTR_LIMIT", 0x1FF)
    w("GUEST_GDTR_LIMIT", 0xFF)
    w("GUEST_DR7", 0x400)
    w("GUEST_RSP", 0x90000)
    w("GUEST_RIP", GUEST_CODE if rip is None else rip)
    w("GUEST_RFLAGS", 0x2)
    w("VMCS_LINK_POINTER", 0xFFFFFFFF)
    w(0x2801, 0xFFFFFFFF)
    return h


def run_guest(cpu, h, budget=1000, launch=True):
    """Enter the guest and run until a VM exit; returns the VmExit (or the CPU's exit)."""
    failure = h.launch() if launch else h.resume()
    if failure is not None:
        return failure
    return cpu.run(budget)


GDT = 0x0
TSS = 0x7800
HANDLER = 0x110000       # guest address of the interrupt handlers: HLT at HANDLER + 16 * n


def guest_tables(cpu, guest_base=0, vectors=range(0x40)):
    """A GDT (null, code 08, data 10, busy TSS 18) at guest address 0 and an IDT at
    GUEST_IDT whose gate n leads to a HLT at HANDLER + 16 * n."""
    ram = cpu.mem.ram
    gb = guest_base
    struct.pack_into("<4Q", ram, gb + GDT, 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF,
                     0x67 | TSS << 16 | 0x8B << 40)
    for n in vectors:
        off = HANDLER + 16 * n
        struct.pack_into("<Q", ram, gb + GUEST_IDT + 8 * n,
                         (off & 0xFFFF) | 0x08 << 16 | 0x8E00 << 32 | (off >> 16) << 48)
        ram[gb + off] = 0xF4
    # The stack the guest's handlers push onto (ESP 0x90000).
    return HANDLER
