"""Processor state to and from the VMCS's guest-state and host-state areas
(SDM Vol. 3C §24.4, §24.5), in the formats the SDM gives them.

Segment access rights (§24.4.1, Table 24-2): bits 7:0 type, S, DPL, P as in
the descriptor; 12 AVL; 13 L; 14 D/B; 15 G; 16 "segment unusable".  The CPU
keeps descriptor bits 55:40 (``cpu.attr``), whose bits 11:8 are the limit's
19:16; the VMCS has those bits reserved (0).  A segment register loaded with
a null selector is unusable (§24.4.1).
"""

from __future__ import annotations

from ..constants import CS, EFLAGS_RESERVED_1, SS, VM

SEGMENTS = ("ES", "CS", "SS", "DS", "FS", "GS")     # the CPU's order: ES=0, CS=1, SS=2, ...
UNUSABLE = 1 << 16


def ar_from_attr(attr: int, sel: int, s: int, vm86: bool) -> int:
    if vm86:
        return 0xF3
    if not attr & 0x80 or (sel & ~3 == 0 and s not in (CS,)):
        return UNUSABLE | (attr & 0xF0FF)
    return attr & 0xF0FF


def attr_from_ar(ar: int, limit: int) -> int:
    if ar & UNUSABLE:
        return 0
    g = ar & 0x8000
    hi = ((limit >> 12 if g else limit) >> 16) & 0xF
    return (ar & 0xF0FF) | hi << 8


def save_guest(cpu, v) -> None:
    """The guest-state area from the processor (VM exit, §27.3)."""
    vm86 = bool(cpu.eflags_rest & VM)
    for s, name in enumerate(SEGMENTS):
        v[f"GUEST_{name}_SELECTOR"] = cpu.sel[s]
        v[f"GUEST_{name}_BASE"] = cpu.base[s]
        v[f"GUEST_{name}_LIMIT"] = cpu.limit[s]
        v[f"GUEST_{name}_AR_BYTES"] = ar_from_attr(cpu.attr[s], cpu.sel[s], s, vm86)
    v["GUEST_LDTR_SELECTOR"] = cpu.ldtr
    v["GUEST_LDTR_BASE"] = cpu.ldt_base
    v["GUEST_LDTR_LIMIT"] = cpu.ldt_limit
    v["GUEST_LDTR_AR_BYTES"] = 0x82 if cpu.ldtr & ~3 else UNUSABLE
    v["GUEST_TR_SELECTOR"] = cpu.tr
    v["GUEST_TR_BASE"] = cpu.tr_base
    v["GUEST_TR_LIMIT"] = cpu.tr_limit
    v["GUEST_TR_AR_BYTES"] = (cpu.tr_attr & 0xF0FF) | 0x80 if cpu.tr_attr else 0x8B
    v["GUEST_GDTR_BASE"], v["GUEST_GDTR_LIMIT"] = cpu.gdtr
    v["GUEST_IDTR_BASE"], v["GUEST_IDTR_LIMIT"] = cpu.idtr
    v["GUEST_CR0"] = cpu.cr0
    v["GUEST_CR3"] = cpu.cr3
    v["GUEST_CR4"] = cpu.cr4
    v["GUEST_DR7"] = cpu.dr[7]
    v["GUEST_RSP"] = cpu.regs[4]
    v["GUEST_RIP"] = cpu.eip
    v["GUEST_RFLAGS"] = cpu.get_eflags()
    v["GUEST_SYSENTER_CS"] = cpu.sysenter_cs
    v["GUEST_SYSENTER_ESP"] = cpu.sysenter_esp
    v["GUEST_SYSENTER_EIP"] = cpu.sysenter_eip
    # Interruptibility (Table 24-3): bit 0 blocking by STI, bit 1 blocking by MOV SS.
    intr = 0
    if cpu.inhibit_irq:
        intr = 2 if cpu.ss_shadow else 1
    v["GUEST_INTERRUPTIBILITY_INFO"] = intr
    v["GUEST_ACTIVITY_STATE"] = 1 if cpu.halted else 0


def load_guest(cpu, v) -> None:
    """The processor from the guest-state area (VM entry, §26.3.2)."""
    cpu.set_eflags(v["GUEST_RFLAGS"] | EFLAGS_RESERVED_1)
    for s, name in enumerate(SEGMENTS):
        limit = v[f"GUEST_{name}_LIMIT"]
        cpu.set_segment_cache(s, v[f"GUEST_{name}_SELECTOR"], v[f"GUEST_{name}_BASE"], limit,
                              attr_from_ar(v[f"GUEST_{name}_AR_BYTES"], limit))
    cpu.ldtr = v["GUEST_LDTR_SELECTOR"]
    cpu.ldt_base, cpu.ldt_limit = v["GUEST_LDTR_BASE"], v["GUEST_LDTR_LIMIT"]
    cpu.tr = v["GUEST_TR_SELECTOR"]
    cpu.tr_base, cpu.tr_limit = v["GUEST_TR_BASE"], v["GUEST_TR_LIMIT"]
    cpu.tr_attr = attr_from_ar(v["GUEST_TR_AR_BYTES"], cpu.tr_limit)
    cpu.gdtr = (v["GUEST_GDTR_BASE"], v["GUEST_GDTR_LIMIT"])
    cpu.idtr = (v["GUEST_IDTR_BASE"], v["GUEST_IDTR_LIMIT"])
    load_control_registers(cpu, v["GUEST_CR0"], v["GUEST_CR3"], v["GUEST_CR4"])
    cpu.dr[7] = v["GUEST_DR7"] | 0x400
    from ..ops_sysregs import debug_update
    debug_update(cpu)
    cpu.regs[4] = v["GUEST_RSP"]
    cpu.eip = v["GUEST_RIP"]
    cpu.sysenter_cs = v["GUEST_SYSENTER_CS"]
    cpu.sysenter_esp = v["GUEST_SYSENTER_ESP"]
    cpu.sysenter_eip = v["GUEST_SYSENTER_EIP"]
    intr = v["GUEST_INTERRUPTIBILITY_INFO"]
    cpu.inhibit_irq = bool(intr & 3)
    cpu.ss_shadow = bool(intr & 2)
    cpu.halted = v["GUEST_ACTIVITY_STATE"] == 1
    # CPL is SS.DPL (§26.3.2.2 ... the CPL is loaded from SS.DPL); 3 in virtual-8086 mode.
    cpu.set_cpl(3 if cpu.eflags_rest & VM else (cpu.attr[SS] >> 5) & 3)


def load_control_registers(cpu, cr0: int, cr3: int, cr4: int) -> None:
    """CR0, CR3, CR4 as VM entry and exit load them: no MOV-to-CR checks, and
    no TLB flush (the TLB is switched by tag, ``Vmx.switch_tlb``)."""
    from ..constants import CR0_ET, CR0_PG
    cpu.cr0 = cr0 | CR0_ET
    cpu.cr3 = cr3 & 0xFFFFFFFF
    cpu.cr4 = cr4
    cpu.paging = bool(cpu.cr0 & CR0_PG) or cpu.ept is not None
    cpu.update_ac()


def load_host(cpu, v) -> None:
    """The processor from the host-state area (VM exit, §27.5)."""
    load_control_registers(cpu, v["HOST_CR0"], v["HOST_CR3"], v["HOST_CR4"])
    cpu.dr[7] = 0x400
    from ..ops_sysregs import debug_update
    debug_update(cpu)
    cpu.sysenter_cs = v["HOST_IA32_SYSENTER_CS"]
    cpu.sysenter_esp = v["HOST_IA32_SYSENTER_ESP"]
    cpu.sysenter_eip = v["HOST_IA32_SYSENTER_EIP"]
    cpu.regs[4] = v["HOST_RSP"]
    cpu.eip = v["HOST_RIP"]
    cpu.set_eflags(EFLAGS_RESERVED_1)
    # §27.5.2: CS base 0, limit 4 GiB, execute/read accessed, DPL 0, 32-bit, G; the data
    # segments base 0 (FS, GS from their fields), read/write accessed, or unusable if null.
    for s, name in enumerate(SEGMENTS):
        sel = v[f"HOST_{name}_SELECTOR"]
        base = v[f"HOST_{name}_BASE"] if name in ("FS", "GS") else 0
        if s == CS:
            cpu.set_segment_cache(s, sel, 0, 0xFFFFFFFF, 0xCF9B)
        elif sel & ~3 == 0:
            cpu.set_segment_cache(s, sel, 0, 0, 0)
        else:
            cpu.set_segment_cache(s, sel, base, 0xFFFFFFFF, 0xCF93)
    cpu.tr = v["HOST_TR_SELECTOR"]
    cpu.tr_base, cpu.tr_limit, cpu.tr_attr = v["HOST_TR_BASE"], 0x67, 0x8B
    cpu.gdtr = (v["HOST_GDTR_BASE"], 0xFFFF)
    cpu.idtr = (v["HOST_IDTR_BASE"], 0xFFFF)
    cpu.ldtr, cpu.ldt_base, cpu.ldt_limit = 0, 0, 0
    cpu.inhibit_irq = cpu.ss_shadow = cpu.halted = False
    cpu.set_cpl(0)
