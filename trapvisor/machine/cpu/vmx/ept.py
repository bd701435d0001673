"""Extended page tables: guest-physical to host-physical translation (SDM Vol. 3C ch. 28).

With "enable EPT" (secondary control bit 1) every guest-physical address of
VMX non-root operation -- the guest's paging-structure entries, and the frame
its linear address maps to, or the linear address itself when the guest's
paging is off -- is translated through a 4-level EPT hierarchy (§28.2.2)
rooted at the EPT pointer (EPTP, §24.6.11):

* PML4E (bits 47:39), PDPTE (38:30; bit 7: a 1 GiB page), PDE (29:21;
  bit 7: a 2 MiB page), PTE (20:12).  Bits 2:0 of an entry are read, write,
  execute; an entry with all three clear is not present.
* An access that an entry does not allow is an **EPT violation** (§28.2.3.2),
  exit reason 48, with the exit qualification of Table 27-7 (what the
  access was, what the entry allowed, whether a guest-linear address was
  involved and whether the access was to the translation of one or to a
  guest paging-structure entry), the guest-physical address and, where there
  is one, the guest-linear address.
* A present entry that is **misconfigured** (§28.2.3.1) -- writable but not
  readable, execute-only where the processor does not support it, a
  reserved bit set (bits 51:32 here: this processor's physical addresses are
  32 bits), bit 7 in a PML4E, a leaf with memory type 2, 3 or 7 -- is exit
  reason 49, taken before any violation.
* With EPTP bit 6, the **accessed and dirty flags** (bits 8 and 9, §28.2.4)
  are set: accessed on every entry used, dirty on the leaf of a write; the
  processor's accesses to guest paging-structure entries count as writes
  for this purpose.

Instruction fetches are checked as reads: the simulated TLB does not keep
execute permission apart, so the X bit is not enforced (a known limit of
this model, docs/vtx.md).  Translations are cached in the CPU's TLB as
combined linear-to-host-physical mappings, tagged by VPID and EPTP
(``vmx/__init__.py``), and INVEPT drops them (§28.3.3).
"""

from __future__ import annotations

from ..constants import (
    CR0_WP, CR4_PGE, CR4_PSE, PDE_PS, PF_P, PF_RSVD, PF_U, PF_VEC, PF_W, PTE_A, PTE_D, PTE_G,
    PTE_P, PTE_RW, PTE_US,
)
from ..cpu import CpuFault, ExitFault
from ..exits import EptMisconfigExit, EptViolationExit

EPT_READ, EPT_WRITE, EPT_EXEC = 1, 2, 4
EPT_LARGE = 1 << 7
EPT_ACCESSED, EPT_DIRTY = 1 << 8, 1 << 9
EPT_RESERVED_HIGH = ((1 << 52) - 1) & ~((1 << 32) - 1)     # bits 51:32 (MAXPHYADDR 32)
EPTP_AD = 1 << 6

# Exit qualification of an EPT violation (Table 27-7).
Q_READ, Q_WRITE, Q_FETCH = 1 << 0, 1 << 1, 1 << 2
Q_LINEAR_VALID = 1 << 7
Q_TRANSLATION = 1 << 8      # the access was to the translation of a linear address


def eptp_valid(eptp: int, cap: int) -> bool:
    """The EPTP checks of VM entry (§26.2.1.1): memory type UC or WB as supported,
    page-walk length 4, A/D only where supported, reserved bits 11:7 and 63:32 clear."""
    from .capabilities import EPT_CAP_AD, EPT_CAP_UC, EPT_CAP_WB
    mt = eptp & 7
    if not (mt == 0 and cap & EPT_CAP_UC or mt == 6 and cap & EPT_CAP_WB):
        return False
    if (eptp >> 3) & 7 != 3:
        return False
    if eptp & EPTP_AD and not cap & EPT_CAP_AD:
        return False
    return not eptp & 0xF80 and not eptp >> 32


class Ept:
    """The EPT of the current VMCS, bound to one CPU in non-root operation."""

    def __init__(self, cpu, eptp: int):
        self.cpu = cpu
        self.eptp = eptp
        self.root = eptp & 0xFFFFF000
        self.ad = bool(eptp & EPTP_AD)

    # -- the EPT walk ---------------------------------------------------------------
    def translate(self, gpa: int, access: int, linear: int | None = None,
                  translation: bool = True) -> tuple[int, int]:
        """Host-physical address of ``gpa`` for an access of kind ``access``
        (EPT_READ/WRITE/EXEC bits), and the permissions the walk allowed.
        Raises the EPT violation or misconfiguration as an exit (the instruction is
        not executed: its stores come after its translations)."""
        cpu = self.cpu
        cpu.vmx.ept_walks += 1       # statistics: the cost model charges each walk
        table = self.root
        allowed = EPT_READ | EPT_WRITE | EPT_EXEC
        used = []
        for level, shift in ((4, 39), (3, 30), (2, 21), (1, 12)):
            addr = table | ((gpa >> shift) & 0x1FF) * 8
            entry = cpu.phys_read(addr, 4) | cpu.phys_read(addr + 4, 4) << 32
            perm = entry & 7
            if not perm:
                raise ExitFault(EptViolationExit(gpa, self._qualification(access, allowed & 0, linear,
                                                                          translation), linear))
            leaf = level == 1 or (level in (2, 3) and entry & EPT_LARGE)
            self._check_misconfig(gpa, entry, level, leaf)
            allowed &= perm
            used.append((addr, entry, leaf))
            if leaf:
                size_shift = shift
                break
            table = entry & 0xFFFFF000
        if access & ~allowed & 3 or (access & EPT_WRITE and not allowed & EPT_WRITE):
            raise ExitFault(EptViolationExit(gpa, self._qualification(access, allowed, linear, translation),
                                             linear))
        if self.ad:
            for addr, entry, leaf in used:
                new = entry | EPT_ACCESSED | (EPT_DIRTY if leaf and access & EPT_WRITE else 0)
                if new != entry:
                    cpu.phys_write(addr, 4, new & 0xFFFFFFFF)
        addr, entry, _ = used[-1]
        page_mask = (1 << size_shift) - 1
        hpa = (entry & 0xFFFFF000 & ~page_mask) | (gpa & page_mask)
        if self.ad and not entry & EPT_DIRTY and not access & EPT_WRITE:
            allowed &= ~EPT_WRITE       # the first write must come back to set the dirty flag
        return hpa & 0xFFFFFFFF, allowed

    def _check_misconfig(self, gpa: int, entry: int, level: int, leaf: bool) -> None:
        perm = entry & 7
        bad = perm in (2, 6) or perm == 4          # W without R; execute-only (not supported)
        bad = bad or entry & EPT_RESERVED_HIGH
        if level == 4:
            bad = bad or entry & 0xF8              # PML4E bits 7:3 reserved
        elif not leaf:
            bad = bad or entry & 0x78              # bits 6:3 of a non-leaf entry reserved
        else:
            bad = bad or (entry >> 3) & 7 in (2, 3, 7)
            if level == 3:
                bad = bad or entry & 0x3FFFF000    # 1 GiB page: bits 29:12 reserved
            elif level == 2:
                bad = bad or entry & 0x1FF000      # 2 MiB page: bits 20:12 reserved
        if bad:
            raise ExitFault(EptMisconfigExit(gpa))

    @staticmethod
    def _qualification(access: int, allowed: int, linear, translation: bool) -> int:
        q = (Q_READ if access & EPT_READ and not access & EPT_WRITE else 0) \
            | (Q_WRITE if access & EPT_WRITE else 0) | (Q_FETCH if access & EPT_EXEC else 0)
        q |= (allowed & 7) << 3
        if linear is not None:
            q |= Q_LINEAR_VALID | (Q_TRANSLATION if translation else 0)
        return q

    # -- guest paging through EPT ----------------------------------------------------
    def _read32(self, gpa: int, lin: int) -> tuple[int, int]:
        # Accesses to guest paging-structure entries count as writes for A/D (§28.2.4).
        hpa, _ = self.translate(gpa, EPT_READ | (EPT_WRITE if self.ad else 0), lin, translation=False)
        return self.cpu.phys_read(hpa, 4), hpa

    def _write32(self, gpa: int, hpa: int, value: int, lin: int) -> None:
        if not self.ad:
            hpa, _ = self.translate(gpa, EPT_WRITE, lin, translation=False)
        self.cpu.phys_write32(hpa, value)

    def page_walk(self, lin: int, write: bool, user: bool) -> int:
        """The guest's 32-bit paging walk (SDM Vol. 3A §4.3, as ``Paging.page_walk``)
        with every guest-physical address translated through EPT; fills the TLB
        with the combined mapping and returns the host-physical frame."""
        cpu = self.cpu
        ti = 2 if user else 0
        page = lin >> 12
        if not cpu.cr0 & 0x80000000:      # guest paging off: linear = guest-physical
            hpa, allowed = self.translate(lin & ~0xFFF, EPT_WRITE if write else EPT_READ, lin)
            cpu._tlb[ti][page] = hpa
            if allowed & EPT_WRITE:
                cpu._tlb[ti + 1][page] = hpa
            return hpa
        pde_gpa = (cpu.cr3 & 0xFFFFF000) | ((lin >> 20) & 0xFFC)
        pde, pde_hpa = self._read32(pde_gpa, lin)
        err = (PF_W if write else 0) | (PF_U if user else 0)
        if not pde & PTE_P:
            cpu.cr2 = lin
            raise CpuFault(PF_VEC, err)
        wp = cpu.cr0 & CR0_WP
        if pde & PDE_PS and cpu.cr4 & CR4_PSE:
            if pde & 0x3FE000:
                cpu.cr2 = lin
                raise CpuFault(PF_VEC, err | PF_P | PF_RSVD)
            if not ((not user or pde & PTE_US) and (not write or pde & PTE_RW or (not user and not wp))):
                cpu.cr2 = lin
                raise CpuFault(PF_VEC, err | PF_P)
            gframe = (pde & 0xFFC00000) | (lin & 0x3FF000)
            hframe, allowed = self.translate(gframe, EPT_WRITE if write else EPT_READ, lin)
            new = pde | PTE_A | (PTE_D if write else 0)
            if new != pde:
                self._write32(pde_gpa, pde_hpa, new, lin)
            entry, rw = new, pde & PTE_RW
        else:
            if not pde & PTE_A:
                self._write32(pde_gpa, pde_hpa, pde | PTE_A, lin)
            pte_gpa = (pde & 0xFFFFF000) | ((lin >> 10) & 0xFFC)
            pte, pte_hpa = self._read32(pte_gpa, lin)
            if not pte & PTE_P:
                cpu.cr2 = lin
                raise CpuFault(PF_VEC, err)
            us, rw = pde & pte & PTE_US, pde & pte & PTE_RW
            if not ((not user or us) and (not write or rw or (not user and not wp))):
                cpu.cr2 = lin
                raise CpuFault(PF_VEC, err | PF_P)
            hframe, allowed = self.translate(pte & 0xFFFFF000, EPT_WRITE if write else EPT_READ, lin)
            new = pte | PTE_A | (PTE_D if write else 0)
            if new != pte:
                self._write32(pte_gpa, pte_hpa, new, lin)
            entry = new
        cpu._tlb[ti][page] = hframe
        if (rw or (not user and not wp)) and entry & PTE_D and allowed & EPT_WRITE:
            cpu._tlb[ti + 1][page] = hframe
        if entry & PTE_G and cpu.cr4 & CR4_PGE:
            cpu.tlb_global.add(page)
        return hframe
