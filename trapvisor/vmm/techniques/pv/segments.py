"""Segment descriptors a paravirtual guest installs (set_gdt, update_descriptor).

After Xen's check_descriptor (xen/arch/x86/mm.c) and Barham et al. 2003,
section 3.3.1 ("the guest OS ... may install descriptors ... validated by
Xen: they must have lower privilege than Xen, and may not allow any access
to the Xen-reserved portion of the address space"):

* a descriptor that is not present is harmless and accepted as it is;
* code and data segments must have DPL 1, 2 or 3 (DPL 0 is the
  hypervisor's: refused, -EINVAL) and are truncated so that no byte past
  GUEST_SEGMENT_MAX (the end of the read-only M2P table) is reachable;
* system descriptors (TSS, LDT, interrupt and trap gates, task gates) are
  refused; a call gate is refused too (this ABI needs none, and one whose
  target is the hypervisor's code would be an escape).
"""

from __future__ import annotations

from ....machine.cpu.descriptors import d_base, d_dpl, d_limit, d_present
from .abi import EINVAL, GUEST_SEGMENT_MAX

DESC_S = 1 << 44
DESC_CODE = 1 << 43
DESC_EXPAND_DOWN = 1 << 42      # data segments: the E bit
DESC_G = 1 << 55
DESC_L = 1 << 53


class DescriptorError(Exception):
    def __init__(self, errno: int, why: str):
        super().__init__(why)
        self.errno = errno


def check_descriptor(d: int) -> int:
    """The descriptor as installed (truncated), or DescriptorError."""
    if not d_present(d):
        return d
    if not d & DESC_S:
        raise DescriptorError(EINVAL, f"system descriptor {d:#018x} (TSS, LDT or gate) refused")
    if d_dpl(d) == 0:
        raise DescriptorError(EINVAL, f"descriptor {d:#018x} has DPL 0, the hypervisor's privilege")
    if d & DESC_L:
        raise DescriptorError(EINVAL, f"descriptor {d:#018x} is a 64-bit code segment")
    if not d & DESC_CODE and d & DESC_EXPAND_DOWN:
        # Expand-down: valid offsets are (limit, top]; its top is 4 GiB with B=1. Refused
        # unless it cannot reach the hole, which a 32-bit expand-down segment always can.
        raise DescriptorError(EINVAL, f"expand-down segment {d:#018x} would reach the hypervisor")
    base, limit = d_base(d), d_limit(d)
    if base > GUEST_SEGMENT_MAX:
        raise DescriptorError(EINVAL, f"segment base {base:#x} lies in the hypervisor's hole")
    if base + limit > GUEST_SEGMENT_MAX:
        limit = GUEST_SEGMENT_MAX - base
        d = with_limit(d, limit)
    return d


def with_limit(d: int, limit: int) -> int:
    """``d`` with byte limit ``limit`` (page-granular when it does not fit 20 bits)."""
    if limit > 0xFFFFF or d & DESC_G:
        raw, g = limit >> 12, DESC_G
    else:
        raw, g = limit, 0
    d &= ~(0xFFFF | (0xF << 48) | DESC_G)
    return d | (raw & 0xFFFF) | ((raw >> 16) & 0xF) << 48 | g


def flat(dpl: int, code: bool) -> int:
    """A flat ring-``dpl`` segment truncated below the hole (FLAT_RINGn_CS/DS)."""
    access = 0x80 | dpl << 5 | 0x10 | (0x0B if code else 0x03)
    d = (access << 40) | (0xC << 52)      # G=1, D/B=1
    return with_limit(d, GUEST_SEGMENT_MAX)
