"""The I/O-port bus and the MMIO bus that devices sit on.

Devices know nothing of the CPU, of a VMM or of KVM: they are registered on a
bus at a port range or a physical address range, and whoever executes guest
code (the simulated CPU, an interpreter routine of a VMM, the KVM exit loop)
forwards the guest's accesses here.  One device model thus serves every
technique.

Contract for a device (duck-typed):

* port I/O:  ``io_read(port, size) -> int`` and ``io_write(port, size, value)``
  where ``port`` is the absolute port number and ``size`` is 1, 2 or 4 bytes;
* MMIO:      ``mmio_read(offset, size) -> int`` and
  ``mmio_write(offset, size, value)`` where ``offset`` is relative to the base
  the device was registered at.

A read of a port or address no device claims returns all ones, as an
undriven ISA bus does; a write to it is dropped.  Both are counted so a report
can show what a guest probed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SIZE_MASK = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF, 8: 0xFFFFFFFFFFFFFFFF}


class BusConflict(Exception):
    """Two devices claim the same port or address."""


class IoBus:
    """The 64 KiB x86 I/O-port space.

    Lookup is one list index per access (the list has one slot per port),
    which keeps the hot path of IN/OUT loops flat.
    """

    def __init__(self) -> None:
        self._ports: list = [None] * 0x10000
        self.unclaimed_reads = 0
        self.unclaimed_writes = 0

    def register(self, first_port: int, count: int, device) -> None:
        for port in range(first_port, first_port + count):
            if self._ports[port] is not None:
                raise BusConflict(f"port {port:#x} already claimed by {self._ports[port]!r}")
            self._ports[port] = device

    def device_at(self, port: int):
        return self._ports[port & 0xFFFF]

    def read(self, port: int, size: int) -> int:
        dev = self._ports[port & 0xFFFF]
        if dev is None:
            self.unclaimed_reads += 1
            return SIZE_MASK[size]
        return dev.io_read(port & 0xFFFF, size) & SIZE_MASK[size]

    def write(self, port: int, size: int, value: int) -> None:
        dev = self._ports[port & 0xFFFF]
        if dev is None:
            self.unclaimed_writes += 1
            return
        dev.io_write(port & 0xFFFF, size, value & SIZE_MASK[size])


@dataclass(order=True)
class MmioRegion:
    base: int
    length: int
    device: object = field(compare=False)

    def contains(self, addr: int) -> bool:
        return self.base <= addr < self.base + self.length


class MmioBus:
    """Physical address ranges claimed by devices (local APIC, I/O APIC, ...)."""

    def __init__(self) -> None:
        self.regions: list[MmioRegion] = []
        self.unclaimed_reads = 0
        self.unclaimed_writes = 0

    def register(self, base: int, length: int, device) -> None:
        new = MmioRegion(base, length, device)
        for r in self.regions:
            if r.base < base + length and base < r.base + r.length:
                raise BusConflict(f"MMIO {base:#x}+{length:#x} overlaps {r.base:#x}+{r.length:#x}")
        self.regions.append(new)
        self.regions.sort()

    def find(self, addr: int) -> MmioRegion | None:
        for r in self.regions:
            if r.base <= addr < r.base + r.length:
                return r
        return None

    def read(self, addr: int, size: int) -> int:
        r = self.find(addr)
        if r is None:
            self.unclaimed_reads += 1
            return SIZE_MASK[size]
        return r.device.mmio_read(addr - r.base, size) & SIZE_MASK[size]

    def write(self, addr: int, size: int, value: int) -> None:
        r = self.find(addr)
        if r is None:
            self.unclaimed_writes += 1
            return
        r.device.mmio_write(addr - r.base, size, value & SIZE_MASK[size])
