"""QEMU's fw_cfg device as firmware and kvm-unit-tests read it: selector at 0x510, data at 0x511."""

import struct

from trapvisor.machine import board as board_mod
from trapvisor.machine import bios
from trapvisor.machine.clock import VirtualClock
from trapvisor.machine.devices import fw_cfg as f
from trapvisor.machine.memory import PhysicalMemory


def read_item(bus, key, n):
    bus.write(f.FW_CFG_PORT_SEL, 2, key)
    return bytes(bus.read(f.FW_CFG_PORT_DATA, 1) for _ in range(n))


def make_board(mib=64, cpus=1):
    return board_mod.build_board(PhysicalMemory(mib << 20), VirtualClock(10, counter=lambda: 0),
                                 serial_out=lambda b: None, firmware=bios.Firmware.for_cpus(cpus))


def test_the_board_answers_signature_id_ram_and_cpus():
    b = make_board(64, cpus=3)
    bus = b.io_bus
    assert read_item(bus, f.FW_CFG_SIGNATURE, 4) == b"QEMU"
    assert struct.unpack("<I", read_item(bus, f.FW_CFG_ID, 4))[0] == f.FW_CFG_VERSION   # no DMA bit
    assert struct.unpack("<Q", read_item(bus, f.FW_CFG_RAM_SIZE, 8))[0] == 64 << 20
    assert struct.unpack("<H", read_item(bus, f.FW_CFG_NB_CPUS, 2))[0] == 3
    assert struct.unpack("<H", read_item(bus, f.FW_CFG_MAX_CPUS, 2))[0] == 3


def test_a_new_selection_restarts_the_item_and_reads_past_the_end_are_zero():
    d = f.FwCfg(ram_size=1 << 20)
    d.io_write(f.FW_CFG_PORT_SEL, 2, f.FW_CFG_SIGNATURE)
    assert d.io_read(f.FW_CFG_PORT_DATA, 1) == ord("Q")
    d.io_write(f.FW_CFG_PORT_SEL, 2, f.FW_CFG_SIGNATURE)
    assert bytes(d.io_read(f.FW_CFG_PORT_DATA, 1) for _ in range(6)) == b"QEMU\0\0"
    d.io_write(f.FW_CFG_PORT_SEL, 2, 0x1234)          # no such item
    assert d.io_read(f.FW_CFG_PORT_DATA, 1) == 0
    d.io_write(f.FW_CFG_PORT_SEL, 2, f.FW_CFG_WRITE_CHANNEL | f.FW_CFG_SIGNATURE)
    assert d.io_read(f.FW_CFG_PORT_DATA, 1) == 0      # the write channel is not readable
    d.io_write(f.FW_CFG_PORT_DATA, 1, 0x55)           # ignored: items are read-only
    d.io_write(f.FW_CFG_PORT_SEL, 2, f.FW_CFG_SIGNATURE)
    assert d.io_read(f.FW_CFG_PORT_DATA, 1) == ord("Q")


def test_the_file_directory_is_big_endian_with_64_byte_entries():
    d = f.FwCfg(ram_size=1 << 20, files={"etc/b": b"xyz", "etc/a": b"12"})
    d.select(f.FW_CFG_FILE_DIR)
    raw = bytes(d.read_byte() for _ in range(4 + 2 * 64))
    assert struct.unpack(">I", raw[:4])[0] == 2
    size, key, _ = struct.unpack(">IHH", raw[4:12])
    assert (size, key, raw[12:17]) == (2, f.FW_CFG_FILE_FIRST, b"etc/a")
    d.select(struct.unpack(">H", raw[68 + 4:68 + 6])[0])
    assert bytes(d.read_byte() for _ in range(3)) == b"xyz"
    d = f.FwCfg(ram_size=1 << 20)
    d.select(f.FW_CFG_FILE_DIR)
    assert bytes(d.read_byte() for _ in range(4)) == b"\0\0\0\0"   # an empty directory
