"""Guest-virtual memory as the hypervisor reaches it: through the guest's own
page tables (the ones the host MMU uses), with the guest kernel's rights.

Xen's copy_from_guest/copy_to_guest: a pointer a guest passes in a hypercall
is a guest-virtual address, valid only below HYPERVISOR_VIRT_START, mapped
present, and writable when the hypervisor writes through it.  Anything else
is -EFAULT, never a fault of the hypervisor (Barham et al. 2003, section 3.1).
"""

from __future__ import annotations

from .abi import EFAULT, HYPERVISOR_VIRT_START
from .mm import PTE_P, PTE_RW, PTE_US

MAX_COPY = 1 << 20        # one hypercall argument copies at most this much


class GuestFault(Exception):
    """A bad guest pointer: the hypercall returns -EFAULT."""

    errno = EFAULT


class GuestMemory:
    def __init__(self, mem, cpu):
        self.mem, self.cpu = mem, cpu

    def translate(self, va: int, write: bool, user: bool = False) -> int:
        """Machine address of guest-virtual ``va``, or GuestFault."""
        if not 0 <= va < HYPERVISOR_VIRT_START:
            raise GuestFault(f"address {va:#x} is outside the guest's part of the address space")
        cr3 = self.cpu.cr3 & ~0xFFF
        pde = self.mem.read_u32(cr3 + 4 * (va >> 22))
        if not pde & PTE_P or (write and not pde & PTE_RW) or (user and not pde & PTE_US):
            raise GuestFault(f"address {va:#x} is not mapped{' writable' if write else ''}")
        pt = pde & ~0xFFF
        if pt + 4096 > self.mem.size:
            raise GuestFault(f"address {va:#x}: page directory entry names no memory")
        pte = self.mem.read_u32(pt + 4 * ((va >> 12) & 0x3FF))
        if not pte & PTE_P or (write and not pte & PTE_RW) or (user and not pte & PTE_US):
            raise GuestFault(f"address {va:#x} is not mapped{' writable' if write else ''}")
        ma = (pte & ~0xFFF) | (va & 0xFFF)
        if ma >= self.mem.size:
            raise GuestFault(f"address {va:#x} maps no memory")
        return ma

    def read(self, va: int, n: int, user: bool = False) -> bytes:
        if n < 0 or n > MAX_COPY:
            raise GuestFault(f"length {n} out of range")
        out = bytearray()
        while n > 0:
            chunk = min(n, 4096 - (va & 0xFFF))
            ma = self.translate(va, False, user)
            out += self.mem.ram[ma:ma + chunk]
            va, n = va + chunk, n - chunk
        return bytes(out)

    def write(self, va: int, data: bytes, user: bool = False) -> None:
        if len(data) > MAX_COPY:
            raise GuestFault(f"length {len(data)} out of range")
        # Translate every page first: a copy that faults half-way writes nothing.
        spans, off, at = [], 0, va
        while off < len(data):
            chunk = min(len(data) - off, 4096 - (at & 0xFFF))
            spans.append((self.translate(at, True, user), off, chunk))
            at, off = at + chunk, off + chunk
        for ma, off, chunk in spans:
            self.mem.write(ma, data[off:off + chunk])

    def u32(self, va: int) -> int:
        return int.from_bytes(self.read(va, 4), "little")
