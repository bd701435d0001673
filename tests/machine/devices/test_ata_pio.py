import os
import struct

import pytest
from hypothesis import given, settings, strategies as st

from trapvisor.errors import UserError
from trapvisor.machine.bus import IoBus
from trapvisor.machine.devices.ata_pio import AtaPio
from trapvisor.machine.irq import IrqRouter

from .timeline import IrqRecorder

SECTORS = 64


@pytest.fixture
def image(tmp_path):
    p = tmp_path / "disk.img"
    p.write_bytes(b"".join(bytes([i]) * 512 for i in range(SECTORS)))
    return p


def make(path):
    router = IrqRouter()
    rec = IrqRecorder()
    router.connect(rec)
    ata = AtaPio(str(path) if path is not None else None, router.line(14))
    bus = IoBus()
    bus.register(0x1F0, 8, ata)
    bus.register(0x3F6, 1, ata)
    return ata, bus, rec


def set_lba(bus, lba, count):
    bus.write(0x1F2, 1, count)
    bus.write(0x1F3, 1, lba & 0xFF)
    bus.write(0x1F4, 1, (lba >> 8) & 0xFF)
    bus.write(0x1F5, 1, (lba >> 16) & 0xFF)
    bus.write(0x1F6, 1, 0xE0 | ((lba >> 24) & 0x0F))


def read_sector(bus):
    return b"".join(struct.pack("<H", bus.read(0x1F0, 2)) for _ in range(256))


def test_identify(image):
    ata, bus, rec = make(image)
    bus.write(0x1F6, 1, 0xA0)
    bus.write(0x1F7, 1, 0xEC)
    assert rec.level[14]
    st_ = bus.read(0x1F7, 1)
    assert st_ & 0x08 and st_ & 0x40 and not st_ & 0x80
    assert not rec.level[14]                       # status read clears INTRQ
    data = read_sector(bus)
    words = struct.unpack("<256H", data)
    assert words[0] == 0x0040
    assert words[49] & 0x0200                      # LBA
    assert words[60] | words[61] << 16 == SECTORS
    model = b"".join(struct.pack(">H", w) for w in words[27:47]).decode().strip()
    assert model == "TRAPVISOR HARDDISK"
    assert bus.read(0x1F7, 1) & 0x08 == 0          # transfer done


def test_read_sectors_lba28(image):
    ata, bus, rec = make(image)
    set_lba(bus, 5, 3)
    bus.write(0x1F7, 1, 0x20)
    got = []
    for i in range(3):
        assert rec.level[14]
        assert bus.read(0x1F7, 1) & 0x08
        got.append(read_sector(bus))
    assert got == [bytes([5]) * 512, bytes([6]) * 512, bytes([7]) * 512]
    assert bus.read(0x1F7, 1) == 0x50
    assert len(rec.rising(14)) == 3


def test_write_then_read_round_trip(image):
    ata, bus, rec = make(image)
    payload = bytes(range(256)) * 4
    set_lba(bus, 10, 2)
    bus.write(0x1F7, 1, 0x30)
    assert not rec.level[14]                       # no interrupt before the first sector
    assert bus.read(0x3F6, 1) & 0x08
    for i in range(0, 1024, 4):
        bus.write(0x1F0, 4, struct.unpack_from("<I", payload, i)[0])   # 32-bit PIO
        if i == 508:
            assert rec.level[14]                   # after the first sector
            bus.read(0x1F7, 1)
    assert rec.level[14]
    assert bus.read(0x1F7, 1) == 0x50
    with open(image, "rb") as f:
        f.seek(10 * 512)
        assert f.read(1024) == payload
    set_lba(bus, 10, 2)
    bus.write(0x1F7, 1, 0x20)
    assert read_sector(bus) + read_sector(bus) == payload


def test_sector_count_zero_means_256_and_range_errors(image):
    ata, bus, rec = make(image)
    set_lba(bus, 0, 0)                              # 256 sectors > 64
    bus.write(0x1F7, 1, 0x20)
    assert bus.read(0x1F7, 1) & 0x01
    assert bus.read(0x1F1, 1) == 0x10               # IDNF
    set_lba(bus, SECTORS - 1, 1)
    bus.write(0x1F7, 1, 0x20)
    assert bus.read(0x1F7, 1) == 0x58
    assert read_sector(bus) == bytes([SECTORS - 1]) * 512


def test_chs_addressing(image):
    ata, bus, rec = make(image)
    # INITIALIZE DEVICE PARAMETERS: 4 heads, 8 sectors per track
    bus.write(0x1F2, 1, 8)
    bus.write(0x1F6, 1, 0xA0 | 3)
    bus.write(0x1F7, 1, 0x91)
    assert bus.read(0x1F7, 1) == 0x50
    # cylinder 1, head 2, sector 3 -> (1*4 + 2)*8 + 2 = 50
    bus.write(0x1F2, 1, 1)
    bus.write(0x1F3, 1, 3)
    bus.write(0x1F4, 1, 1)
    bus.write(0x1F5, 1, 0)
    bus.write(0x1F6, 1, 0xA0 | 2)
    bus.write(0x1F7, 1, 0x20)
    assert read_sector(bus) == bytes([50]) * 512


def test_nien_suppresses_the_irq(image):
    ata, bus, rec = make(image)
    bus.write(0x3F6, 1, 0x02)
    bus.write(0x1F6, 1, 0xA0)
    bus.write(0x1F7, 1, 0xEC)
    assert not rec.events
    assert bus.read(0x3F6, 1) & 0x08


def test_unknown_command_aborts(image):
    ata, bus, rec = make(image)
    bus.write(0x1F6, 1, 0xA0)
    bus.write(0x1F7, 1, 0xC8)                       # READ DMA: not offered
    assert bus.read(0x1F7, 1) == 0x51
    assert bus.read(0x1F1, 1) == 0x04


def test_device1_absent_and_srst_signature(image):
    ata, bus, rec = make(image)
    bus.write(0x1F6, 1, 0xB0)
    assert bus.read(0x1F7, 1) == 0x00
    bus.write(0x1F7, 1, 0xEC)
    assert not rec.events
    bus.write(0x3F6, 1, 0x04)
    bus.write(0x3F6, 1, 0x00)
    assert bus.read(0x1F6, 1) & 0x10 == 0           # reset selects device 0
    assert [bus.read(p, 1) for p in (0x1F1, 0x1F2, 0x1F3, 0x1F4, 0x1F5)] == [1, 1, 1, 0, 0]
    assert bus.read(0x1F7, 1) == 0x50


def test_srst_shows_busy(image):
    ata, bus, rec = make(image)
    bus.write(0x3F6, 1, 0x04)
    assert bus.read(0x3F6, 1) & 0x80
    bus.write(0x3F6, 1, 0x00)
    assert bus.read(0x3F6, 1) == 0x50


def test_no_disk_floats():
    ata, bus, rec = make(None)
    assert bus.read(0x1F7, 1) == 0xFF
    assert bus.read(0x1F0, 2) == 0xFFFF
    bus.write(0x1F7, 1, 0xEC)
    assert bus.read(0x3F6, 1) == 0xFF


def test_bad_images_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="cannot open disk image"):
        AtaPio(str(tmp_path / "missing.img"))
    with pytest.raises(UserError, match="directory"):
        AtaPio(str(tmp_path))
    empty = tmp_path / "empty.img"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match="smaller than one"):
        AtaPio(str(empty))


def test_read_only_image_rejects_writes(image):
    os.chmod(image, 0o444)
    try:
        ata = AtaPio(str(image))
    finally:
        os.chmod(image, 0o644)
    if not ata.read_only:                           # root can write anyway
        pytest.skip("running as root: the file stays writable")
    set_lba_bus = IoBus()
    set_lba_bus.register(0x1F0, 8, ata)
    set_lba(set_lba_bus, 0, 1)
    set_lba_bus.write(0x1F7, 1, 0x30)
    assert set_lba_bus.read(0x1F7, 1) & 0x01


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0x1F0, 0x1F1, 0x1F2, 0x1F3, 0x1F4, 0x1F5, 0x1F6, 0x1F7, 0x3F6]),
                          st.sampled_from([1, 2, 4]), st.integers(0, 0xFFFFFFFF), st.booleans()),
                max_size=80))
def test_any_guest_input_is_safe(tmp_path_factory, ops):
    p = tmp_path_factory.mktemp("fuzz") / "d.img"
    p.write_bytes(bytes(4 * 512))
    ata, bus, rec = make(p)
    for port, size, value, read in ops:
        if read:
            bus.read(port, size)
        else:
            bus.write(port, size, value & ((1 << (8 * size)) - 1))
    ata.close()
    assert p.stat().st_size == 4 * 512
