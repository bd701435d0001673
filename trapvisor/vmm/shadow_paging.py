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
* the guest's page directory and page tables (and its GDT) are *traced*:
  mapped read-only in the shadow, so every guest store into them traps; the
  monitor performs the store on the virtual CPU and drops the shadow entries
  derived from what changed;
* a guest CR3 load, a change of CR0.PG/WP or CR4.PSE/PGE discards the whole
  shadow; INVLPG discards one entry.

The monitor region and other VMs' partitions never appear in a shadow table:
the shadow can only ever map frames of this VM's partition.  Frames beyond
the guest's RAM are MMIO: accesses to them are emulated on the virtual CPU,
whose physical accesses reach the VM's MMIO bus.
"""

from __future__ import annotations

from ..machine.cpu.constants import (
    CR0_PG, CR4_PSE, PDE_PS, PF_VEC, PTE_D, PTE_P, PTE_RW, PTE_US,
)
from ..machine.cpu.cpu import CpuFault
from .allocator import MONITOR_REGION, MONITOR_WINDOW

FILLED, REFLECTED, EMULATE = "filled", "reflected", "emulate"


class ShadowPaging:
    def __init__(self, allocator, host_cpu, vm):
        self.alloc = allocator
        self.host = host_cpu
        self.vm = vm
        self.vcpu = vm.vcpu
        self.mem = allocator.host
        self.base = vm.partition.base
        self.guest_size = vm.partition.size
        self.pd = None
        # One page table, shared by every shadow, maps the monitor window onto the
        # monitor region (supervisor, read-write: the host CPU's own table accesses).
        # Its first page (unused by the monitor) stays unmapped: a guard page, so an
        # instruction that starts just below the window and runs into it faults
        # (and is emulated) instead of being decoded from monitor bytes.
        self.window_pt = allocator.alloc_frame()
        for i in range(1, MONITOR_REGION >> 12):
            self.mem.write_u32(self.window_pt + 4 * i, (i << 12) | PTE_P | PTE_RW)
        self.pts: dict[int, int] = {}            # pd index -> shadow page-table frame
        self.traced: dict[int, set] = {}         # guest frame -> {("pd",), ("pt", j), ("gdt",)}
        self.rmap: dict[int, set] = {}           # guest frame -> linear pages mapping it
        self.fills = self.updates = self.flushes = 0
        self.guest_error = 0
        self.last_gpa = None

    # -- whole-table operations ---------------------------------------------
    def reset(self) -> None:
        """Discard every shadow entry (guest CR3 load, paging mode change)."""
        for f in self.pts.values():
            self.alloc.free_frame(f)
        self.pts.clear()
        self.rmap.clear()
        gdt_frames = {f for f, tags in self.traced.items() if ("gdt",) in tags}
        self.traced = {f: {("gdt",)} for f in gdt_frames}
        if self.pd is None:
            self.pd = self.alloc.alloc_frame()
        else:
            self.mem.ram[self.pd:self.pd + 4096] = bytes(4096)
        self.mem.write_u32(self.pd + 4 * (MONITOR_WINDOW >> 22), self.window_pt | PTE_P | PTE_RW)
        self.host.set_cr3(self.pd)
        self.host.flush_tlb(keep_global=False)
        self.flushes += 1

    def _pte_addr(self, lin: int, create: bool) -> int | None:
        j = lin >> 22
        pt = self.pts.get(j)
        if pt is None:
            if not create:
                return None
            pt = self.alloc.alloc_frame()
            self.pts[j] = pt
            # The shadow PDE allows everything; the shadow PTE carries the rights.
            self.mem.write_u32(self.pd + 4 * j, pt | PTE_P | PTE_RW | PTE_US)
        return pt + 4 * ((lin >> 12) & 0x3FF)

    def map_page(self, lin: int, gframe: int, user: bool, writable: bool) -> None:
        addr = self._pte_addr(lin, True)
        hframe = self.base + gframe
        self.mem.write_u32(addr, hframe | PTE_P | (PTE_RW if writable else 0) | (PTE_US if user else 0))
        self.rmap.setdefault(gframe, set()).add(lin >> 12)
        self.host.invlpg(lin)

    def unmap_page(self, lin: int) -> None:
        addr = self._pte_addr(lin, False)
        if addr is not None:
            self.mem.write_u32(addr, 0)
        self.host.invlpg(lin)

    def invalidate_page(self, lin: int) -> None:
        """Guest INVLPG: forget the shadow translation of one page."""
        self.unmap_page(lin & 0xFFFFF000)

    # -- tracing guest tables -----------------------------------------------
    def trace(self, gframe: int, tag: tuple) -> None:
        tags = self.traced.setdefault(gframe, set())
        if tag in tags:
            return
        tags.add(tag)
        # Existing writable mappings of the frame must become read-only.
        for page in list(self.rmap.get(gframe, ())):
            addr = self._pte_addr(page << 12, False)
            if addr is None:
                continue
            pte = self.mem.read_u32(addr)
            if pte & PTE_P and (pte & 0xFFFFF000) == self.base + gframe and pte & PTE_RW:
                self.mem.write_u32(addr, pte & ~PTE_RW)
                self.host.invlpg(page << 12)

    def traced_write(self, gpa: int) -> None:
        """A guest store into a traced frame was performed: propagate it."""
        gframe = gpa & ~0xFFF
        index = (gpa & 0xFFF) >> 2
        for tag in list(self.traced.get(gframe, ())):
            if tag[0] == "pd":
                # A page-directory entry changed: drop the shadow page table it fed.
                for j in (index, index + 1):
                    pt = self.pts.pop(j, None)
                    if pt is not None:
                        self.mem.write_u32(self.pd + 4 * j, 0)
                        self.alloc.free_frame(pt)
                self.host.flush_tlb(keep_global=False)
            elif tag[0] == "pt":
                j = tag[1]
                for k in (index, index + 1):
                    if k < 1024:
                        self.unmap_page((j << 22) | (k << 12))
            elif tag[0] == "gdt":
                self.vm_shadow_gdt_changed()
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
        if (lin >> 22) not in self.pts and not self.alloc.can_alloc_frame():
            # A guest can make the monitor build one shadow page table per 4 MiB it
            # touches, more than the pool holds.  The shadow is only a cache of the
            # guest's tables: start it afresh rather than run out of monitor memory.
            self.reset()
        for frame, tag in tables:
            self.trace(frame, tag)
        if gframe in self.traced and write:
            return EMULATE          # a store into a guest page table or GDT
        if write and not rw:
            return EMULATE          # e.g. a supervisor write with the guest's CR0.WP=0
        self.map_page(lin, gframe, us, rw and gframe not in self.traced)
        self.fills += 1
        return FILLED

    def guest_mapping(self, lin: int):
        """(guest frame, user ok, write ok, dirty, [(table frame, tag)]) for a present mapping."""
        vcpu = self.vcpu
        pd = vcpu.cr3 & 0xFFFFF000
        j = lin >> 22
        pde = vcpu.phys_read32(pd + 4 * j)
        if pde & PDE_PS and vcpu.cr4 & CR4_PSE:
            gframe = (pde & 0xFFC00000) | (lin & 0x3FF000)
            return gframe, bool(pde & PTE_US), bool(pde & PTE_RW), bool(pde & PTE_D), [(pd, ("pd",))]
        pt = pde & 0xFFFFF000
        pte = vcpu.phys_read32(pt + 4 * ((lin >> 12) & 0x3FF))
        us = bool(pde & pte & PTE_US)
        rw = bool(pde & pte & PTE_RW)
        return pte & 0xFFFFF000, us, rw, bool(pte & PTE_D), [(pd, ("pd",)), (pt, ("pt", j))]
