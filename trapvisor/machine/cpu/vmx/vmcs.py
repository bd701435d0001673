"""The virtual-machine control structure: field encodings, widths, and the VMCS region.

Field encodings are those of SDM Vol. 3C Appendix B (Tables B-1 to B-14).  An
encoding is a 32-bit value (§24.11.2, Table 24-21): bit 0 the access type
(1: the high 32 bits of a 64-bit field), bits 9:1 the index, bits 11:10 the
type (0 control, 1 VM-exit information (read-only), 2 guest state, 3 host
state), bits 14:13 the width (0 16-bit, 1 64-bit, 2 32-bit, 3 natural).
This CPU is IA-32 only (no IA-32e mode), so natural-width fields are 32 bits
and VMREAD/VMWRITE take 32-bit operands; the high half of a 64-bit field is
reached through its "high" encoding (§24.11.2).

The VMCS region (§24.2) is a 4 KiB-aligned block of physical memory: the
revision identifier in bits 30:0 of its first dword (bit 31: shadow-VMCS
indicator, 0 here), the VMX-abort indicator in the second, then VMCS data in
an implementation-specific format.  Like real processors, this one keeps the
current VMCS's data on the processor (:class:`Vmcs`) and writes it to the
region on VMCLEAR, from which VMPTRLD reads it back (§24.11.1, §24.11.3).
Our format: field number i of :data:`FIELDS` as 8 bytes at offset
``DATA_OFFSET + 8 * i``, and the launch state as the dword at ``LAUNCH_OFFSET``.
"""

from __future__ import annotations

W16, W64, W32, WNAT = 0, 1, 2, 3
WIDTH_BITS = {W16: 16, W64: 64, W32: 32, WNAT: 32}
T_CONTROL, T_EXIT_INFO, T_GUEST, T_HOST = 0, 1, 2, 3

# (SDM name, encoding): Appendix B.  Only the fields of an IA-32 processor's
# features this CPU implements; VMREAD/VMWRITE of any other encoding fail with
# error 12 (unsupported VMCS component, §30.4 VMREAD).
FIELD_LIST = (
    # B.1.1 16-bit control fields
    ("VIRTUAL_PROCESSOR_ID", 0x0000),
    # B.1.2 16-bit guest-state fields
    ("GUEST_ES_SELECTOR", 0x0800), ("GUEST_CS_SELECTOR", 0x0802), ("GUEST_SS_SELECTOR", 0x0804),
    ("GUEST_DS_SELECTOR", 0x0806), ("GUEST_FS_SELECTOR", 0x0808), ("GUEST_GS_SELECTOR", 0x080A),
    ("GUEST_LDTR_SELECTOR", 0x080C), ("GUEST_TR_SELECTOR", 0x080E),
    # B.1.3 16-bit host-state fields
    ("HOST_ES_SELECTOR", 0x0C00), ("HOST_CS_SELECTOR", 0x0C02), ("HOST_SS_SELECTOR", 0x0C04),
    ("HOST_DS_SELECTOR", 0x0C06), ("HOST_FS_SELECTOR", 0x0C08), ("HOST_GS_SELECTOR", 0x0C0A),
    ("HOST_TR_SELECTOR", 0x0C0C),
    # B.2.1 64-bit control fields
    ("IO_BITMAP_A", 0x2000), ("IO_BITMAP_B", 0x2002), ("MSR_BITMAP", 0x2004),
    ("VM_EXIT_MSR_STORE_ADDR", 0x2006), ("VM_EXIT_MSR_LOAD_ADDR", 0x2008),
    ("VM_ENTRY_MSR_LOAD_ADDR", 0x200A), ("EXECUTIVE_VMCS_POINTER", 0x200C),
    ("TSC_OFFSET", 0x2010), ("VIRTUAL_APIC_PAGE_ADDR", 0x2012), ("EPT_POINTER", 0x201A),
    # B.2.2 64-bit read-only data fields
    ("GUEST_PHYSICAL_ADDRESS", 0x2400),
    # B.2.3 64-bit guest-state fields
    ("VMCS_LINK_POINTER", 0x2800), ("GUEST_IA32_DEBUGCTL", 0x2802),
    # B.3.1 32-bit control fields
    ("PIN_BASED_VM_EXEC_CONTROL", 0x4000), ("CPU_BASED_VM_EXEC_CONTROL", 0x4002),
    ("EXCEPTION_BITMAP", 0x4004), ("PAGE_FAULT_ERROR_CODE_MASK", 0x4006),
    ("PAGE_FAULT_ERROR_CODE_MATCH", 0x4008), ("CR3_TARGET_COUNT", 0x400A),
    ("VM_EXIT_CONTROLS", 0x400C), ("VM_EXIT_MSR_STORE_COUNT", 0x400E),
    ("VM_EXIT_MSR_LOAD_COUNT", 0x4010), ("VM_ENTRY_CONTROLS", 0x4012),
    ("VM_ENTRY_MSR_LOAD_COUNT", 0x4014), ("VM_ENTRY_INTR_INFO_FIELD", 0x4016),
    ("VM_ENTRY_EXCEPTION_ERROR_CODE", 0x4018), ("VM_ENTRY_INSTRUCTION_LEN", 0x401A),
    ("TPR_THRESHOLD", 0x401C), ("SECONDARY_VM_EXEC_CONTROL", 0x401E),
    # B.3.2 32-bit read-only data fields
    ("VM_INSTRUCTION_ERROR", 0x4400), ("VM_EXIT_REASON", 0x4402),
    ("VM_EXIT_INTR_INFO", 0x4404), ("VM_EXIT_INTR_ERROR_CODE", 0x4406),
    ("IDT_VECTORING_INFO_FIELD", 0x4408), ("IDT_VECTORING_ERROR_CODE", 0x440A),
    ("VM_EXIT_INSTRUCTION_LEN", 0x440C), ("VMX_INSTRUCTION_INFO", 0x440E),
    # B.3.3 32-bit guest-state fields
    ("GUEST_ES_LIMIT", 0x4800), ("GUEST_CS_LIMIT", 0x4802), ("GUEST_SS_LIMIT", 0x4804),
    ("GUEST_DS_LIMIT", 0x4806), ("GUEST_FS_LIMIT", 0x4808), ("GUEST_GS_LIMIT", 0x480A),
    ("GUEST_LDTR_LIMIT", 0x480C), ("GUEST_TR_LIMIT", 0x480E),
    ("GUEST_GDTR_LIMIT", 0x4810), ("GUEST_IDTR_LIMIT", 0x4812),
    ("GUEST_ES_AR_BYTES", 0x4814), ("GUEST_CS_AR_BYTES", 0x4816), ("GUEST_SS_AR_BYTES", 0x4818),
    ("GUEST_DS_AR_BYTES", 0x481A), ("GUEST_FS_AR_BYTES", 0x481C), ("GUEST_GS_AR_BYTES", 0x481E),
    ("GUEST_LDTR_AR_BYTES", 0x4820), ("GUEST_TR_AR_BYTES", 0x4822),
    ("GUEST_INTERRUPTIBILITY_INFO", 0x4824), ("GUEST_ACTIVITY_STATE", 0x4826),
    ("GUEST_SMBASE", 0x4828), ("GUEST_SYSENTER_CS", 0x482A),
    ("VMX_PREEMPTION_TIMER_VALUE", 0x482E),
    # B.3.4 32-bit host-state field
    ("HOST_IA32_SYSENTER_CS", 0x4C00),
    # B.4.1 natural-width control fields
    ("CR0_GUEST_HOST_MASK", 0x6000), ("CR4_GUEST_HOST_MASK", 0x6002),
    ("CR0_READ_SHADOW", 0x6004), ("CR4_READ_SHADOW", 0x6006),
    ("CR3_TARGET_VALUE0", 0x6008), ("CR3_TARGET_VALUE1", 0x600A),
    ("CR3_TARGET_VALUE2", 0x600C), ("CR3_TARGET_VALUE3", 0x600E),
    # B.4.2 natural-width read-only data fields
    ("EXIT_QUALIFICATION", 0x6400), ("IO_RCX", 0x6402), ("IO_RSI", 0x6404), ("IO_RDI", 0x6406),
    ("IO_RIP", 0x6408), ("GUEST_LINEAR_ADDRESS", 0x640A),
    # B.4.3 natural-width guest-state fields
    ("GUEST_CR0", 0x6800), ("GUEST_CR3", 0x6802), ("GUEST_CR4", 0x6804),
    ("GUEST_ES_BASE", 0x6806), ("GUEST_CS_BASE", 0x6808), ("GUEST_SS_BASE", 0x680A),
    ("GUEST_DS_BASE", 0x680C), ("GUEST_FS_BASE", 0x680E), ("GUEST_GS_BASE", 0x6810),
    ("GUEST_LDTR_BASE", 0x6812), ("GUEST_TR_BASE", 0x6814),
    ("GUEST_GDTR_BASE", 0x6816), ("GUEST_IDTR_BASE", 0x6818), ("GUEST_DR7", 0x681A),
    ("GUEST_RSP", 0x681C), ("GUEST_RIP", 0x681E), ("GUEST_RFLAGS", 0x6820),
    ("GUEST_PENDING_DBG_EXCEPTIONS", 0x6822), ("GUEST_SYSENTER_ESP", 0x6824),
    ("GUEST_SYSENTER_EIP", 0x6826),
    # B.4.4 natural-width host-state fields
    ("HOST_CR0", 0x6C00), ("HOST_CR3", 0x6C02), ("HOST_CR4", 0x6C04),
    ("HOST_FS_BASE", 0x6C06), ("HOST_GS_BASE", 0x6C08), ("HOST_TR_BASE", 0x6C0A),
    ("HOST_GDTR_BASE", 0x6C0C), ("HOST_IDTR_BASE", 0x6C0E),
    ("HOST_IA32_SYSENTER_ESP", 0x6C10), ("HOST_IA32_SYSENTER_EIP", 0x6C12),
    ("HOST_RSP", 0x6C14), ("HOST_RIP", 0x6C16),
)

ENCODING = {name: enc for name, enc in FIELD_LIST}
NAME = {enc: name for name, enc in FIELD_LIST}
INDEX = {enc: i for i, (_, enc) in enumerate(FIELD_LIST)}
globals().update(ENCODING)       # the field names as module constants: vmcs.GUEST_RIP


def width(enc: int) -> int:
    """The width code of an encoding (bits 14:13, Table 24-21)."""
    return (enc >> 13) & 3


def field_type(enc: int) -> int:
    return (enc >> 10) & 3


def mask(enc: int) -> int:
    return (1 << WIDTH_BITS[width(enc)]) - 1


def is_read_only(enc: int) -> bool:
    """VM-exit information fields are read-only unless IA32_VMX_MISC bit 29 says
    VMWRITE may write them (§24.11.1); it does not here."""
    return field_type(enc & ~1) == T_EXIT_INFO


def resolve(enc: int):
    """(full encoding, high half?) of a VMREAD/VMWRITE operand, or None if this
    processor has no such component (§30.3 VMREAD: error 12)."""
    if enc >> 32 or enc & 0xFFFF8000:        # bits 31:15 reserved (Table 24-21)
        return None
    if enc & 1:
        full = enc & ~1
        if width(full) != W64 or full not in INDEX:
            return None
        return full, True
    if enc not in INDEX:
        return None
    return enc, False


REVISION_MASK = 0x7FFFFFFF
DATA_OFFSET = 0x10
LAUNCH_OFFSET = 0x08
REGION_SIZE = 0x1000
LAUNCH_CLEAR, LAUNCH_LAUNCHED = 0, 1


class Vmcs:
    """The processor's copy of one VMCS: field values by encoding, and the launch state."""

    __slots__ = ("address", "fields", "launched")

    def __init__(self, address: int):
        self.address = address
        self.fields: dict[int, int] = {}
        self.launched = False

    def get(self, enc: int) -> int:
        return self.fields.get(enc, 0)

    def set(self, enc: int, value: int) -> None:
        self.fields[enc] = value & mask(enc)

    def __getitem__(self, name: str) -> int:
        return self.fields.get(ENCODING[name], 0)

    def __setitem__(self, name: str, value: int) -> None:
        self.set(ENCODING[name], value)

    # -- the region in memory (§24.2) -------------------------------------------
    def store(self, cpu) -> None:
        """Write the data to the region (VMCLEAR, §30.3: "ensures that VMCS data ...
        are written to the VMCS region in memory")."""
        out = bytearray(8 * len(FIELD_LIST))
        for enc, v in self.fields.items():
            i = INDEX[enc]
            out[8 * i:8 * i + 8] = v.to_bytes(8, "little")
        for off in range(0, len(out), 4):
            cpu.phys_write(self.address + DATA_OFFSET + off, 4,
                           int.from_bytes(out[off:off + 4], "little"))
        cpu.phys_write(self.address + LAUNCH_OFFSET, 4, LAUNCH_LAUNCHED if self.launched else LAUNCH_CLEAR)

    @classmethod
    def load(cls, cpu, address: int) -> "Vmcs":
        """Read a VMCS back from its region (VMPTRLD of a VMCS not cached on the processor)."""
        v = cls(address)
        for i, (_, enc) in enumerate(FIELD_LIST):
            lo = cpu.phys_read(address + DATA_OFFSET + 8 * i, 4)
            hi = cpu.phys_read(address + DATA_OFFSET + 8 * i + 4, 4)
            val = (lo | hi << 32) & mask(enc)
            if val:
                v.fields[enc] = val
        v.launched = cpu.phys_read(address + LAUNCH_OFFSET, 4) == LAUNCH_LAUNCHED
        return v

    def dump(self) -> list[tuple[str, int, int]]:
        """(SDM name, encoding, value) of every field, in Appendix B order."""
        return [(name, enc, self.fields.get(enc, 0)) for name, enc in FIELD_LIST]


AREAS = {T_CONTROL: "VM-execution, exit and entry control fields",
         T_EXIT_INFO: "VM-exit information fields (read-only)",
         T_GUEST: "guest-state area", T_HOST: "host-state area"}
WIDTH_NAMES = {W16: "16-bit", W64: "64-bit", W32: "32-bit", WNAT: "natural"}


def format_vmcs(v: Vmcs, *, all_fields: bool = False) -> list[str]:
    """The VMCS field by field, with the SDM's names and encodings, grouped by area
    (§24.3) in Appendix B order; fields that are 0 are left out unless ``all_fields``.
    The exit reason and VM-instruction error are decoded."""
    from .exit import EXIT_REASONS
    from .instructions import ERROR_NAMES
    out = [f"VMCS at {v.address:#010x}, launch state {'launched' if v.launched else 'clear'}"]
    for area in (T_CONTROL, T_EXIT_INFO, T_GUEST, T_HOST):
        rows = [(name, enc, value) for name, enc, value in v.dump()
                if field_type(enc) == area and (value or all_fields)]
        out.append(f"{AREAS[area]}:")
        for name, enc, value in rows:
            digits = {W16: 4, W32: 8, WNAT: 8, W64: 16}[width(enc)]
            note = ""
            if name == "VM_EXIT_REASON":
                basic = value & 0xFFFF
                note = f"  {EXIT_REASONS.get(basic, f'reason {basic}')}" + \
                       ("  (VM-entry failure)" if value >> 31 else "")
            elif name == "VM_INSTRUCTION_ERROR":
                note = f"  {ERROR_NAMES.get(value, '')}"
            out.append(f"  {name:<34} {enc:#06x} {WIDTH_NAMES[width(enc)]:<8} {value:#0{digits + 2}x}{note}")
        if not rows:
            out.append("  (all zero)")
    return out
