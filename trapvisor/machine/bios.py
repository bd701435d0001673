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
* the E820 memory map that INT 15h/E820 would return (``e820_map``);
* the device state a BIOS programs (``program_devices``): 8259A vectors
  0x08/0x70, 8254 counter 0 in mode 3 with the maximum count (18.2 Hz).

The ISA IRQ entries follow SeaBIOS's MP table under QEMU: IRQ n goes to I/O
APIC pin n, except IRQ 0, which goes to pin 2 (the 8254 is wired there on
every chipset with an I/O APIC; ``devices/ioapic.py`` wires it so), and IRQ 2
(the 8259A cascade, which no device raises) has no entry.  All use the ISA
bus defaults (flags 0: polarity and trigger mode conform to the bus, i.e.
active high, edge).
"""

from __future__ import annotations

import struct

from ..errors import UserError
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

HIGH_BIOS_BASE = 0xFFFC0000                  # the BIOS ROM's alias below 4 GiB (QEMU reports it)
HIGH_BIOS_SIZE = 0x40000

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

# The processor entry repeats what the simulated CPU's CPUID leaf 1 reports
# (family 6, model 3, stepping 3; EDX features); OSes use the APIC entries.
CPU_SIGNATURE = 0x00000633
CPU_FEATURES = 0x0000AB3E


def _checksum(data: bytes) -> int:
    """The byte that makes ``data`` plus itself sum to zero modulo 256."""
    return (-sum(data)) & 0xFF


def mp_config_table(*, table_addr: int = MP_CONFIG_TABLE_ADDR) -> bytes:
    """The MP configuration table (MP spec 1.4 section 4.2 and Table 4-3)."""
    entries = []
    # Processor entry (Table 4-4): type, APIC ID, APIC version, flags, signature, features, 8 reserved.
    entries.append(struct.pack("<BBBBII8x", MP_ENTRY_PROCESSOR, BSP_APIC_ID,
                               APIC_VERSION_VALUE & 0xFF, MP_CPU_ENABLED | MP_CPU_BSP,
                               CPU_SIGNATURE, CPU_FEATURES))
    # Bus entry (Table 4-7): type, bus ID, 6-byte type string.
    entries.append(struct.pack("<BB6s", MP_ENTRY_BUS, ISA_BUS_ID, b"ISA   "))
    # I/O APIC entry (Table 4-8): type, ID, version, flags, address.
    entries.append(struct.pack("<BBBBI", MP_ENTRY_IOAPIC, IOAPIC_ID, IOAPIC_VERSION,
                               MP_IOAPIC_ENABLED, IOAPIC_BASE))
    # I/O interrupt assignment entries (Table 4-10): type, interrupt type, flags (u16),
    # source bus, source bus IRQ, destination I/O APIC ID, destination INTIN#.
    for irq in range(16):
        if irq == 2:
            continue
        entries.append(struct.pack("<BBHBBBB", MP_ENTRY_IO_INTERRUPT, MP_INT_INT, 0,
                                   ISA_BUS_ID, irq, IOAPIC_ID, isa_irq_to_pin(irq)))
    # Local interrupt assignment entries (Table 4-12): ExtINT on LINT0, NMI on LINT1.
    entries.append(struct.pack("<BBHBBBB", MP_ENTRY_LOCAL_INTERRUPT, MP_INT_EXTINT, 0,
                               ISA_BUS_ID, 0, MP_ALL_LOCAL_APICS, 0))
    entries.append(struct.pack("<BBHBBBB", MP_ENTRY_LOCAL_INTERRUPT, MP_INT_NMI, 0,
                               ISA_BUS_ID, 0, MP_ALL_LOCAL_APICS, 1))
    body = b"".join(entries)
    length = 44 + len(body)
    header = struct.pack("<4sHBB8s12sIHHIHBx", MP_CT_SIGNATURE, length, MP_SPEC_REV, 0,
                         MP_OEM_ID, MP_PRODUCT_ID, 0, 0, len(entries), LAPIC_BASE, 0, 0)
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
    reserved.  Entries are (base, length, type), type 1 = RAM, 2 = reserved.
    """
    entries = [(0, min(memory_size, EBDA_BASE), E820_RAM)]
    if memory_size > EBDA_BASE:
        entries.append((EBDA_BASE, EBDA_SIZE, E820_RESERVED))
    entries.append((BIOS_AREA_BASE, BIOS_AREA_END - BIOS_AREA_BASE, E820_RESERVED))
    if memory_size > BIOS_AREA_END:
        entries.append((BIOS_AREA_END, memory_size - BIOS_AREA_END, E820_RAM))
    entries.append((HIGH_BIOS_BASE, HIGH_BIOS_SIZE, E820_RESERVED))
    return entries


def install_tables(memory, *, hard_disks: int = 0) -> None:
    """Write the IVT, the BIOS data area, the EBDA and the MP tables into guest memory."""
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
    memory.write(MP_CONFIG_TABLE_ADDR, mp_config_table())
    memory.write(MP_FLOATING_POINTER_ADDR, mp_floating_pointer(MP_CONFIG_TABLE_ADDR))


def install(memory, *, hard_disks: int = 0) -> None:
    """Alias of :func:`install_tables`."""
    install_tables(memory, hard_disks=hard_disks)


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
