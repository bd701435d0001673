"""A debugger's page walk: linear to physical through the guest's own tables, read-only.

The CPU's own walk (``machine/cpu/paging.py``) fills the TLB and sets accessed
and dirty bits, as the hardware does; a debugger looking at memory must leave
the guest exactly as it was, so this walk only reads.  It follows 32-bit paging
with 4 KiB pages and, with CR4.PSE, 4 MiB pages (SDM Vol. 3A §4.3, Tables 4-4
to 4-6), and PAE paging (§4.4) for guests that enable it on KVM.  No privilege
checks: the debugger sees supervisor and user pages alike.
"""

from __future__ import annotations

CR0_PG = 1 << 31
CR4_PSE = 1 << 4
CR4_PAE = 1 << 5
P, PS = 1, 1 << 7


def linear_to_physical(lin: int, cr0: int, cr3: int, cr4: int, read32, read64=None) -> int | None:
    """The physical address of ``lin``, or None where the tables map nothing.
    ``read32(pa)`` (and ``read64`` for PAE) read physical memory, or return None."""
    lin &= 0xFFFFFFFF
    if not cr0 & CR0_PG:
        return lin
    if cr4 & CR4_PAE:
        return _pae(lin, cr3, read64 or (lambda pa: _pair(read32, pa)))
    pde = read32((cr3 & 0xFFFFF000) | ((lin >> 20) & 0xFFC))
    if pde is None or not pde & P:
        return None
    if pde & PS and cr4 & CR4_PSE:
        return (pde & 0xFFC00000) | (lin & 0x3FFFFF)
    pte = read32((pde & 0xFFFFF000) | ((lin >> 10) & 0xFFC))
    if pte is None or not pte & P:
        return None
    return (pte & 0xFFFFF000) | (lin & 0xFFF)


def _pair(read32, pa):
    lo, hi = read32(pa), read32(pa + 4)
    return None if lo is None or hi is None else lo | hi << 32


def _pae(lin: int, cr3: int, read64) -> int | None:
    """PAE: PDPTE (bits 31:30), PDE (29:21, 2 MiB pages with PS), PTE (20:12); §4.4.2."""
    frame = (1 << 52) - 1 & ~0xFFF
    pdpte = read64((cr3 & 0xFFFFFFE0) + ((lin >> 30) & 3) * 8)
    if pdpte is None or not pdpte & P:
        return None
    pde = read64((pdpte & frame) + ((lin >> 21) & 0x1FF) * 8)
    if pde is None or not pde & P:
        return None
    if pde & PS:
        return (pde & frame & ~0x1FFFFF) | (lin & 0x1FFFFF)
    pte = read64((pde & frame) + ((lin >> 12) & 0x1FF) * 8)
    if pte is None or not pte & P:
        return None
    return (pte & frame) | (lin & 0xFFF)
