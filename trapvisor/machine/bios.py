"""What a PC BIOS leaves behind for an operating system it boots.

trapvisor runs no BIOS code: kernels are loaded directly (``loader/``), as
``qemu -kernel`` does.  The state a BIOS would have left, and that kernels
look for, is put in place here:

* the real-mode interrupt vector table (0x0-0x3FF): every vector points to
  F000:FF53, where an IRET stands, the dummy handler's address in the IBM
  PC/AT BIOS that SeaBIOS keeps and fills the table with (SeaBIOS then points
  some vectors at real services; trapvisor has none, so all stay dummy);
* the BIOS data area (IBM PC/AT Technical Reference, "BIOS Data Area"):
  0x400 COM1-COM4 base ports, 0x40E the EBDA segment, 0x410 equipment word,
  0x413 base memory size in KiB, 0x475 number of hard disks;
* a 1 KiB extended BIOS data area at 0x9FC00 (its first byte is its size in
  KiB), so base memory is 639 KiB as with SeaBIOS;
* the Intel MultiProcessor Specification 1.4 tables (chapter 4): an MP
  floating pointer structure ("_MP_", 16 bytes, 16-byte aligned, in the BIOS
  ROM area 0xF0000-0xFFFFF where section 4 says an OS searches) and an MP
  configuration table ("PCMP") with one processor entry (the BSP, local APIC
  ID 0), one bus entry (ISA), one I/O APIC entry (ID 1 at 0xFEC00000),
  I/O interrupt entries for the ISA IRQs and the two local interrupt entries
  (ExtINT on LINT0, NMI on LINT1 of every local APIC);
* ACPI tables (``acpi.py``: RSDP, RSDT, FADT, FACS, DSDT, MADT) after the MP
  tables in the same reserved area, from the same description;
* the E820 memory map that INT 15h/E820 would return (``e820_map``);
* the device state a BIOS programs (``program_devices``): 8259A vectors
  0x08/0x70, 8254 counter 0 in mode 3 with the maximum count (18.2 Hz).

The ISA IRQ entries follow SeaBIOS's MP table under QEMU: IRQ n goes to I/O
APIC pin n, except IRQ 0, which goes to pin 2 (the 8254 is wired there on
every chipset with an I/O APIC; ``devices/ioapic.py`` wires it so), and IRQ 2
(the 8259A cascade, which no device raises) has no entry.  All use the ISA
bus defaults (flags 0: polarity and trigger mode conform to the bus, i.e.
active high, edge).

What the tables describe is one :class:`Firmware` value (the board's CPUs by
APIC ID, the LAPIC and I/O APIC, the ISA interrupt overrides, the SCI), so the
MP table and the ACPI MADT say the same thing; ``board.build_board`` makes it
from the number of CPUs.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import UserError
from . import acpi, cpuid_model
from .devices.acpi_pm import PM_BASE
from .devices.ioapic import IOAPIC_BASE, IOAPIC_VERSION, isa_irq_to_pin
from .devices.lapic import LAPIC_BASE, APIC_VERSION_VALUE
from .devices.uart16550 import COM1_BASE

# -- layout -------------------------------------------------------------------
IVT_BASE = 0x0
IVT_ENTRIES = 256
DUMMY_HANDLER_SEGMENT = 0xF000
DUMMY_HANDLER_OFFSET = 0xFF53
DUMMY_HANDLER_ADDR = (DUMMY_HANDLER_SEGMENT << 4) + DUMMY_HANDLER_OFFSET   # 0xFFF53
IRET_OPCODE = 0xCF

BDA_BASE = 0x400
BDA_COM_PORTS = 0x400
BDA_EBDA_SEGMENT = 0x40E
BDA_EQUIPMENT = 0x410
BDA_BASE_MEMORY_KIB = 0x413
BDA_HARD_DISKS = 0x475

EBDA_BASE = 0x9FC00
EBDA_SIZE = 0x400
BASE_MEMORY_KIB = EBDA_BASE // 1024          # 639

BIOS_AREA_BASE = 0xF0000
BIOS_AREA_END = 0x100000
MP_FLOATING_POINTER_ADDR = 0xF0000
MP_CONFIG_TABLE_ADDR = 0xF0010

ACPI_TABLES_ADDR = 0xF2000                   # RSDP first (16-byte aligned, 0xE0000-0xFFFFF: ACPI 5.2.5.1)

HIGH_BIOS_BASE = 0xFFFC0000                  # the BIOS ROM's alias below 4 GiB (QEMU reports it)
HIGH_BIOS_SIZE = 0x40000
# Pages the hypervisor keeps for itself, inside that reserved range so that no OS uses them:
# KVM's identity-map page (KVM_SET_IDENTITY_MAP_ADDR) and three TSS pages (KVM_SET_TSS_ADDR)
# at its bottom, far from the reset vector at its top.  trapvisor maps no ROM there.  (QEMU
# puts its own at 0xFEFFC000 and adds an E820 entry for them; here the firmware's map, the
# same for the simulated PC and KVM, already reserves them.)  kvm/vm.py takes its addresses
# from here.
HYPERVISOR_PAGES_BASE = HIGH_BIOS_BASE
HYPERVISOR_PAGES_SIZE = 0x4000

# Equipment word bits (BDA 0x410)
EQUIP_NUM_SERIAL_SHIFT = 9
EQUIP_VIDEO_80X25_COLOR = 0x0020

# E820 types (ACPI "Address Range Types")
E820_RAM = 1
E820_RESERVED = 2

# -- MP specification 1.4 ---------------------------------------------------------
MP_SPEC_REV = 4                              # version 1.4
MP_FP_SIGNATURE = b"_MP_"
MP_CT_SIGNATURE = b"PCMP"
MP_OEM_ID = b"TRAPVSR "
MP_PRODUCT_ID = b"SIMULATED PC"

MP_ENTRY_PROCESSOR = 0
MP_ENTRY_BUS = 1
MP_ENTRY_IOAPIC = 2
MP_ENTRY_IO_INTERRUPT = 3
MP_ENTRY_LOCAL_INTERRUPT = 4

MP_CPU_ENABLED = 0x01
MP_CPU_BSP = 0x02
MP_IOAPIC_ENABLED = 0x01

MP_INT_INT = 0
MP_INT_NMI = 1
MP_INT_SMI = 2
MP_INT_EXTINT = 3

MP_ALL_LOCAL_APICS = 0xFF

BSP_APIC_ID = 0
IOAPIC_ID = 1
ISA_BUS_ID = 0

# The processor entry repeats what the CPU model's CPUID leaf 1 reports (cpuid_model.PC:
# family 6, model 3, stepping 3; EDX features); OSes use the APIC entries.
CPU_SIGNATURE = cpuid_model.PC.signature()
CPU_FEATURES = cpuid_model.leaves(cpuid_model.PC)[(1, 0)][cpuid_model.EDX]

SCI_IRQ = 9                                  # ISA IRQ of the ACPI SCI, as on QEMU's PC
# MPS INTI flags for the SCI: active high, level triggered (as QEMU's MADT gives it)
SCI_FLAGS = acpi.POLARITY_HIGH | acpi.TRIGGER_LEVEL


@dataclass(frozen=True)
class Firmware:
    """What the firmware tables describe: the board's processors and interrupt wiring."""
    apic_ids: tuple = (BSP_APIC_ID,)          # the BSP first
    lapic_base: int = LAPIC_BASE
    ioapic_id: int = IOAPIC_ID
    ioapic_base: int = IOAPIC_BASE
    sci_irq: int = SCI_IRQ
    pm_base: int = PM_BASE

    @classmethod
    def for_cpus(cls, n: int = 1, topology=None) -> "Firmware":
        topo = topology or cpuid_model.Topology.for_cpus(n)
        return cls(apic_ids=tuple(topo.apic_ids()))

    @property
    def overrides(self) -> list[tuple[int, int, int]]:
        """ACPI interrupt source overrides (ISA IRQ, GSI, MPS INTI flags): every ISA IRQ whose
        I/O APIC input is not its own number (IRQ 0 -> 2), and the SCI."""
        out = [(irq, isa_irq_to_pin(irq), 0) for irq in range(16) if isa_irq_to_pin(irq) != irq]
        out.append((self.sci_irq, self.sci_irq, SCI_FLAGS))
        return out


def _checksum(data: bytes) -> int:
    """The byte that makes ``data`` plus itself sum to zero modulo 256."""
    return (-sum(data)) & 0xFF


def mp_config_table(fw: Firmware = Firmware(), *, table_addr: int = MP_CONFIG_TABLE_ADDR) -> bytes:
    """The MP configuration table (MP spec 1.4 section 4.2 and Table 4-3)."""
    entries = []
    # Processor entries (Table 4-4): type, APIC ID, APIC version, flags, signature, features,
    # 8 reserved.  The first is the bootstrap processor.
    for i, apic_id in enumerate(fw.apic_ids):
        entries.append(struct.pack("<BBBBII8x", MP_ENTRY_PROCESSOR, apic_id, APIC_VERSION_VALUE & 0xFF,
                                   MP_CPU_ENABLED | (MP_CPU_BSP if i == 0 else 0),
                                   CPU_SIGNATURE, CPU_FEATURES))
    # Bus entry (Table 4-7): type, bus ID, 6-byte type string.
    entries.append(struct.pack("<BB6s", MP_ENTRY_BUS, ISA_BUS_ID, b"ISA   "))
    # I/O APIC entry (Table 4-8): type, ID, version, flags, address.
    entries.append(struct.pack("<BBBBI", MP_ENTRY_IOAPIC, fw.ioapic_id, IOAPIC_VERSION,
                               MP_IOAPIC_ENABLED, fw.ioapic_base))
    # I/O interrupt assignment entries (Table 4-10): type, interrupt type, flags (u16),
    # source bus, source bus IRQ, destination I/O APIC ID, destination INTIN#.
    for irq in range(16):
        if irq == 2:
            continue
        entries.append(struct.pack("<BBHBBBB", MP_ENTRY_IO_INTERRUPT, MP_INT_INT, 0,
                                   ISA_BUS_ID, irq, fw.ioapic_id, isa_irq_to_pin(irq)))
    # Local interrupt assignment entries (Table 4-12): ExtINT on LINT0, NMI on LINT1.
    entries.append(struct.pack("<BBHBBBB", MP_ENTRY_LOCAL_INTERRUPT, MP_INT_EXTINT, 0,
                               ISA_BUS_ID, 0, MP_ALL_LOCAL_APICS, 0))
    entries.append(struct.pack("<BBHBBBB", MP_ENTRY_LOCAL_INTERRUPT, MP_INT_NMI, 0,
                               ISA_BUS_ID, 0, MP_ALL_LOCAL_APICS, 1))
    body = b"".join(entries)
    length = 44 + len(body)
    header = struct.pack("<4sHBB8s12sIHHIHBx", MP_CT_SIGNATURE, length, MP_SPEC_REV, 0,
                         MP_OEM_ID, MP_PRODUCT_ID, 0, 0, len(entries), fw.lapic_base, 0, 0)
    table = bytearray(header + body)
    table[7] = _checksum(table)
    return bytes(table)


def mp_floating_pointer(table_addr: int = MP_CONFIG_TABLE_ADDR) -> bytes:
    """The MP floating pointer structure (MP spec 1.4 section 4.1, Table 4-1)."""
    # signature, physical address pointer, length in 16-byte units, spec rev,
    # checksum, feature bytes 1-5.  Feature byte 1 = 0: a configuration table
    # is present; feature byte 2 bit 7 (IMCRP) = 0: virtual wire mode, no IMCR.
    fp = bytearray(struct.pack("<4sIBBBB4x", MP_FP_SIGNATURE, table_addr, 1, MP_SPEC_REV, 0, 0))
    fp[10] = _checksum(fp)
    return bytes(fp)


def e820_map(memory_size: int) -> list[tuple[int, int, int]]:
    """The memory map INT 15h/E820 reports for ``memory_size`` bytes of RAM.

    As SeaBIOS reports it under QEMU: conventional memory up to the EBDA,
    the EBDA reserved, the BIOS ROM area 0xF0000-0xFFFFF reserved, extended
    memory from 1 MiB to the top of RAM, and the ROM's alias below 4 GiB
    reserved (the hypervisor's pages are there: ``HYPERVISOR_PAGES_BASE``).
    Entries are (base, length, type), type 1 = RAM, 2 = reserved.
    """
    entries = [(0, min(memory_size, EBDA_BASE), E820_RAM)]
    if memory_size > EBDA_BASE:
        entries.append((EBDA_BASE, EBDA_SIZE, E820_RESERVED))
    entries.append((BIOS_AREA_BASE, BIOS_AREA_END - BIOS_AREA_BASE, E820_RESERVED))
    if memory_size > BIOS_AREA_END:
        entries.append((BIOS_AREA_END, memory_size - BIOS_AREA_END, E820_RAM))
    entries.append((HIGH_BIOS_BASE, HIGH_BIOS_SIZE, E820_RESERVED))
    return entries


def install_tables(memory, *, hard_disks: int = 0, firmware: Firmware = Firmware()) -> int:
    """Write the IVT, the BIOS data area, the EBDA, the MP tables and the ACPI tables into
    guest memory; returns the address of the ACPI RSDP."""
    if memory.size < BIOS_AREA_END:
        raise UserError(f"the PC needs at least 1 MiB of RAM for its BIOS area "
                        f"(memory is {memory.size // 1024} KiB)")
    # Real-mode IVT: all vectors to the dummy IRET handler
    memory.write(IVT_BASE, struct.pack("<HH", DUMMY_HANDLER_OFFSET, DUMMY_HANDLER_SEGMENT) * IVT_ENTRIES)
    memory.write(DUMMY_HANDLER_ADDR, bytes([IRET_OPCODE]))
    # BIOS data area
    memory.write(BDA_COM_PORTS, struct.pack("<4H", COM1_BASE, 0, 0, 0))
    memory.write_u16(BDA_EBDA_SEGMENT, EBDA_BASE >> 4)
    memory.write_u16(BDA_EQUIPMENT, (1 << EQUIP_NUM_SERIAL_SHIFT) | EQUIP_VIDEO_80X25_COLOR)
    memory.write_u16(BDA_BASE_MEMORY_KIB, BASE_MEMORY_KIB)
    memory.write(BDA_HARD_DISKS, bytes([hard_disks & 0xFF]))
    # EBDA: size in KiB in its first byte, the rest zero
    memory.write(EBDA_BASE, bytes([EBDA_SIZE // 1024]) + bytes(EBDA_SIZE - 1))
    # MP tables
    mp = mp_config_table(firmware)
    if MP_CONFIG_TABLE_ADDR + len(mp) > ACPI_TABLES_ADDR:
        raise UserError(f"{len(firmware.apic_ids)} CPUs do not fit in the BIOS area's MP table")
    memory.write(MP_CONFIG_TABLE_ADDR, mp)
    memory.write(MP_FLOATING_POINTER_ADDR, mp_floating_pointer(MP_CONFIG_TABLE_ADDR))
    # ACPI tables, below the dummy handler at the top of the BIOS area
    if acpi.end_of(firmware, ACPI_TABLES_ADDR) > DUMMY_HANDLER_ADDR:
        raise UserError(f"{len(firmware.apic_ids)} CPUs do not fit in the BIOS area's ACPI tables")
    return acpi.install(memory, firmware, ACPI_TABLES_ADDR)


def install(memory, *, hard_disks: int = 0, firmware: Firmware = Firmware()) -> int:
    """Alias of :func:`install_tables`."""
    return install_tables(memory, hard_disks=hard_disks, firmware=firmware)


def program_devices(devices) -> None:
    """Leave the devices as a PC BIOS does before it boots an OS (SeaBIOS-like).

    Programmed through the devices' own ports, like the BIOS would:
    * 8259A pair: ICW1 edge/cascade/ICW4, vectors 0x08 (master) and 0x70
      (slave), master IR2 has the slave, 8086 mode; IMR: only the timer,
      keyboard and cascade unmasked on the master, the slave all masked;
    * 8254: counter 0 mode 3 with count 0 (65536: 18.2 Hz, the BIOS tick),
      counter 1 mode 2 with count 18 (DRAM refresh, 66.3 kHz).
    """
    pic = devices.pic
    if pic is not None:
        for cmd, data, base, icw3, imr in ((0x20, 0x21, 0x08, 0x04, 0xF8), (0xA0, 0xA1, 0x70, 0x02, 0xFF)):
            pic.io_write(cmd, 1, 0x11)       # ICW1: edge, cascade, ICW4 needed
            pic.io_write(data, 1, base)      # ICW2: vector base
            pic.io_write(data, 1, icw3)      # ICW3: cascade wiring
            pic.io_write(data, 1, 0x01)      # ICW4: 8086 mode, normal EOI
            pic.io_write(data, 1, imr)       # OCW1: mask
    pit = devices.pit
    if pit is not None:
        pit.io_write(0x43, 1, 0x36)          # counter 0, lobyte/hibyte, mode 3, binary
        pit.io_write(0x40, 1, 0x00)
        pit.io_write(0x40, 1, 0x00)
        pit.io_write(0x43, 1, 0x54)          # counter 1, lobyte, mode 2
        pit.io_write(0x41, 1, 18)
