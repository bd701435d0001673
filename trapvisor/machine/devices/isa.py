"""ISA bus conventions shared by the 8-bit PC devices.

The PC's legacy devices (8259A, 8254, 16550A, MC146818, i8042) have 8-bit data
buses.  A 16- or 32-bit IN/OUT aimed at one of them is split by the ISA bus
into byte cycles to consecutive ports, lowest port first (IBM PC/AT Technical
Reference, "I/O channel": the bus controller converts a 16-bit cycle to an
8-bit device into two 8-bit cycles).  These helpers do that split for a device
that implements byte accesses only.
"""

from __future__ import annotations


def split_read(read_byte, port: int, size: int) -> int:
    """Read ``size`` bytes as consecutive byte reads at ``port``, ``port+1``, ..."""
    if size == 1:
        return read_byte(port) & 0xFF
    value = 0
    for i in range(size):
        value |= (read_byte((port + i) & 0xFFFF) & 0xFF) << (8 * i)
    return value


def split_write(write_byte, port: int, size: int, value: int) -> None:
    """Write ``size`` bytes as consecutive byte writes at ``port``, ``port+1``, ..."""
    if size == 1:
        write_byte(port, value & 0xFF)
        return
    for i in range(size):
        write_byte((port + i) & 0xFFFF, (value >> (8 * i)) & 0xFF)


def to_bcd(value: int) -> int:
    """Binary 0-99 to packed BCD."""
    value %= 100
    return ((value // 10) << 4) | (value % 10)


def from_bcd(value: int) -> int:
    """Packed BCD to binary.  Invalid digits (A-F) are taken at face value, as a
    binary adder would, so no guest value raises."""
    return ((value >> 4) & 0xF) * 10 + (value & 0xF)
