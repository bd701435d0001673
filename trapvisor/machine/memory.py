"""Guest physical memory.

RAM is one anonymous private ``mmap`` (``mmap(2)`` with MAP_ANONYMOUS):
its pages read as zero and take host memory only once the guest (or a
loader) touches them, so the simulator's resident memory follows what the
guest uses, as a hardware-assisted hypervisor's does, instead of the whole
guest size at start (a ``bytearray`` is zero-filled, every page touched).
It supports what the CPU's hot paths use of a ``bytearray``: indexing,
slice reads and same-length slice writes, the buffer protocol (``struct``,
``memoryview`` casts).  Physical addresses at or above ``size`` belong to the MMIO bus
(local APIC at 0xFEE00000, I/O APIC at 0xFEC00000) or to nothing.

Self-modifying code: the CPU caches decoded instructions by physical address
and marks each page it decoded from in ``code_pages``.  Every writer of guest
memory other than the CPU's own store path (loaders, a VMM, DMA) must use
:meth:`write` (or call :meth:`notify_write`) so that the decode cache of a
written code page is dropped.
"""

from __future__ import annotations

import mmap
import struct

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


def anonymous_ram(size: int) -> mmap.mmap:
    """Zeroed guest RAM whose pages are allocated by the host kernel on first touch."""
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                     prot=mmap.PROT_READ | mmap.PROT_WRITE)


class PhysicalMemory:
    def __init__(self, size: int):
        if size <= 0 or size % PAGE_SIZE:
            raise ValueError(f"memory size must be a positive multiple of 4 KiB, not {size}")
        self.size = size
        self.ram = anonymous_ram(size)
        # One byte per 4 KiB page: non-zero when the decode cache holds code from it.
        self.code_pages = bytearray(size >> PAGE_SHIFT)
        # Called with a page number when a page in ``code_pages`` is written.
        self.on_code_write = None

    # -- writers other than the CPU ------------------------------------------
    def notify_write(self, addr: int, length: int) -> None:
        first, last = addr >> PAGE_SHIFT, (addr + max(length, 1) - 1) >> PAGE_SHIFT
        cp = self.code_pages
        for page in range(first, min(last, len(cp) - 1) + 1):
            if cp[page] and self.on_code_write is not None:
                self.on_code_write(page)

    def write(self, addr: int, data: bytes) -> None:
        self._check(addr, len(data))
        self.ram[addr:addr + len(data)] = data
        self.notify_write(addr, len(data))

    def fill(self, addr: int, length: int, byte: int = 0) -> None:
        self.write(addr, bytes([byte]) * length)

    def read(self, addr: int, length: int) -> bytes:
        self._check(addr, length)
        return bytes(self.ram[addr:addr + length])

    def read_u16(self, addr: int) -> int:
        return _U16.unpack_from(self.ram, addr)[0]

    def read_u32(self, addr: int) -> int:
        return _U32.unpack_from(self.ram, addr)[0]

    def write_u16(self, addr: int, value: int) -> None:
        self.write(addr, _U16.pack(value & 0xFFFF))

    def write_u32(self, addr: int, value: int) -> None:
        self.write(addr, _U32.pack(value & 0xFFFFFFFF))

    def _check(self, addr: int, length: int) -> None:
        if addr < 0 or addr + length > self.size:
            raise IndexError(f"physical range {addr:#x}+{length:#x} outside RAM (size {self.size:#x})")
