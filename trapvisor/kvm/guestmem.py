"""Guest RAM that KVM maps into the guest and the device models see as memory.

:class:`KvmGuestMemory` is a :class:`~trapvisor.machine.memory.PhysicalMemory`
whose ``ram`` is an anonymous ``mmap`` instead of a ``bytearray``: the same
loaders (Multiboot, bzImage, BIOS tables) and devices write it through the
same methods, and KVM runs the guest directly on those pages
(KVM_SET_USER_MEMORY_REGION with the mapping's address).
"""

from __future__ import annotations

import ctypes
import mmap

from ..machine.memory import PAGE_SIZE, PhysicalMemory

# Guest RAM stops below the PCI/APIC hole; trapvisor keeps a single RAM slot.
MAX_RAM_BYTES = 0xC000_0000


class KvmGuestMemory(PhysicalMemory):
    def __init__(self, size: int):
        if size <= 0 or size % PAGE_SIZE:
            raise ValueError(f"memory size must be a positive multiple of 4 KiB, not {size}")
        if size > MAX_RAM_BYTES:
            raise ValueError(f"at most {MAX_RAM_BYTES >> 20} MiB of guest RAM under KVM")
        self.size = size
        self.ram = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                             prot=mmap.PROT_READ | mmap.PROT_WRITE)
        # The buffer export pins the mapping; it must outlive the VM
        # (measured: a collected mapping makes the next guest instruction
        # fail with KVM_EXIT_INTERNAL_ERROR).
        self._anchor = ctypes.c_char.from_buffer(self.ram)
        self.host_address = ctypes.addressof(self._anchor)
        # KVM writes guest RAM behind our back; there is no decode cache to
        # keep coherent, so no page is ever marked as holding cached code.
        self.code_pages = bytearray(size >> 12)
        self.on_code_write = None

    def close(self) -> None:
        if self.ram is not None and not self.ram.closed:
            del self._anchor
            self.ram.close()
