"""ACPI tables (machine/acpi.py) as an OS finds them in the simulated PC's memory, and the PM registers."""
import struct

import pytest

from trapvisor.machine import acpi, bios
from trapvisor.machine.board import build_board
from trapvisor.machine.clock import VirtualClock
from trapvisor.machine.devices.acpi_pm import SCI_EN, SLP_EN, AcpiPm
from trapvisor.machine.memory import PhysicalMemory


def board(cpus=1):
    return build_board(PhysicalMemory(16 << 20), VirtualClock(10, counter=lambda: 0), serial_out=lambda b: None,
                       firmware=bios.Firmware.for_cpus(cpus))


def find_rsdp(mem):
    """ACPI 6.5 5.2.5.1: on a 16-byte boundary in 0xE0000-0xFFFFF, checksum over the first 20 bytes."""
    for addr in range(0xE0000, 0x100000, 16):
        if mem.read(addr, 8) == b"RSD PTR " and sum(mem.read(addr, 20)) & 0xFF == 0:
            return addr
    return None


def table(mem, addr):
    sig, length = struct.unpack("<4sI", mem.read(addr, 8))
    data = mem.read(addr, length)
    assert sum(data) & 0xFF == 0, sig
    return sig, data


def tables(mem):
    rsdp = find_rsdp(mem)
    assert rsdp is not None
    sig, rsdt = table(mem, struct.unpack_from("<I", mem.read(rsdp, 20), 16)[0])
    assert sig == b"RSDT"
    found = {}
    for (ptr,) in struct.iter_unpack("<I", rsdt[36:]):
        s, data = table(mem, ptr)
        found[s] = (ptr, data)
    return found


def madt_entries(data):
    out, off = [], 44
    while off < len(data):
        t, n = data[off], data[off + 1]
        out.append((t, data[off:off + n]))
        off += n
    return out


@pytest.mark.parametrize("cpus", [1, 4])
def test_madt_describes_the_boards_cpus_and_ioapic_as_the_mp_table_does(cpus):
    b = board(cpus)
    found = tables(b.memory)
    assert set(found) == {b"FACP", b"APIC"}
    _, madt = found[b"APIC"]
    lapic_base, flags = struct.unpack_from("<II", madt, 36)
    assert lapic_base == b.firmware.lapic_base and flags & acpi.MADT_PCAT_COMPAT
    entries = madt_entries(madt)
    lapics = [(e[2], e[3], struct.unpack_from("<I", e, 4)[0]) for t, e in entries if t == acpi.MADT_LOCAL_APIC]
    assert [apic for _, apic, _ in lapics] == list(b.firmware.apic_ids) == list(range(cpus))
    assert all(f & acpi.LAPIC_ENABLED for _, _, f in lapics)
    (ioapic,) = [e for t, e in entries if t == acpi.MADT_IO_APIC]
    assert ioapic[2] == b.firmware.ioapic_id and struct.unpack_from("<II", ioapic, 4) == (b.firmware.ioapic_base, 0)
    isos = {e[3]: struct.unpack_from("<IH", e, 4) for t, e in entries if t == acpi.MADT_INTERRUPT_OVERRIDE}
    assert isos[0] == (2, 0)                                     # the 8254 on pin 2, as the MP table says
    assert isos[9] == (9, acpi.POLARITY_HIGH | acpi.TRIGGER_LEVEL)
    # the MP table lists the same processors and I/O APIC
    from tests.machine.test_bios import find_mp_floating_pointer, parse_config_table
    fp = find_mp_floating_pointer(b.memory)
    _, mp = parse_config_table(b.memory, struct.unpack_from("<I", b.memory.read(fp + 4, 4))[0])
    assert [e[1] for e in mp if e[0] == 0] == list(b.firmware.apic_ids)
    assert [e[3] & bios.MP_CPU_BSP for e in mp if e[0] == 0] == [bios.MP_CPU_BSP] + [0] * (cpus - 1)
    assert [(e[1], struct.unpack_from("<I", e, 4)[0]) for e in mp if e[0] == 2] == [(ioapic[2], b.firmware.ioapic_base)]


def test_the_simulated_pc_has_acpi_tables_listing_its_cpu():
    from trapvisor.machine.pc import PC
    mem = PC(16 << 20).memory
    rsdp = find_rsdp(mem)
    assert rsdp is not None
    found = tables(mem)
    lapics = [e for t, e in madt_entries(found[b"APIC"][1]) if t == acpi.MADT_LOCAL_APIC]
    assert [e[3] for e in lapics] == [bios.BSP_APIC_ID]


def test_fadt_points_at_the_pm_registers_the_board_has():
    b = board()
    found = tables(b.memory)
    _, fadt = found[b"FACP"]
    assert len(fadt) == acpi.FADT_SIZE and fadt[8] == acpi.FADT_REVISION
    facs, dsdt = struct.unpack_from("<II", fadt, 36)
    sci, smi_cmd = struct.unpack_from("<HI", fadt, 46)
    pm1a_evt, pm1a_cnt, pm_tmr = struct.unpack_from("<I4xI8xI", fadt, 56)
    assert sci == bios.SCI_IRQ and smi_cmd == 0 and pm_tmr == 0
    assert b.io_bus.device_at(pm1a_evt) is b.acpi_pm and b.io_bus.device_at(pm1a_cnt) is b.acpi_pm
    assert fadt[88:90] == bytes([4, 2])
    assert b.memory.read(facs, 4) == b"FACS" and facs % 64 == 0
    sig, body = table(b.memory, dsdt)
    assert sig == b"DSDT" and len(body) == acpi.HEADER_SIZE
    boot_arch = struct.unpack_from("<H", fadt, 109)[0]
    assert boot_arch & acpi.IAPC_8042 and boot_arch & acpi.IAPC_LEGACY_DEVICES


def test_tables_sit_in_the_reserved_bios_area():
    b = board(8)
    for addr, data in acpi.build(b.firmware, bios.ACPI_TABLES_ADDR).values():
        assert bios.BIOS_AREA_BASE <= addr and addr + len(data) <= bios.DUMMY_HANDLER_ADDR
    assert b.rsdp == find_rsdp(b.memory)


def test_pm1_registers():
    pm = AcpiPm(0x600)
    assert pm.io_read(0x604, 2) & SCI_EN                         # always in ACPI mode (no SMI_CMD)
    assert pm.io_read(0x600, 2) == 0                             # no fixed event ever pending
    pm.io_write(0x602, 2, 0xFFFF)
    assert pm.io_read(0x602, 2) == 0x0721                        # only the defined enable bits stick
    pm.io_write(0x604, 2, SLP_EN | (5 << 10))
    assert pm.io_read(0x604, 2) == (5 << 10) | SCI_EN            # SLP_EN is write-only; SCI_EN stays set
    pm.status = 0x0100
    pm.io_write(0x600, 2, 0x0100)
    assert pm.status == 0                                        # status bits are write-1-to-clear
