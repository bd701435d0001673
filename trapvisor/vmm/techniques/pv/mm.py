"""Validated memory management: page-frame types and reference counts.

The guest's page tables are real: the host CPU's MMU walks them directly
(no shadow).  They hold machine frame numbers, they are mapped read-only to
the guest, and every change goes through the hypervisor, which validates it
(Barham et al., SOSP 2003, section 3.3.2 "Memory management": "each machine
page frame has an associated type ... and reference count ... a frame may
only safely be retasked when its reference count is zero").

Frame types (Xen's PGT_*): none, L1 page table, L2 page table, segment
descriptor page, writable.  A frame holds one type at a time, counted by
its *type count*; the type may change only when that count is zero.  So:

* a frame mapped writable anywhere (type writable, count > 0) cannot become
  a page table or a descriptor page;
* a page-table or descriptor frame (count > 0) cannot be mapped writable;
* an L1 entry may only name a frame the domain owns (or its shared_info);
  an L2 entry may only name an L1 frame of the domain; the L2 slots of the
  hypervisor's hole (HYPERVISOR_VIRT_START and up) are the hypervisor's.

Reference counting follows Xen's get_page/get_page_type pairs: a validated
entry holds one general reference on the frame it names and, for writable
L1 entries and for L2 entries, one type reference; removing the entry (or
the table losing its type) puts them back.  Pinning holds one type
reference on a table so it stays validated while no CR3 points at it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .abi import (
    EINVAL, EPERM, HYPERVISOR_VIRT_START, MMU_NORMAL_PT_UPDATE, MMU_PT_UPDATE_PRESERVE_AD,
)

PAGE = 4096
PTE_P, PTE_RW, PTE_US, PTE_PS = 0x1, 0x2, 0x4, 0x80
PTE_A, PTE_D = 0x20, 0x40
HYPERVISOR_SLOT = HYPERVISOR_VIRT_START >> 22    # first L2 slot of the hole (1008)

NONE, L1, L2, SEGDESC, WRITABLE = "none", "l1", "l2", "segdesc", "writable"


class MmError(Exception):
    """A refused update: ``errno`` is Xen's (returned negated in EAX)."""

    def __init__(self, errno: int, why: str):
        super().__init__(why)
        self.errno = errno


@dataclass(slots=True)
class Frame:
    type: str = NONE
    type_count: int = 0
    count: int = 0         # general references (mappings, pins, CR3, GDT)
    pinned: bool = False


class FrameTable:
    """The frames of one domain, on host memory ``mem`` (machine = host-physical)."""

    def __init__(self, mem, first_mfn: int, nr_pages: int, *, shared_mfns=(), hypervisor_l2=None,
                 on_type_lost=None):
        self.mem = mem
        self.first, self.nr = first_mfn, nr_pages
        self.frames = {m: Frame() for m in range(first_mfn, first_mfn + nr_pages)}
        # Hypervisor frames the domain may map writable (shared_info).
        for m in shared_mfns:
            self.frames[m] = Frame()
        self.shared = frozenset(shared_mfns)
        # {slot: pde} the hypervisor writes into every validated L2 (its hole).
        self.hypervisor_l2 = hypervisor_l2 or {}
        # Called with the mfn when a frame stops being writable (the host TLB must forget it).
        self.on_type_lost = on_type_lost or (lambda mfn: None)
        self.validations = 0

    # -- ownership and counts ----------------------------------------------------
    def owns(self, mfn: int) -> bool:
        return mfn in self.frames

    def get_page(self, mfn: int) -> None:
        f = self.frames.get(mfn)
        if f is None:
            raise MmError(EINVAL, f"frame {mfn:#x} is not the domain's")
        f.count += 1

    def put_page(self, mfn: int) -> None:
        f = self.frames[mfn]
        if f.count <= 0:
            raise AssertionError(f"reference count of frame {mfn:#x} underflows")
        f.count -= 1

    def get_type(self, mfn: int, t: str) -> None:
        """Take a type reference of type ``t``, validating the frame if it changes type."""
        f = self.frames.get(mfn)
        if f is None:
            raise MmError(EINVAL, f"frame {mfn:#x} is not the domain's")
        if f.type_count and f.type != t:
            raise MmError(EINVAL, f"frame {mfn:#x} is in use as {f.type} ({f.type_count} refs), "
                                  f"not {t}")
        if f.type_count == 0 and f.type != t:
            if t == WRITABLE and mfn in self.shared:
                pass
            elif mfn in self.shared:
                raise MmError(EINVAL, f"frame {mfn:#x} is the shared_info page")
            old = f.type
            if t == L1:
                self._validate_l1(mfn)
            elif t == L2:
                self._validate_l2(mfn)
            f.type = t
            if old == WRITABLE:
                self.on_type_lost(mfn)
        f.type_count += 1

    def put_type(self, mfn: int) -> None:
        f = self.frames[mfn]
        if f.type_count <= 0:
            raise AssertionError(f"type count of frame {mfn:#x} underflows")
        f.type_count -= 1
        if f.type_count == 0 and f.type in (L1, L2):
            t = f.type
            f.type = NONE
            if t == L1:
                self._release_l1(mfn)
            else:
                self._release_l2(mfn)

    def get_page_and_type(self, mfn: int, t: str) -> None:
        self.get_page(mfn)
        try:
            self.get_type(mfn, t)
        except MmError:
            self.put_page(mfn)
            raise

    def put_page_and_type(self, mfn: int) -> None:
        self.put_type(mfn)
        self.put_page(mfn)

    # -- entries ---------------------------------------------------------------------
    def entry(self, mfn: int, i: int) -> int:
        return self.mem.read_u32((mfn << 12) + 4 * i)

    def _write_entry(self, mfn: int, i: int, value: int) -> None:
        self.mem.write_u32((mfn << 12) + 4 * i, value)

    def get_l1e(self, e: int) -> None:
        """The references a present L1 entry holds (Xen's get_page_from_l1e)."""
        if not e & PTE_P:
            return
        mfn = e >> 12
        if e & PTE_RW:
            self.get_page_and_type(mfn, WRITABLE)
        else:
            self.get_page(mfn)

    def put_l1e(self, e: int) -> None:
        if not e & PTE_P:
            return
        mfn = e >> 12
        if e & PTE_RW:
            self.put_page_and_type(mfn)
        else:
            self.put_page(mfn)

    def get_l2e(self, e: int) -> None:
        if not e & PTE_P:
            return
        if e & PTE_PS:
            raise MmError(EINVAL, "a 4 MiB (PSE) mapping: paravirtual guests map 4 KiB pages only")
        self.get_page_and_type(e >> 12, L1)

    def put_l2e(self, e: int) -> None:
        if e & PTE_P:
            self.put_page_and_type(e >> 12)

    def _validate_l1(self, mfn: int) -> None:
        self.validations += 1
        done = []
        try:
            for i in range(1024):
                e = self.entry(mfn, i)
                self.get_l1e(e)
                done.append(e)
        except MmError as err:
            for e in done:
                self.put_l1e(e)
            raise MmError(err.errno, f"L1 frame {mfn:#x} entry {len(done)}: {err}") from None

    def _release_l1(self, mfn: int) -> None:
        for i in range(1024):
            self.put_l1e(self.entry(mfn, i))

    def _validate_l2(self, mfn: int) -> None:
        self.validations += 1
        done = []
        try:
            for i in range(HYPERVISOR_SLOT):
                e = self.entry(mfn, i)
                self.get_l2e(e)
                done.append(e)
        except MmError as err:
            for e in done:
                self.put_l2e(e)
            raise MmError(err.errno, f"L2 frame {mfn:#x} entry {len(done)}: {err}") from None
        # The hypervisor's hole, in every address space (the guest cannot write these slots).
        for slot in range(HYPERVISOR_SLOT, 1024):
            self._write_entry(mfn, slot, self.hypervisor_l2.get(slot, 0))

    def _release_l2(self, mfn: int) -> None:
        for i in range(HYPERVISOR_SLOT):
            self.put_l2e(self.entry(mfn, i))
        for slot in range(HYPERVISOR_SLOT, 1024):
            self._write_entry(mfn, slot, 0)

    # -- mmu_update --------------------------------------------------------------------
    def update(self, ptr: int, val: int) -> str:
        """One ``mmu_update`` request (MMU_NORMAL_PT_UPDATE or _PRESERVE_AD): validate and
        write; returns the kind of frame written.  Raises MmError, leaving memory unchanged."""
        cmd = ptr & 3
        if cmd not in (MMU_NORMAL_PT_UPDATE, MMU_PT_UPDATE_PRESERVE_AD):
            raise MmError(EINVAL if cmd != 1 else EPERM, f"mmu_update command {cmd} not supported")
        ptr &= ~3
        if ptr & 3 or val >> 32:
            raise MmError(EINVAL, "misaligned entry or a value wider than 32 bits")
        mfn, i = ptr >> 12, (ptr & 0xFFF) >> 2
        f = self.frames.get(mfn)
        if f is None or mfn in self.shared:
            raise MmError(EINVAL, f"update of frame {mfn:#x}, which is not the domain's")
        old = self.entry(mfn, i)
        if cmd == MMU_PT_UPDATE_PRESERVE_AD:
            val |= old & (PTE_A | PTE_D)
        if f.type == L1 and f.type_count:
            self.get_l1e(val)
            self._write_entry(mfn, i, val)
            self.put_l1e(old)
            return L1
        if f.type == L2 and f.type_count:
            if i >= HYPERVISOR_SLOT:
                raise MmError(EPERM, f"L2 slot {i} lies in the hypervisor's hole")
            self.get_l2e(val)
            self._write_entry(mfn, i, val)
            self.put_l2e(old)
            return L2
        if f.type == SEGDESC and f.type_count:
            raise MmError(EINVAL, f"frame {mfn:#x} is a descriptor page: use update_descriptor")
        # An ordinary page: a plain write, allowed only if it could be mapped writable.
        self.get_type(mfn, WRITABLE)
        self._write_entry(mfn, i, val)
        self.put_type(mfn)
        return WRITABLE

    def pin(self, mfn: int, t: str) -> None:
        f = self.frames.get(mfn)
        if f is None:
            raise MmError(EINVAL, f"frame {mfn:#x} is not the domain's")
        if f.pinned:
            raise MmError(EINVAL, f"frame {mfn:#x} is already pinned")
        self.get_page_and_type(mfn, t)
        f.pinned = True

    def unpin(self, mfn: int) -> None:
        f = self.frames.get(mfn)
        if f is None or not f.pinned:
            raise MmError(EINVAL, f"frame {mfn:#x} is not pinned")
        f.pinned = False
        self.put_page_and_type(mfn)

    def check(self) -> list[str]:
        """Recount every reference from the page tables and pins and compare (tests)."""
        problems = []
        counts = {m: [0, 0] for m in self.frames}
        for m, f in self.frames.items():
            if f.pinned:
                counts[m][0] += 1
                counts[m][1] += 1
            if f.type == L1 and f.type_count:
                for i in range(1024):
                    e = self.entry(m, i)
                    if e & PTE_P:
                        counts[e >> 12][0] += 1
                        counts[e >> 12][1] += bool(e & PTE_RW)
            if f.type == L2 and f.type_count:
                for i in range(HYPERVISOR_SLOT):
                    e = self.entry(m, i)
                    if e & PTE_P:
                        counts[e >> 12][0] += 1
                        counts[e >> 12][1] += 1
        for m, f in self.frames.items():
            if f.type == WRITABLE and f.type_count != counts[m][1]:
                problems.append(f"frame {m:#x}: writable type count {f.type_count}, "
                                f"mappings say {counts[m][1]}")
            if f.type in (L1, L2, WRITABLE) and f.count < counts[m][0]:
                problems.append(f"frame {m:#x}: {f.count} references, at least {counts[m][0]} held")
        return problems
