"""QEMU's firmware configuration device (fw_cfg), the traditional I/O-port interface.

How the PC's firmware and test kernels ask the machine what it is (QEMU's
docs/specs/fw_cfg.rst, "Firmware Configuration (fw_cfg) Device"; on x86 the
selector register is the 16-bit port 0x510 and the data register the 8-bit
port 0x511):

* a write to the selector register picks an item by its 16-bit key and
  resets the data offset to 0 (bit 14, 0x4000, asks for the write channel,
  which is not offered: items are read-only, as QEMU's are since 2.4);
* each read of the data register returns the item's next byte, and 0 past
  its end or for a key with no item;
* items: FW_CFG_SIGNATURE (0x0000) "QEMU"; FW_CFG_ID (0x0001) a 32-bit
  little-endian feature bitmap, bit 0 = the traditional interface (no DMA,
  bit 1 clear, so the DMA address register at 0x514 is absent);
  FW_CFG_RAM_SIZE (0x0003) the RAM in bytes, 64-bit little-endian;
  FW_CFG_NB_CPUS (0x0005) and FW_CFG_MAX_CPUS (0x000F) the CPUs, 16-bit
  little-endian; FW_CFG_NOGRAPHIC (0x0004) 1 (no display); FW_CFG_FILE_DIR
  (0x0019) the file directory: a 32-bit big-endian count followed by one
  64-byte entry per file (32-bit big-endian size, 16-bit big-endian key, 16
  reserved bits, a 56-byte NUL-padded name), files keyed from
  FW_CFG_FILE_FIRST (0x0020).

kvm-unit-tests read the CPU count (lib/x86/fwcfg.c, FW_CFG_NB_CPUS) and
SeaBIOS the signature, ID, RAM size, CPU counts and file directory.  The
board (``board.build_board``) gives the device what its firmware tables
describe, so fw_cfg, the MP table and the MADT agree.
"""

from __future__ import annotations

import struct

FW_CFG_PORT_SEL = 0x510
FW_CFG_PORT_DATA = 0x511
FW_CFG_PORTS = 2

FW_CFG_SIGNATURE = 0x0000
FW_CFG_ID = 0x0001
FW_CFG_RAM_SIZE = 0x0003
FW_CFG_NOGRAPHIC = 0x0004
FW_CFG_NB_CPUS = 0x0005
FW_CFG_MAX_CPUS = 0x000F
FW_CFG_FILE_DIR = 0x0019
FW_CFG_FILE_FIRST = 0x0020
FW_CFG_WRITE_CHANNEL = 0x4000
FW_CFG_ENTRY_MASK = 0x3FFF | 0x8000      # the key without the write-channel bit

FW_CFG_VERSION = 1 << 0                  # FW_CFG_ID: traditional interface
FILE_NAME_SIZE = 56


def file_dir(files: dict[str, bytes]) -> tuple[bytes, dict[int, bytes]]:
    """The FW_CFG_FILE_DIR item for ``files`` (name -> contents) and the items it points to."""
    entries, items = [], {}
    for i, (name, data) in enumerate(sorted(files.items())):
        key = FW_CFG_FILE_FIRST + i
        raw = name.encode()
        if len(raw) >= FILE_NAME_SIZE:
            raise ValueError(f"fw_cfg file name too long: {name!r}")
        entries.append(struct.pack(">IHH", len(data), key, 0) + raw.ljust(FILE_NAME_SIZE, b"\0"))
        items[key] = data
    return struct.pack(">I", len(entries)) + b"".join(entries), items


class FwCfg:
    """The fw_cfg device's selector and data registers over a fixed set of items."""

    def __init__(self, *, ram_size: int, cpus: int = 1, max_cpus: int | None = None,
                 files: dict[str, bytes] | None = None):
        directory, file_items = file_dir(files or {})
        self.items: dict[int, bytes] = {
            FW_CFG_SIGNATURE: b"QEMU",
            FW_CFG_ID: struct.pack("<I", FW_CFG_VERSION),
            FW_CFG_RAM_SIZE: struct.pack("<Q", ram_size),
            FW_CFG_NOGRAPHIC: struct.pack("<H", 1),
            FW_CFG_NB_CPUS: struct.pack("<H", cpus),
            FW_CFG_MAX_CPUS: struct.pack("<H", max_cpus or cpus),
            FW_CFG_FILE_DIR: directory,
            **file_items,
        }
        self.selector = FW_CFG_SIGNATURE
        self.offset = 0

    def select(self, key: int) -> None:
        self.selector = key & 0xFFFF
        self.offset = 0

    def read_byte(self) -> int:
        item = self.items.get(self.selector & FW_CFG_ENTRY_MASK, b"")
        if self.selector & FW_CFG_WRITE_CHANNEL or self.offset >= len(item):
            return 0
        b = item[self.offset]
        self.offset += 1
        return b

    def io_read(self, port: int, size: int) -> int:
        if port != FW_CFG_PORT_DATA:
            return 0                      # the selector register reads as 0 (write-only)
        value = 0
        for i in range(size):             # a wider read takes consecutive bytes, as QEMU's does
            value |= self.read_byte() << (8 * i)
        return value

    def io_write(self, port: int, size: int, value: int) -> None:
        if port == FW_CFG_PORT_SEL:
            self.select(value & (0xFF if size == 1 else 0xFFFF))
        # writes to the data register are ignored (read-only items, QEMU >= 2.4)
