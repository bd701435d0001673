import struct

import pytest

from trapvisor.errors import UserError
from trapvisor.machine import bios
from trapvisor.machine.memory import PhysicalMemory


def find_mp_floating_pointer(mem):
    """Search the BIOS ROM area as MP spec 1.4 section 4 tells an OS to."""
    for addr in range(0xF0000, 0x100000, 16):
        if mem.read(addr, 4) == b"_MP_":
            length = mem.read(addr + 8, 1)[0] * 16
            if sum(mem.read(addr, length)) & 0xFF == 0:
                return addr
    return None


def parse_config_table(mem, addr):
    hdr = mem.read(addr, 44)
    sig, length, rev, _cks, oem, product, _oemp, _oems, count, lapic, ext_len, _ext_cks = \
        struct.unpack("<4sHBB8s12sIHHIHBx", hdr)
    table = mem.read(addr, length)
    assert sig == b"PCMP" and rev == 4 and ext_len == 0
    assert sum(table) & 0xFF == 0
    entries, off = [], 44
    for _ in range(count):
        t = table[off]
        size = 20 if t == 0 else 8
        entries.append(table[off:off + size])
        off += size
    assert off == length
    return lapic, entries


@pytest.fixture
def mem():
    m = PhysicalMemory(32 << 20)
    bios.install_tables(m, hard_disks=1)
    return m


def test_mp_floating_pointer(mem):
    fp = find_mp_floating_pointer(mem)
    assert fp is not None and fp % 16 == 0
    sig, table, length, rev, cks, f1, f2 = struct.unpack("<4sIBBBBB", mem.read(fp, 13))
    assert length == 1 and rev == 4
    assert f1 == 0                      # a configuration table is present
    assert f2 & 0x80 == 0               # virtual wire mode (no IMCR)
    assert 0xF0000 <= table < 0x100000


def test_mp_configuration_table(mem):
    fp = find_mp_floating_pointer(mem)
    table = struct.unpack_from("<I", mem.read(fp + 4, 4))[0]
    lapic, entries = parse_config_table(mem, table)
    assert lapic == 0xFEE00000
    cpus = [e for e in entries if e[0] == 0]
    assert len(cpus) == 1
    _, apic_id, apic_ver, flags, sig, feat = struct.unpack_from("<BBBBII", cpus[0])
    assert apic_id == 0 and flags == 0x03 and apic_ver == 0x14
    buses = [e for e in entries if e[0] == 1]
    assert [b[2:8] for b in buses] == [b"ISA   "]
    ioapics = [struct.unpack("<BBBBI", e) for e in entries if e[0] == 2]
    assert ioapics == [(2, 1, 0x11, 1, 0xFEC00000)]
    ints = {e[5]: e for e in entries if e[0] == 3}
    assert set(ints) == set(range(16)) - {2}
    for irq, e in ints.items():
        _, itype, iflag, bus, src, dst_apic, pin = struct.unpack("<BBHBBBB", e)
        assert (itype, iflag, bus, dst_apic) == (0, 0, 0, 1)
        assert pin == (2 if irq == 0 else irq)
    local = [struct.unpack("<BBHBBBB", e) for e in entries if e[0] == 4]
    assert (4, 3, 0, 0, 0, 0xFF, 0) in local       # ExtINT -> LINT0
    assert (4, 1, 0, 0, 0, 0xFF, 1) in local       # NMI -> LINT1


def test_real_mode_ivt_points_at_a_dummy_iret(mem):
    for v in (0, 0x08, 0x10, 0xFF):
        assert mem.read_u32(4 * v) == 0xF000FF53
    assert mem.read(0xFFF53, 1) == b"\xcf"


def test_bios_data_area(mem):
    assert mem.read_u16(0x400) == 0x3F8
    assert mem.read_u16(0x413) == 639
    assert mem.read_u16(0x40E) == 0x9FC0
    assert mem.read(0x9FC00, 1)[0] == 1
    assert (mem.read_u16(0x410) >> 9) & 7 == 1
    assert mem.read(0x475, 1)[0] == 1


def test_e820_map_like_qemu():
    m = bios.e820_map(128 << 20)
    assert m == [(0, 0x9FC00, 1), (0x9FC00, 0x400, 2), (0xF0000, 0x10000, 2),
                 (0x100000, (128 << 20) - 0x100000, 1), (0xFFFC0000, 0x40000, 2)]
    small = bios.e820_map(512 << 10)
    assert small[0] == (0, 512 << 10, 1)
    assert all(t == 2 for _, _, t in small[1:])


def test_too_little_memory_is_a_user_error():
    with pytest.raises(UserError):
        bios.install_tables(PhysicalMemory(512 << 10))


def test_install_alias(mem):
    m = PhysicalMemory(2 << 20)
    bios.install(m)
    assert find_mp_floating_pointer(m) is not None
