"""The bzImage loader's pieces: header, payload decompression, zero page, initrd placement."""
import ctypes
import ctypes.util
import os
import struct

import pytest

from trapvisor.errors import UserError
from trapvisor.kvm import boot_linux as bl
from trapvisor.machine.memory import PhysicalMemory


def fake_bzimage(version=0x020F, setup_sects=4, payload=b"", xloadflags=bl.XLF_KERNEL_64) -> bytes:
    img = bytearray((setup_sects + 1) * 512 + 0x400 + len(payload))
    img[bl.HDR_SETUP_SECTS] = setup_sects
    struct.pack_into("<H", img, bl.HDR_BOOT_FLAG, 0xAA55)
    img[bl.HDR_JUMP:bl.HDR_JUMP + 2] = bytes([0xEB, 0x6A])      # header ends at 0x26C
    img[bl.HDR_MAGIC:bl.HDR_MAGIC + 4] = b"HdrS"
    struct.pack_into("<H", img, bl.HDR_VERSION, version)
    img[bl.HDR_LOADFLAGS] = bl.LOADED_HIGH
    struct.pack_into("<I", img, bl.HDR_CODE32_START, 0x100000)
    struct.pack_into("<I", img, bl.HDR_INITRD_ADDR_MAX, 0x7FFFFFFF)
    struct.pack_into("<I", img, bl.HDR_KERNEL_ALIGNMENT, 0x200000)
    img[bl.HDR_RELOCATABLE] = 1
    struct.pack_into("<H", img, bl.HDR_XLOADFLAGS, xloadflags)
    struct.pack_into("<I", img, bl.HDR_CMDLINE_SIZE, 2047)
    struct.pack_into("<II", img, bl.HDR_PAYLOAD_OFFSET, 0x400, len(payload))
    struct.pack_into("<Q", img, bl.HDR_PREF_ADDRESS, 0x1000000)
    struct.pack_into("<I", img, bl.HDR_INIT_SIZE, 0x10000)
    start = (setup_sects + 1) * 512 + 0x400
    img[start:start + len(payload)] = payload
    return bytes(img)


def test_parse_setup_header():
    hdr = bl.parse_setup_header(fake_bzimage())
    assert hdr.version == 0x020F and hdr.pm_offset == 5 * 512
    assert hdr.pref_address == 0x1000000 and hdr.relocatable and hdr.xloadflags & bl.XLF_KERNEL_64
    assert len(hdr.raw) == 0x26C - 0x1F1


def test_not_a_bzimage_and_too_old():
    with pytest.raises(UserError, match="not a Linux bzImage"):
        bl.parse_setup_header(b"\0" * 4096, "x")
    with pytest.raises(UserError, match="too old"):
        bl.parse_setup_header(fake_bzimage(version=0x0204))


def _lz4_compress(data: bytes) -> bytes:
    lib = ctypes.CDLL(ctypes.util.find_library("lz4") or "liblz4.so.1")
    out = ctypes.create_string_buffer(len(data) * 2 + 64)
    n = lib.LZ4_compress_default(data, out, len(data), len(out))
    return out.raw[:n]


def test_lz4_python_decoder_matches_liblz4():
    data = (b"abcabcabcabc" * 500 + os.urandom(300) + b"\0" * 5000 + b"the kernel" * 77)
    block = _lz4_compress(data)
    assert bl.lz4_block_python(block, 1 << 20) == data
    legacy = struct.pack("<I", bl.LZ4_LEGACY_MAGIC) + struct.pack("<I", len(block)) + block
    legacy += struct.pack("<I", len(data))          # the size the kernel build appends
    assert bl.lz4_legacy_decompress(legacy) == data


def test_decompress_payload_reads_the_vmlinux():
    elf = b"\x7fELF" + bytes(100)
    block = _lz4_compress(elf)
    payload = struct.pack("<II", bl.LZ4_LEGACY_MAGIC, len(block)) + block + struct.pack("<I", len(elf))
    img = fake_bzimage(payload=payload)
    assert bl.decompress_payload(img, bl.parse_setup_header(img)) == elf


def test_zero_page_fields():
    mem = PhysicalMemory(64 << 20)
    hdr = bl.parse_setup_header(fake_bzimage())
    bl.write_zero_page(mem, hdr, cmdline_addr=0x20000, initrd=(0x3000000, 0x1234),
                       e820=[(0, 0x9FC00, 1), (0x100000, 0x3F00000, 1)])
    zp = bl.ZERO_PAGE_ADDR
    assert mem.read(zp + bl.HDR_MAGIC, 4) == b"HdrS"
    assert mem.ram[zp + bl.HDR_TYPE_OF_LOADER] == 0xFF
    assert mem.read_u32(zp + bl.HDR_CMD_LINE_PTR) == 0x20000
    assert mem.read_u32(zp + bl.HDR_RAMDISK_IMAGE) == 0x3000000
    assert mem.read_u32(zp + bl.HDR_RAMDISK_SIZE) == 0x1234
    assert mem.ram[zp + bl.BP_E820_ENTRIES] == 2
    assert struct.unpack_from("<QQI", mem.ram, zp + bl.BP_E820_TABLE + 20) == (0x100000, 0x3F00000, 1)


def test_page_tables_identity_map_4gib():
    mem = PhysicalMemory(64 << 20)
    cr3 = bl.identity_page_tables(mem)
    pml4e = struct.unpack_from("<Q", mem.ram, cr3)[0]
    pdpte3 = struct.unpack_from("<Q", mem.ram, (pml4e & ~0xFFF) + 3 * 8)[0]
    pde = struct.unpack_from("<Q", mem.ram, (pdpte3 & ~0xFFF) + 511 * 8)[0]
    assert pde & ~0xFFF == (3 << 30) + (511 << 21) and pde & 0x83 == 0x83


def test_initrd_placement_and_too_large():
    addr, size = bl.place_initrd(256 << 20, 5 << 20, kernel_end=40 << 20, addr_max=0x7FFFFFFF)
    assert addr % 4096 == 0 and addr + size <= 256 << 20 and addr >= 40 << 20
    with pytest.raises(UserError, match="does not fit in guest memory"):
        bl.place_initrd(64 << 20, 60 << 20, kernel_end=40 << 20, addr_max=0x7FFFFFFF, name="big.cpio")


def test_cmdline_workarounds_only_for_software_kvm():
    line, added = bl.effective_cmdline("console=ttyS0", software_kvm=True)
    assert "noxsave" in added and "reboot=k" in added and line.startswith("console=ttyS0 ")
    line, added = bl.effective_cmdline("console=ttyS0 reboot=t", software_kvm=False)
    assert added == [] and line == "console=ttyS0 reboot=t"


def test_long_mode_entry_state():
    e = bl.long_mode_entry(0x1000000, bl.ZERO_PAGE_ADDR, (0x500, 31), 0x9000)
    assert e.registers["rsi"] == bl.ZERO_PAGE_ADDR
    assert e.segments["cs"].selector == bl.BOOT_CS and e.segments["cs"].l == 1
    assert e.segments["ds"].selector == bl.BOOT_DS
    assert e.efer & bl.EFER_LMA and e.cr0 & bl.CR0_PG and e.cr4 & bl.CR4_PAE
