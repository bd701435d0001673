"""ACPI firmware tables for the PC: RSDP, RSDT, FADT, FACS, DSDT and MADT, built from the board.

What an ACPI BIOS leaves in memory so that an operating system finds the
processors and interrupt controllers without MP tables (Linux built without
CONFIG_X86_MPPARSE, as Debian's cloud kernel is, finds its local APIC and
I/O APIC only here).  Rules from the ACPI Specification 6.5:

* 5.2.5 Root System Description Pointer: "RSD PTR ", revision 0 (ACPI 1.0
  form, 20 bytes, as QEMU's PC firmware gives it), on a 16-byte boundary in
  the BIOS read-only area 0xE0000-0xFFFFF where OSPM searches (5.2.5.1);
* 5.2.6 System Description Table Header: 36 bytes, the checksum makes the
  whole table sum to 0 modulo 256;
* 5.2.7 Root System Description Table: 32-bit pointers to the FADT and MADT;
* 5.2.9 Fixed ACPI Description Table, revision 3 (244 bytes): SCI on ISA IRQ
  9, no SMI command port (5.2.9: SMI_CMD zero means the platform is always in
  ACPI mode), PM1a event and control blocks (``devices/acpi_pm.py``; no PM
  timer, which ACPI 5.0A made optional), no C2/C3, IA-PC boot flags: legacy
  devices and an 8042 present, no VGA, no MSI (5.2.9.3, Table 5.11);
* 5.2.10 Firmware ACPI Control Structure: 64 bytes, 64-byte aligned;
* 5.2.11.1 Differentiated System Description Table: a definition block with
  no AML (the PC has no devices to describe in the namespace);
* 5.2.12 Multiple APIC Description Table: the local APIC address, PCAT_COMPAT
  (the 8259A pair is present), one Processor Local APIC structure per CPU
  (5.2.12.2), the I/O APIC (5.2.12.3), an Interrupt Source Override per ISA
  IRQ that is not identity-mapped (5.2.12.5: IRQ 0 to GSI 2; the SCI, level
  and active high, as QEMU gives it) and the local APIC NMI on LINT1 of every
  processor (5.2.12.7).

Everything is computed from a :class:`~trapvisor.machine.bios.Firmware`
description (CPUs' APIC IDs, LAPIC and I/O APIC addresses and IDs, ISA
overrides), the same one the MP tables are written from, so the two never
disagree.  The tables sit in the reserved BIOS area 0xF0000-0xFFFFF.
"""

from __future__ import annotations

import struct

OEM_ID = b"TRAPVS"
OEM_TABLE_ID = b"TRAPVSOR"
OEM_REVISION = 1
CREATOR_ID = b"TRPV"
CREATOR_REVISION = 1

RSDP_SIGNATURE = b"RSD PTR "
HEADER_SIZE = 36
FADT_REVISION = 3
FADT_SIZE = 244
FACS_SIZE = 64
MADT_REVISION = 1

# MADT structure types (5.2.12, Table 5.45)
MADT_LOCAL_APIC = 0
MADT_IO_APIC = 1
MADT_INTERRUPT_OVERRIDE = 2
MADT_LOCAL_APIC_NMI = 4
MADT_PCAT_COMPAT = 1 << 0
LAPIC_ENABLED = 1 << 0
ALL_PROCESSORS = 0xFF

# MPS INTI flags (5.2.12.5, Table 5.50): polarity bits 1:0, trigger mode bits 3:2.
POLARITY_HIGH, POLARITY_LOW = 0b01, 0b11
TRIGGER_EDGE, TRIGGER_LEVEL = 0b01 << 2, 0b11 << 2

# FADT fixed feature flags (5.2.9, Table 5.10) and IA-PC boot architecture flags (Table 5.11)
FADT_WBINVD = 1 << 0
FADT_PROC_C1 = 1 << 2
FADT_PWR_BUTTON = 1 << 4        # set: no fixed-feature power button
FADT_SLP_BUTTON = 1 << 5        # set: no fixed-feature sleep button
FADT_FIX_RTC = 1 << 6           # set: RTC wake status is not a fixed feature
IAPC_LEGACY_DEVICES = 1 << 0
IAPC_8042 = 1 << 1
IAPC_VGA_NOT_PRESENT = 1 << 2
IAPC_MSI_NOT_SUPPORTED = 1 << 3
P_LVL2_LAT_NONE = 101           # > 100: C2 not supported
P_LVL3_LAT_NONE = 1001          # > 1000: C3 not supported
CMOS_CENTURY = 0x32             # devices/cmos_rtc.py keeps the century there
PM1_EVT_LEN = 4
PM1_CNT_LEN = 2


def checksum(data: bytes) -> int:
    """The byte that makes ``data`` plus itself sum to zero modulo 256."""
    return (-sum(data)) & 0xFF


def _with_checksum(table: bytearray, at: int) -> bytes:
    table[at] = 0
    table[at] = checksum(table)
    return bytes(table)


def sdt(signature: bytes, revision: int, body: bytes) -> bytes:
    """A system description table: the 36-byte header of 5.2.6, then ``body``."""
    header = struct.pack("<4sIBB6s8sI4sI", signature, HEADER_SIZE + len(body), revision, 0,
                         OEM_ID, OEM_TABLE_ID, OEM_REVISION, CREATOR_ID, CREATOR_REVISION)
    return _with_checksum(bytearray(header + body), 9)


def rsdp(rsdt_address: int) -> bytes:
    """5.2.5.3: signature, checksum, OEMID, revision 0, RsdtAddress."""
    return _with_checksum(bytearray(struct.pack("<8sB6sBI", RSDP_SIGNATURE, 0, OEM_ID, 0, rsdt_address)), 8)


def rsdt(tables: list[int]) -> bytes:
    return sdt(b"RSDT", 1, b"".join(struct.pack("<I", a) for a in tables))


def facs() -> bytes:
    """5.2.10: no checksum; hardware signature 0, no waking vector, no global lock owner."""
    return struct.pack("<4sIIIIIQB3sI24s", b"FACS", FACS_SIZE, 0, 0, 0, 0, 0, 1, b"", 0, b"")


def dsdt() -> bytes:
    """5.2.11.1: a definition block without AML (revision 2: 64-bit integers)."""
    return sdt(b"DSDT", 2, b"")


def fadt(fw, *, facs_address: int, dsdt_address: int) -> bytes:
    body = bytearray(FADT_SIZE - HEADER_SIZE)

    def put(fmt: str, offset: int, *values) -> None:
        struct.pack_into("<" + fmt, body, offset - HEADER_SIZE, *values)

    put("II", 36, facs_address, dsdt_address)           # FIRMWARE_CTRL, DSDT
    put("H", 46, fw.sci_irq)                            # SCI_INT (SMI_CMD at 48 stays 0)
    put("I", 56, fw.pm_base)                            # PM1a_EVT_BLK
    put("I", 64, fw.pm_base + PM1_EVT_LEN)              # PM1a_CNT_BLK
    put("BB", 88, PM1_EVT_LEN, PM1_CNT_LEN)             # PM1_EVT_LEN, PM1_CNT_LEN
    put("HH", 96, P_LVL2_LAT_NONE, P_LVL3_LAT_NONE)
    put("B", 108, CMOS_CENTURY)
    put("H", 109, IAPC_LEGACY_DEVICES | IAPC_8042 | IAPC_VGA_NOT_PRESENT | IAPC_MSI_NOT_SUPPORTED)
    put("I", 112, FADT_WBINVD | FADT_PROC_C1 | FADT_PWR_BUTTON | FADT_SLP_BUTTON | FADT_FIX_RTC)
    return sdt(b"FACP", FADT_REVISION, bytes(body))


def madt(fw) -> bytes:
    body = [struct.pack("<II", fw.lapic_base, MADT_PCAT_COMPAT)]
    for uid, apic_id in enumerate(fw.apic_ids):
        body.append(struct.pack("<BBBBI", MADT_LOCAL_APIC, 8, uid, apic_id, LAPIC_ENABLED))
    body.append(struct.pack("<BBBBII", MADT_IO_APIC, 12, fw.ioapic_id, 0, fw.ioapic_base, 0))
    for irq, gsi, flags in fw.overrides:
        body.append(struct.pack("<BBBBIH", MADT_INTERRUPT_OVERRIDE, 10, 0, irq, gsi, flags))
    body.append(struct.pack("<BBBHB", MADT_LOCAL_APIC_NMI, 6, ALL_PROCESSORS, 0, 1))
    return sdt(b"APIC", MADT_REVISION, b"".join(body))


def _align(addr: int, n: int) -> int:
    return (addr + n - 1) & ~(n - 1)


def build(fw, base: int) -> dict[str, tuple[int, bytes]]:
    """Every table, laid out from ``base`` (16-byte aligned): name -> (address, bytes)."""
    layout: dict[str, tuple[int, bytes]] = {}
    addr = base

    def place(name: str, data: bytes, align: int = 16) -> int:
        nonlocal addr
        addr = _align(addr, align)
        layout[name] = (addr, data)
        at = addr
        addr += len(data)
        return at

    rsdp_at = addr
    addr += 20
    facs_at = place("FACS", facs(), 64)
    dsdt_at = place("DSDT", dsdt())
    fadt_at = place("FACP", fadt(fw, facs_address=facs_at, dsdt_address=dsdt_at))
    madt_at = place("APIC", madt(fw))
    rsdt_at = place("RSDT", rsdt([fadt_at, madt_at]))
    layout["RSDP"] = (rsdp_at, rsdp(rsdt_at))
    return layout


def install(memory, fw, base: int) -> int:
    """Write the tables into guest memory from ``base``; returns the RSDP's address."""
    tables = build(fw, base)
    for addr, data in tables.values():
        memory.write(addr, data)
    return tables["RSDP"][0]


def end_of(fw, base: int) -> int:
    """The first byte after the tables laid out from ``base``."""
    return max(a + len(d) for a, d in build(fw, base).values())
