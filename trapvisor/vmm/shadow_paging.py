"""Shadow page tables: the page tables the host CPU really walks.

The guest's page tables map guest-linear to guest-physical addresses; the
host needs guest-linear to host-physical.  The monitor keeps a *shadow* page
directory and shadow page tables in its own region, filled lazily:

* a host page fault on a linear page the shadow does not map yet is a
  *hidden* fault: the monitor walks the guest's tables (on the virtual CPU,
  which sets the guest's accessed and dirty bits exactly as hardware would),
  and either installs the translation (partition base + guest frame) or, if
  the guest's own tables forbid the access, reflects #PF into the guest with
  the guest's CR2 and error code;
* a page is mapped writable in the shadow only once the guest's dirty bit is
  set, so the first write to each page faults and sets it;
* the guest's page directories and page tables (and its GDT) are *traced*:
  mapped read-only in every shadow, so every guest store into them traps; the
  monitor performs the store on the virtual CPU and drops the shadow entries
  derived from what changed, in every shadow that derived any;
* INVLPG discards one entry.

**One shadow per guest address space, cached.**  A shadow is a cache of one
guest page directory (``ShadowSpace``).  A guest CR3 load switches the host
to the shadow kept for that directory, building a new one only for a
directory not seen recently: up to ``cache_size`` shadows are kept, least
recently used first out (``cache_size=1`` is the naive monitor that
rebuilds the shadow on every context switch).  The cache is exact because
tracing does not depend on which space is current: a store into any guest
page table is seen and propagated to every shadow derived from it, so a
shadow taken back from the cache holds nothing the guest has since changed.
This is the design VMware's monitor used for its shadow page tables (Adams
& Agesen, ASPLOS 2006, on the cost of context switches under a software
MMU).  A store into the page directory of
a space that is not current drops that whole space (the guest is likely
recycling the frame), and a change of CR0.PG/WP or CR4.PSE/PGE, which
changes how every guest table is read, drops them all.

The monitor region and other VMs' partitions never appear in a shadow table:
a shadow can only ever map frames of this VM's partition.  Frames beyond
the guest's RAM are MMIO: accesses to them are emulated on the virtual CPU,
whose physical accesses reach the VM's MMIO bus.
"""

from __future__ import annotations

from collections import OrderedDict

from ..machine.cpu.constants import (
    CR0_PG, CR4_PSE, PDE_PS, PF_VEC, PTE_D, PTE_P, PTE_RW, PTE_US,
)
from ..machine.cpu.cpu import CpuFault, MachineStop
from .allocator import HOST_PHYSICAL_LIMIT, MONITOR_REGION, MONITOR_WINDOW

FILLED, REFLECTED, EMULATE = "filled", "reflected", "emulate"
DEFAULT_CACHE_SIZE = 8
GDT_TAG = ("gdt",)
# A guest frame holding code a binary translator has translated (techniques/bt): its
# stores are the technique's to handle (the translations from it are dropped).
CODE_TAG = ("code",)


class ShadowSpace:
    """The shadow of one guest address space: a shadow page directory and its tables."""

    def __init__(self, sid: int, key, pd: int):
        self.sid = sid                       # names this space in the trace tags
        self.key = key                       # the guest CR3 it shadows (None: paging off)
        self.pd = pd                         # host frame of the shadow page directory
        self.pts: dict[int, int] = {}        # pd index -> shadow page-table frame
        self.rmap: dict[int, set] = {}       # guest frame -> linear pages mapping it
        self.traced: set[int] = set()        # guest frames traced on this space's behalf


class ShadowPaging:
    def __init__(self, allocator, host_cpu, vm, cache_size: int = DEFAULT_CACHE_SIZE):
        if cache_size < 1:
            raise ValueError("the shadow cache holds at least the current address space")
        self.alloc = allocator
        self.host = host_cpu
        self.vm = vm
        self.vcpu = vm.vcpu
        self.mem = allocator.host
        self.base = vm.partition.base
        self.guest_size = vm.partition.size
        self.cache_size = cache_size
        # One page table, shared by every shadow, maps the monitor window onto the
        # monitor region (supervisor, read-write: the host CPU's own table accesses).
        # Its first page (unused by the monitor) stays unmapped: a guard page, so an
        # instruction that starts just below the window and runs into it faults
        # (and is emulated) instead of being decoded from monitor bytes.
        self.window_pt = allocator.alloc_frame()
        for i in range(1, MONITOR_REGION >> 12):
            self.mem.write_u32(self.window_pt + 4 * i, (i << 12) | PTE_P | PTE_RW)
        self.spaces: OrderedDict = OrderedDict()   # key -> ShadowSpace, least recently used first
        self.space: ShadowSpace | None = None      # the one the host CPU walks
        self.next_sid = 0
        # guest frame -> {("pd", sid), ("pt", sid, j), ("gdt",)}
        self.traced: dict[int, set] = {}
        self.fills = self.updates = self.flushes = 0
        self.switches = self.cache_hits = self.evictions = 0
        self.guest_error = 0
        self.last_gpa = None

    # The current space's tables (the host CPU's CR3 is always ``pd``).
    @property
    def pd(self) -> int | None:
        return self.space.pd if self.space is not None else None

    @property
    def pts(self) -> dict:
        return self.space.pts

    # -- address spaces -------------------------------------------------------
    def reset(self) -> None:
        """Discard every shadow (paging mode change, monitor pool dry) and start afresh."""
        for space in list(self.spaces.values()):
            self._drop(space)
        self.flushes += 1
        self._activate(self._new_space(self._guest_key()))

    def switch(self) -> bool:
        """Guest CR3 load: walk the shadow of the new directory.  True if it was cached."""
        self.switches += 1
        key = self._guest_key()
        space = self.spaces.get(key)
        if space is not None:
            self.spaces.move_to_end(key)
            self.cache_hits += 1
            self._activate(space)
            return True
        self.space = None               # the old space is now one of the cached ones
        while len(self.spaces) >= self.cache_size and self._evict_oldest():
            pass
        while not self.alloc.can_alloc_frame() and self._evict_oldest():
            pass
        self.flushes += 1
        self._activate(self._new_space(key))
        return False

    def enter(self) -> None:
        """World switch: the host CPU walks this VM's current shadow again."""
        self._activate(self.space)

    def _guest_key(self):
        vcpu = self.vcpu
        return vcpu.cr3 & 0xFFFFF000 if vcpu.cr0 & CR0_PG else None

    def _new_space(self, key) -> ShadowSpace:
        space = ShadowSpace(self.next_sid, key, self.alloc.alloc_frame())
        self.next_sid += 1
        self.mem.write_u32(space.pd + 4 * (MONITOR_WINDOW >> 22), self.window_pt | PTE_P | PTE_RW)
        self.spaces[key] = space
        return space

    def _activate(self, space: ShadowSpace) -> None:
        self.space = space
        self.host.set_cr3(space.pd)
        self.host.flush_tlb(keep_global=False)

    def _evict_oldest(self) -> bool:
        for space in self.spaces.values():
            if space is not self.space:
                self._drop(space)
                self.evictions += 1
                return True
        return False

    def _drop(self, space: ShadowSpace) -> None:
        """Free a space's frames and forget the tracing done on its behalf."""
        for f in space.pts.values():
            self.alloc.free_frame(f)
        self.alloc.free_frame(space.pd)
        sid = space.sid
        for frame in space.traced:
            tags = self.traced.get(frame)
            if tags is None:
                continue
            tags.difference_update([t for t in tags if len(t) > 1 and t[1] == sid])
            if not tags:
                # Other shadows may still map the frame read-only: harmless, their
                # next write to it faults once and is mapped writable.
                del self.traced[frame]
        del self.spaces[space.key]
        if self.space is space:
            self.space = None

    def _space_by_sid(self, sid: int) -> ShadowSpace | None:
        for space in self.spaces.values():
            if space.sid == sid:
                return space
        return None

    # -- entries ----------------------------------------------------------------
    def _pte_addr(self, space: ShadowSpace, lin: int, create: bool) -> int | None:
        j = lin >> 22
        pt = space.pts.get(j)
        if pt is None:
            if not create:
                return None
            pt = self.alloc.alloc_frame()
            space.pts[j] = pt
            # The shadow PDE allows everything; the shadow PTE carries the rights.
            self.mem.write_u32(space.pd + 4 * j, pt | PTE_P | PTE_RW | PTE_US)
        return pt + 4 * ((lin >> 12) & 0x3FF)

    def map_page(self, lin: int, gframe: int, user: bool, writable: bool) -> None:
        space = self.space
        hframe = self.base + gframe
        if not 0 <= gframe < self.guest_size or hframe >= HOST_PHYSICAL_LIMIT:
            # Never reached from handle_fault (it checks gframe first): the allocator's
            # own guard that no shadow entry names a frame outside the VM's partition.
            raise MachineStop("monitor error", f"shadow entry for guest frame {gframe:#x} outside "
                                                f"the {self.guest_size >> 20} MiB partition")
        addr = self._pte_addr(space, lin, True)
        self.mem.write_u32(addr, hframe | PTE_P | (PTE_RW if writable else 0) | (PTE_US if user else 0))
        space.rmap.setdefault(gframe, set()).add(lin >> 12)
        self.host.invlpg(lin)

    def _unmap(self, space: ShadowSpace, lin: int) -> None:
        addr = self._pte_addr(space, lin, False)
        if addr is not None:
            self.mem.write_u32(addr, 0)
        if space is self.space:
            self.host.invlpg(lin)

    def unmap_page(self, lin: int) -> None:
        self._unmap(self.space, lin)

    def invalidate_page(self, lin: int) -> None:
        """Guest INVLPG: forget the shadow translation of one page.

        Only the current space: the guest's TLB holds nothing of the others
        (tracing already dropped whatever changed in their tables)."""
        self.unmap_page(lin & 0xFFFFF000)

    # -- tracing guest tables -----------------------------------------------
    def trace(self, gframe: int, tag: tuple) -> None:
        tags = self.traced.setdefault(gframe, set())
        if tag in tags:
            return
        tags.add(tag)
        if len(tag) > 1:              # ("pd", sid), ("pt", sid, j): on one space's behalf
            self._space_by_sid(tag[1]).traced.add(gframe)
        # Existing writable mappings of the frame, in every shadow, become read-only:
        # a page table may be written through any address space (the kernel half).
        for space in self.spaces.values():
            for page in list(space.rmap.get(gframe, ())):
                addr = self._pte_addr(space, page << 12, False)
                if addr is None:
                    continue
                pte = self.mem.read_u32(addr)
                if pte & PTE_P and (pte & 0xFFFFF000) == self.base + gframe and pte & PTE_RW:
                    self.mem.write_u32(addr, pte & ~PTE_RW)
                    if space is self.space:
                        self.host.invlpg(page << 12)

    def untrace(self, gframe: int, tag: tuple) -> None:
        """Stop tracing a frame on one tag's behalf.  Its read-only mappings stay: the
        next store through one faults once and is mapped writable (handle_fault)."""
        tags = self.traced.get(gframe)
        if tags is None:
            return
        tags.discard(tag)
        if not tags:
            del self.traced[gframe]

    def traced_write(self, gpa: int) -> None:
        """A guest store into a traced frame was performed: propagate it to every shadow."""
        gframe = gpa & ~0xFFF
        index = (gpa & 0xFFF) >> 2
        for tag in list(self.traced.get(gframe, ())):
            if tag == CODE_TAG:
                continue              # the translator's (it dropped what it translated from there)
            if tag == GDT_TAG:
                self.vm_shadow_gdt_changed()
                self.updates += 1
                continue
            space = self._space_by_sid(tag[1])
            if space is None:
                continue
            if tag[0] == "pd":
                if space is not self.space:
                    # The directory of an address space not running now: the guest
                    # is tearing it down or reusing the frame; keep no shadow of it.
                    self._drop(space)
                    self.evictions += 1
                    continue
                # A page-directory entry changed: drop the shadow page table it fed.
                for j in (index, index + 1):
                    pt = space.pts.pop(j, None)
                    if pt is not None:
                        self.mem.write_u32(space.pd + 4 * j, 0)
                        self.alloc.free_frame(pt)
                self.host.flush_tlb(keep_global=False)
            else:
                j = tag[2]
                for k in (index, index + 1):
                    if k < 1024:
                        self._unmap(space, (j << 22) | (k << 12))
            self.updates += 1

    def vm_shadow_gdt_changed(self) -> None:   # set by the technique
        pass

    # -- the hidden page fault -------------------------------------------------
    def handle_fault(self, lin: int, write: bool) -> str:
        """A host #PF at ``lin``: fill the shadow, reflect to the guest, or ask for emulation."""
        vcpu = self.vcpu
        user = vcpu.cpl == 3
        self.last_gpa = None
        if lin >= MONITOR_WINDOW:
            return EMULATE          # the guest's own mapping under the monitor window
        if not vcpu.cr0 & CR0_PG:
            gframe = lin & ~0xFFF
            us = rw = True
            tables = ()
        else:
            try:
                vcpu.page_walk(lin, write, user)      # sets the guest's A/D bits, or raises the guest's #PF
            except CpuFault as f:
                if f.vector != PF_VEC:
                    raise
                self.guest_error = f.error_code   # the guest's own #PF: the monitor reflects it
                return REFLECTED
            gframe, us, rw, dirty, tables = self.guest_mapping(lin)
            if not dirty:
                rw = False          # map read-only until the guest's dirty bit is set
        self.last_gpa = gframe | (lin & 0xFFF)
        if gframe >= self.guest_size:
            return EMULATE          # MMIO (local/IO APIC) or a hole: the virtual CPU does the access
        if (lin >> 22) not in self.space.pts:
            # A guest can make the monitor build one shadow page table per 4 MiB it
            # touches, more than the pool holds.  Shadows are only caches of the
            # guest's tables: give up the other address spaces' first, then start
            # this one afresh, rather than run out of monitor memory.
            while not self.alloc.can_alloc_frame() and self._evict_oldest():
                pass
            if not self.alloc.can_alloc_frame():
                self.reset()
        sid = self.space.sid
        for frame, kind in tables:
            self.trace(frame, (kind, sid) if kind == "pd" else ("pt", sid, lin >> 22))
        if gframe in self.traced and write:
            return EMULATE          # a store into a guest page table or GDT
        if write and not rw:
            return EMULATE          # e.g. a supervisor write with the guest's CR0.WP=0
        self.map_page(lin, gframe, us, rw and gframe not in self.traced)
        self.fills += 1
        return FILLED

    def guest_mapping(self, lin: int):
        """(guest frame, user ok, write ok, dirty, [(table frame, "pd" or "pt")]) for a present mapping."""
        vcpu = self.vcpu
        pd = vcpu.cr3 & 0xFFFFF000
        j = lin >> 22
        pde = vcpu.phys_read32(pd + 4 * j)
        if pde & PDE_PS and vcpu.cr4 & CR4_PSE:
            gframe = (pde & 0xFFC00000) | (lin & 0x3FF000)
            return gframe, bool(pde & PTE_US), bool(pde & PTE_RW), bool(pde & PTE_D), [(pd, "pd")]
        pt = pde & 0xFFFFF000
        pte = vcpu.phys_read32(pt + 4 * ((lin >> 12) & 0x3FF))
        us = bool(pde & pte & PTE_US)
        rw = bool(pde & pte & PTE_RW)
        return pte & 0xFFFFF000, us, rw, bool(pte & PTE_D), [(pd, "pd"), (pt, "pt")]
