"""The descriptor caches (descriptors.py) never serve a stale descriptor.

Segment loads cache the decoded descriptor and the outcome of their checks by
the raw descriptor bits, re-reading the table every time; these tests change
what a load must see between two loads -- a store into the GDT by the guest's
own instruction, the accessed bit cleared again, LGDT to another table, a
CPL change, paging remapping the table -- and check that the second load
sees it exactly as an uncached load does.  The interrupt paths built on the
same reads (INT from ring 3 through a TSS stack switch, IRET back) are
checked against QEMU in tests/system and tests/machine/test_pc_runs_guests_like_qemu.py
(the bench guest's INT 0x80 loop).
"""

from __future__ import annotations

import pytest

from trapvisor.machine.bus import IoBus
from trapvisor.machine.cpu import CPU, CpuFault, enter_flat_protected_mode
from trapvisor.machine.cpu import descriptors as D
from trapvisor.machine.cpu.constants import DS, ES, GP, NP, SS
from trapvisor.machine.memory import PhysicalMemory

GDT = 0x5000


def desc(base, limit, access, flags=0xC):
    return ((limit & 0xFFFF) | ((base & 0xFFFFFF) << 16) | (access << 40)
            | (((limit >> 16) & 0xF) << 48) | (flags << 52) | ((base >> 24) << 56))


def machine(entries):
    mem = PhysicalMemory(0x100000)
    for i, d in enumerate(entries):
        mem.write(GDT + 8 * i, d.to_bytes(8, "little"))
    cpu = CPU(mem, IoBus())
    enter_flat_protected_mode(cpu)
    cpu.gdtr = (GDT, 8 * len(entries) - 1)
    return cpu, mem


def test_a_store_into_the_gdt_is_seen_by_the_next_load():
    cpu, mem = machine([0, desc(0, 0xFFFFF, 0x9B), desc(0, 0xFFFFF, 0x93), desc(0x1000, 0xFFFF, 0x93, 0x4)])
    D.load_data_segment(cpu, DS, 0x18)
    assert cpu.base[DS] == 0x1000
    cpu.wr32(ES, GDT + 0x18 + 2, 0x93002000)      # the guest's own store: base 0x2000
    D.load_data_segment(cpu, DS, 0x18)
    assert cpu.base[DS] == 0x2000 and cpu.limit[DS] == 0xFFFF
    cpu.wr8(ES, GDT + 0x18 + 5, 0x13)             # now not present
    with pytest.raises(CpuFault) as e:
        D.load_data_segment(cpu, DS, 0x18)
    assert (e.value.vector, e.value.error_code) == (NP, 0x18)


def test_the_accessed_bit_is_written_whenever_it_is_clear():
    cpu, mem = machine([0, desc(0, 0xFFFFF, 0x9B), desc(0, 0xFFFFF, 0x92)])
    for _ in range(3):
        D.load_data_segment(cpu, DS, 0x10)
        assert mem.read(GDT + 0x15, 1) == b"\x93"
        mem.write(GDT + 0x15, b"\x92")                      # the OS clears it again


def test_lgdt_to_another_table_and_a_cpl_change_are_seen():
    cpu, mem = machine([0, desc(0, 0xFFFFF, 0x9B), desc(0x3000, 0xFFFFF, 0x93)])
    D.load_data_segment(cpu, DS, 0x10)
    assert cpu.base[DS] == 0x3000
    cpu.set_cpl(3)
    for sel in (0x10, 0x13):                                # DPL 0 data at CPL 3: #GP(sel)
        with pytest.raises(CpuFault) as e:
            D.load_data_segment(cpu, DS, sel)
        assert (e.value.vector, e.value.error_code) == (GP, 0x10)
    cpu.set_cpl(0)
    mem.write(0x6010, desc(0x7000, 0xFFFFF, 0x93).to_bytes(8, "little"))
    cpu.gdtr = (0x6000, 0x17)                               # LGDT
    D.load_data_segment(cpu, DS, 0x10)
    assert cpu.base[DS] == 0x7000
    cpu.gdtr = (0x6000, 0x0F)                               # a shorter table: outside it
    with pytest.raises(CpuFault) as e:
        D.load_data_segment(cpu, DS, 0x10)
    assert (e.value.vector, e.value.error_code) == (GP, 0x10)


def test_paging_remaps_the_table_only_after_the_tlb_drops_the_old_mapping():
    cpu, mem = machine([0, desc(0, 0xFFFFF, 0x9B), desc(0x3000, 0xFFFFF, 0x93)])
    mem.write(0x6010, desc(0x7000, 0xFFFFF, 0x93).to_bytes(8, "little"))
    pd, pt = 0x10000, 0x11000
    mem.write(pd, (pt | 3).to_bytes(4, "little"))
    mem.write(pt, b"".join(((p << 12) | 3).to_bytes(4, "little") for p in range(1024)))
    cpu.set_cr3(pd)
    cpu.set_cr0(cpu.cr0 | 0x80000000)
    D.load_data_segment(cpu, SS, 0x10)
    assert cpu.base[SS] == 0x3000
    mem.write(pt + 4 * 5, (0x6000 | 3).to_bytes(4, "little"))   # GDT page -> frame 0x6000
    D.load_data_segment(cpu, SS, 0x10)
    assert cpu.base[SS] == 0x3000                           # the TLB still has the old frame
    cpu.invlpg(GDT)
    D.load_data_segment(cpu, SS, 0x10)
    assert cpu.base[SS] == 0x7000
