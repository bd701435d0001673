"""Memory access: segment checks, linear and physical reads and writes, the stack.

The data-access hot path of the closure tier: ``rd8``/``rd16``/``rd32`` and
``wr8``/``wr16``/``wr32`` do segment + paging + RAM in a few lines each.  They
are written densely on purpose (no helper calls on the fast path): a base-0
segment whose limit admits the access (``rlim``/``wlim``, set by
``CPU.set_segment_cache``) skips ``seg_lin``, a TLB hit skips ``page_walk``,
and RAM is indexed directly; anything else (the segment checks of SDM Vol. 3A
§5.3-5.5, a TLB miss, an access that crosses a page, MMIO, a store into a
page that holds decoded code) takes the slow path.

``MemoryAccess`` is a mixin of :class:`~.cpu.CPU`.  Implicit supervisor
accesses (descriptor tables, the TSS: SDM Vol. 3A §4.6.1) go through
``sys_read``/``sys_write``; PUSH and POP through ``push*``/``pop*``, which
use SP or ESP as SS.B says (SDM Vol. 3A §3.4.5).
"""

from __future__ import annotations

import struct

from .constants import AC_VEC, CR0_PE, CS, GP, SS, SS_VEC
from .cpu import CpuFault, ExitFault
from .exits import MmioExit

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
U16, U32 = _U16.unpack_from, _U32.unpack_from
P16, P32 = _U16.pack_into, _U32.pack_into


class MemoryAccess:
    # ------------------------------------------------------------ segments
    def seg_lin(self, s: int, off: int, size: int, write: bool) -> int:
        """Segment checks (SDM Vol. 3A §5.3-5.5) for a non-flat access; returns the linear address."""
        attr = self.attr[s]
        vec = SS_VEC if s == SS else GP
        if not attr & 0x80 or (self.sel[s] & ~3 == 0 and s != CS and self.cr0 & CR0_PE):
            raise CpuFault(vec, 0)
        typ = attr & 0x1F
        if write:
            if typ & 0x18 != 0x10 or not typ & 2:
                raise CpuFault(vec, 0)
        elif typ & 0x18 == 0x18 and not typ & 2:
            raise CpuFault(vec, 0)
        last = off + size - 1
        limit = self.limit[s]
        if typ & 0x1C == 0x14:     # expand-down data: valid offsets are (limit, upper]
            upper = 0xFFFFFFFF if attr & 0x4000 else 0xFFFF
            if off <= limit or last > upper:
                raise CpuFault(vec, 0)
        elif last > limit:
            raise CpuFault(vec, 0)
        lin = (self.base[s] + off) & 0xFFFFFFFF
        if self.ac_on and lin & (size - 1) and s != CS:
            raise CpuFault(AC_VEC, 0)     # misaligned data access (update_ac)
        if self.bp_data:                  # data breakpoints: a #DB trap after the instruction
            last = lin + size - 1
            for n, lo, hi, write_only in self.bp_data:
                if lin <= hi and last >= lo and (write or not write_only):
                    self.bp_hits |= 1 << n
        if self.dbg_watch and self.dbg_hit is None:   # the host debugger's (CPU.debug_step)
            last = lin + size - 1
            for lo, hi, kind in self.dbg_watch:
                if lin <= hi and last >= lo and (kind == "access" or (kind == "write") == write):
                    self.dbg_hit = (max(lin, lo), kind)
                    break
        return lin

    # ------------------------------------------------- physical memory access
    def phys_read32(self, pa: int) -> int:
        if pa + 4 <= self.ram_size:
            return U32(self.ram, pa)[0]
        return self.phys_read(pa, 4)

    def phys_write32(self, pa: int, v: int) -> None:
        if pa + 4 <= self.ram_size:
            if self.code_pages[pa >> 12]:
                self.invalidate_code_page(pa >> 12)
            P32(self.ram, pa, v)
        else:
            self.phys_write(pa, 4, v)

    def phys_read(self, pa: int, size: int) -> int:
        if pa + size <= self.ram_size:
            return int.from_bytes(self.ram[pa:pa + size], "little")
        if self.intercepts.mmio_exiting and pa >= self.ram_size:
            raise ExitFault(MmioExit(pa, size, False))
        if self.mmio_bus is not None and pa >= self.ram_size:
            return self.mmio_bus.read(pa, size)
        return (1 << (8 * size)) - 1

    def phys_write(self, pa: int, size: int, v: int) -> None:
        if pa + size <= self.ram_size:
            for p in {pa >> 12, (pa + size - 1) >> 12}:
                if self.code_pages[p]:
                    self.invalidate_code_page(p)
            self.ram[pa:pa + size] = (v & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        elif self.intercepts.mmio_exiting and pa >= self.ram_size:
            raise ExitFault(MmioExit(pa, size, True, v & ((1 << (8 * size)) - 1)))
        elif self.mmio_bus is not None and pa >= self.ram_size:
            self.mmio_bus.write(pa, size, v)

    # ------------------------------------------------- linear memory access
    def lin_read(self, lin: int, size: int, user: bool | None = None) -> int:
        """Read at a linear address; handles page-crossing accesses byte-exactly."""
        if (lin & 0xFFF) + size > 0x1000:
            # Translate both pages before touching either (no partial effects).
            first = 0x1000 - (lin & 0xFFF)
            pa1 = self.translate_lin(lin, False, user)
            pa2 = self.translate_lin((lin + first) & 0xFFFFFFFF, False, user)
            lo = self.phys_read(pa1, first)
            hi = self.phys_read(pa2, size - first)
            return lo | (hi << (8 * first))
        return self.phys_read(self.translate_lin(lin, False, user), size)

    def lin_write(self, lin: int, size: int, v: int, user: bool | None = None) -> None:
        if (lin & 0xFFF) + size > 0x1000:
            first = 0x1000 - (lin & 0xFFF)
            pa1 = self.translate_lin(lin, True, user)
            pa2 = self.translate_lin((lin + first) & 0xFFFFFFFF, True, user)
            self.phys_write(pa1, first, v & ((1 << (8 * first)) - 1))
            self.phys_write(pa2, size - first, v >> (8 * first))
            return
        self.phys_write(self.translate_lin(lin, True, user), size, v)

    # Hot path: segment + paging + RAM for the three operand sizes.
    def rd8(self, s, off):
        lin = off if off <= self.rlim[s] else self.seg_lin(s, off, 1, False)
        if self.paging:
            f = self.tlb_r.get(lin >> 12)
            if f is None:
                f = self.page_walk(lin, False, self.cpl == 3)
            lin = f | (lin & 0xFFF)
        if lin < self.ram_size:
            return self.ram[lin]
        return self.phys_read(lin, 1)

    def rd16(self, s, off):
        lin = off if off <= self.rlim[s] else self.seg_lin(s, off, 2, False)
        if self.paging:
            if lin & 0xFFF == 0xFFF:
                return self.lin_read(lin, 2)
            f = self.tlb_r.get(lin >> 12)
            if f is None:
                f = self.page_walk(lin, False, self.cpl == 3)
            lin = f | (lin & 0xFFF)
        if lin + 2 <= self.ram_size:
            return U16(self.ram, lin)[0]
        return self.phys_read(lin, 2)

    def rd32(self, s, off):
        lin = off if off <= self.rlim[s] else self.seg_lin(s, off, 4, False)
        if self.paging:
            if lin & 0xFFF > 0xFFC:
                return self.lin_read(lin, 4)
            f = self.tlb_r.get(lin >> 12)
            if f is None:
                f = self.page_walk(lin, False, self.cpl == 3)
            lin = f | (lin & 0xFFF)
        if lin + 4 <= self.ram_size:
            return U32(self.ram, lin)[0]
        return self.phys_read(lin, 4)

    def wr8(self, s, off, v):
        lin = off if off <= self.wlim[s] else self.seg_lin(s, off, 1, True)
        if self.paging:
            f = self.tlb_w.get(lin >> 12)
            if f is None:
                f = self.page_walk(lin, True, self.cpl == 3)
            lin = f | (lin & 0xFFF)
        if lin < self.ram_size:
            if self.code_pages[lin >> 12]:
                self.invalidate_code_page(lin >> 12)
            self.ram[lin] = v
        else:
            self.phys_write(lin, 1, v)

    def wr16(self, s, off, v):
        lin = off if off <= self.wlim[s] else self.seg_lin(s, off, 2, True)
        if lin & 0xFFF == 0xFFF:
            return self.lin_write(lin, 2, v)
        if self.paging:
            f = self.tlb_w.get(lin >> 12)
            if f is None:
                f = self.page_walk(lin, True, self.cpl == 3)
            lin = f | (lin & 0xFFF)
        if lin + 2 <= self.ram_size:
            if self.code_pages[lin >> 12]:
                self.invalidate_code_page(lin >> 12)
            P16(self.ram, lin, v)
        else:
            self.phys_write(lin, 2, v)

    def wr32(self, s, off, v):
        lin = off if off <= self.wlim[s] else self.seg_lin(s, off, 4, True)
        if lin & 0xFFF > 0xFFC:
            return self.lin_write(lin, 4, v)
        if self.paging:
            f = self.tlb_w.get(lin >> 12)
            if f is None:
                f = self.page_walk(lin, True, self.cpl == 3)
            lin = f | (lin & 0xFFF)
        if lin + 4 <= self.ram_size:
            if self.code_pages[lin >> 12]:
                self.invalidate_code_page(lin >> 12)
            P32(self.ram, lin, v)
        else:
            self.phys_write(lin, 4, v)

    def rd(self, s, off, size):
        return self.rd32(s, off) if size == 4 else self.rd16(s, off) if size == 2 else self.rd8(s, off)

    def wr(self, s, off, size, v):
        if size == 4:
            self.wr32(s, off, v)
        elif size == 2:
            self.wr16(s, off, v)
        else:
            self.wr8(s, off, v)

    # Implicit supervisor-privilege accesses (descriptor tables, TSS): SDM Vol. 3A §4.6.1.
    def sys_read(self, lin: int, size: int) -> int:
        return self.lin_read(lin & 0xFFFFFFFF, size, user=False)

    def sys_write(self, lin: int, size: int, v: int) -> None:
        self.lin_write(lin & 0xFFFFFFFF, size, v, user=False)

    # -------------------------------------------------------------- stack
    def push32(self, v: int) -> None:
        if self.ss32:
            esp = (self.regs[4] - 4) & 0xFFFFFFFF
            self.wr32(SS, esp, v)
            self.regs[4] = esp
        else:
            sp = (self.regs[4] - 4) & 0xFFFF
            self.wr32(SS, sp, v)
            self.regs[4] = (self.regs[4] & 0xFFFF0000) | sp

    def push16(self, v: int) -> None:
        if self.ss32:
            esp = (self.regs[4] - 2) & 0xFFFFFFFF
            self.wr16(SS, esp, v)
            self.regs[4] = esp
        else:
            sp = (self.regs[4] - 2) & 0xFFFF
            self.wr16(SS, sp, v)
            self.regs[4] = (self.regs[4] & 0xFFFF0000) | sp

    def pop32(self) -> int:
        if self.ss32:
            esp = self.regs[4]
            v = self.rd32(SS, esp)
            self.regs[4] = (esp + 4) & 0xFFFFFFFF
        else:
            sp = self.regs[4] & 0xFFFF
            v = self.rd32(SS, sp)
            self.regs[4] = (self.regs[4] & 0xFFFF0000) | ((sp + 4) & 0xFFFF)
        return v

    def pop16(self) -> int:
        if self.ss32:
            esp = self.regs[4]
            v = self.rd16(SS, esp)
            self.regs[4] = (esp + 2) & 0xFFFFFFFF
        else:
            sp = self.regs[4] & 0xFFFF
            v = self.rd16(SS, sp)
            self.regs[4] = (self.regs[4] & 0xFFFF0000) | ((sp + 2) & 0xFFFF)
        return v
