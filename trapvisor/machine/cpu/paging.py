"""Paging and the TLB: 32-bit paging (SDM Vol. 3A §4.3), and the control-register
writes that switch it or drop translations (CR0.PG/WP/PE, CR3, CR4.PSE/PGE;
SDM Vol. 3A §2.5 and §4.10.4).  In VMX non-root operation with EPT, the walk
is the EPT one of ``vmx/ept.py`` (``cpu.ept``).

``Paging`` is a mixin of :class:`~.cpu.CPU`: its methods work on the CPU's
state (``cr0``/``cr3``/``cr4``, ``paging``, the four TLB dicts in ``_tlb``,
of which ``tlb_r``/``tlb_w`` are the two for the current privilege).  The
hot paths (``rd*``/``wr*`` in ``memory_access.py``, ``CPU.fetch_block``, the
generated blocks) look the TLB up inline and call ``page_walk`` only on a
miss; the walk reads and updates the paging structures through
``phys_read32``/``phys_write32`` (``memory_access.py``).
"""

from __future__ import annotations

from .constants import (
    CR0_ET, CR0_PE, CR0_PG, CR0_WP, CR4_PGE, CR4_PSE, PDE_PS, PF_P, PF_RSVD, PF_U, PF_VEC,
    PF_W, PTE_A, PTE_D, PTE_G, PTE_P, PTE_RW, PTE_US,
)
from .cpu import CpuFault


class Paging:
    # -------------------------------------------------------------- paging
    def page_walk(self, lin: int, write: bool, user: bool) -> int:
        """Translate a linear page (32-bit paging, SDM Vol. 3A §4.3); fill the TLB.

        Returns the physical base of the 4 KiB frame.  Raises #PF with CR2 and
        the error code of SDM Vol. 3A §4.7.  A PDE that points to a page table
        gets its accessed bit when the walk uses it, even if the access then
        faults (SDM Vol. 3A §4.8; as QEMU does); the entry that maps the page
        gets accessed/dirty only when the access is allowed.  Reserved bits
        21:13 of a 4 MiB PDE (no PSE-36 here) give #PF with RSVD (§4.7).
        """
        if self.ept is not None:      # VMX non-root with EPT (vmx/ept.py)
            return self.ept.page_walk(lin, write, user)
        pde_addr = (self.cr3 & 0xFFFFF000) | ((lin >> 20) & 0xFFC)
        pde = self.phys_read32(pde_addr)
        err = (PF_W if write else 0) | (PF_U if user else 0)
        if not pde & PTE_P:
            self.cr2 = lin
            raise CpuFault(PF_VEC, err)
        wp = self.cr0 & CR0_WP
        if pde & PDE_PS and self.cr4 & CR4_PSE:
            if pde & 0x3FE000:
                self.cr2 = lin
                raise CpuFault(PF_VEC, err | PF_P | PF_RSVD)
            allowed = (not user or pde & PTE_US) and (not write or pde & PTE_RW or (not user and not wp))
            if not allowed:
                self.cr2 = lin
                raise CpuFault(PF_VEC, err | PF_P)
            new = pde | PTE_A | (PTE_D if write else 0)
            if new != pde:
                self.phys_write32(pde_addr, new)
            frame = (pde & 0xFFC00000) | (lin & 0x3FF000)
            is_global = pde & PTE_G and self.cr4 & CR4_PGE
            rw_ok = bool(pde & PTE_RW or (not user and not wp))
            dirty = bool(new & PTE_D)
        else:
            if not pde & PTE_A:
                self.phys_write32(pde_addr, pde | PTE_A)
            pte_addr = (pde & 0xFFFFF000) | ((lin >> 10) & 0xFFC)
            pte = self.phys_read32(pte_addr)
            if not pte & PTE_P:
                self.cr2 = lin
                raise CpuFault(PF_VEC, err)
            us = pde & pte & PTE_US
            rw = pde & pte & PTE_RW
            allowed = (not user or us) and (not write or rw or (not user and not wp))
            if not allowed:
                self.cr2 = lin
                raise CpuFault(PF_VEC, err | PF_P)
            new = pte | PTE_A | (PTE_D if write else 0)
            if new != pte:
                self.phys_write32(pte_addr, new)
            frame = pte & 0xFFFFF000
            is_global = pte & PTE_G and self.cr4 & CR4_PGE
            rw_ok = bool(rw or (not user and not wp))
            dirty = bool(new & PTE_D)
        page = lin >> 12
        ti = 2 if user else 0
        self._tlb[ti][page] = frame
        if rw_ok and dirty:
            self._tlb[ti + 1][page] = frame
        if is_global:
            self.tlb_global.add(page)
        return frame

    def flush_tlb(self, keep_global: bool = True) -> None:
        g = self.tlb_global if keep_global else ()
        for t in self._tlb:
            if g:
                keep = {p: f for p, f in t.items() if p in g}
                t.clear()
                t.update(keep)
            else:
                t.clear()
        if not keep_global:
            self.tlb_global.clear()

    def invlpg(self, lin: int) -> None:
        page = lin >> 12
        for t in self._tlb:
            t.pop(page, None)
        self.tlb_global.discard(page)
        hook = self.hooks.tlb_invalidated
        if hook is not None:
            hook(lin)

    def translate_lin(self, lin: int, write: bool, user: bool | None = None) -> int:
        """Linear to physical address for any access (slow path, explicit privilege)."""
        if not self.paging:
            return lin
        if user is None:
            user = self.cpl == 3
        ti = 2 if user else 0
        frame = self._tlb[ti + (1 if write else 0)].get(lin >> 12)
        if frame is None:
            frame = self.page_walk(lin, write, user)
        return frame | (lin & 0xFFF)

    # -------------------------------------------------------- control regs
    def set_cr0(self, value: int) -> None:
        old = self.cr0
        self.cr0 = value | CR0_ET
        if (old ^ self.cr0) & (CR0_PG | CR0_WP | CR0_PE):
            # With EPT every access is translated, guest paging on or off (vmx/ept.py).
            self.paging = bool(self.cr0 & CR0_PG) or self.ept is not None
            self.flush_tlb(keep_global=False)
        self.update_ac()

    def set_cr3(self, value: int) -> None:
        self.cr3 = value & 0xFFFFFFFF
        self.flush_tlb(keep_global=True)

    def set_cr4(self, value: int) -> None:
        old = self.cr4
        self.cr4 = value
        if (old ^ value) & (CR4_PSE | CR4_PGE):
            self.flush_tlb(keep_global=False)
