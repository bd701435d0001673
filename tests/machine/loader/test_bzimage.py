"""The Linux boot protocol's 32-bit entry on the simulated PC (Documentation/arch/x86/boot.rst).

A hand-built bzImage whose "kernel" (both the protected-mode part at
code32_start and the xz-compressed ELF32 vmlinux in its payload) checks the
entry state and reports through isa-debug-exit: CS is __BOOT_CS, and it adds
the command line's first byte (through boot_params.hdr.cmd_line_ptr in ESI)
to hdr.ramdisk_size.  The zero page itself is read back from guest memory.
"""

from __future__ import annotations

import lzma
import struct

import pytest

from trapvisor.errors import UserError
from trapvisor.machine import bios
from trapvisor.machine.loader import bzimage as bz
from trapvisor.machine.pc import PC

from .images import elf32

# mov eax,cs; cmp eax,0x10; jne fail; mov eax,[esi+0x228]; movzx eax,byte [eax];
# add eax,[esi+0x21c]; mov dx,0xf4; out dx,eax; hlt; fail: mov dx,0xf4; mov al,7; out dx,al; hlt
PROBE = bytes.fromhex("8cc8" "83f810" "7515" "8b8628020000" "0fb600" "03861c020000"
                      "66baf400" "ef" "f4" "66baf400" "b007" "ee" "f4")
VMLINUX_ADDR = 0x100_0000


def bzimage(version=0x020F, setup_sects=4, loadflags=bz.LOADED_HIGH, truncate: int | None = None,
            initrd_addr_max=0x7FFFFFFF) -> bytes:
    payload = lzma.compress(elf32([(0xC100_0000, VMLINUX_ADDR, PROBE, 0x2000)], 0xC100_0000),
                            format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
    pm = PROBE.ljust(0x400, b"\x90") + payload
    pm += bytes(-len(pm) % 16)
    setup = bytearray((setup_sects + 1) * 512)
    setup[bz.HDR_SETUP_SECTS] = setup_sects
    struct.pack_into("<I", setup, bz.HDR_SYSSIZE, len(pm) // 16)
    struct.pack_into("<H", setup, bz.HDR_BOOT_FLAG, 0xAA55)
    setup[bz.HDR_JUMP:bz.HDR_JUMP + 2] = bytes([0xEB, 0x6A])
    setup[bz.HDR_MAGIC:bz.HDR_MAGIC + 4] = b"HdrS"
    struct.pack_into("<H", setup, bz.HDR_VERSION, version)
    setup[bz.HDR_LOADFLAGS] = loadflags
    struct.pack_into("<I", setup, bz.HDR_CODE32_START, 0x100000)
    struct.pack_into("<I", setup, bz.HDR_INITRD_ADDR_MAX, initrd_addr_max)
    struct.pack_into("<I", setup, bz.HDR_KERNEL_ALIGNMENT, 0x200000)
    struct.pack_into("<I", setup, bz.HDR_CMDLINE_SIZE, 255)
    struct.pack_into("<II", setup, bz.HDR_PAYLOAD_OFFSET, 0x400, len(payload))
    struct.pack_into("<Q", setup, bz.HDR_PREF_ADDRESS, VMLINUX_ADDR)
    struct.pack_into("<I", setup, bz.HDR_INIT_SIZE, 0x10000)
    img = bytes(setup) + pm
    return img[:truncate] if truncate is not None else img


@pytest.fixture
def kernel(tmp_path):
    def make(**kw):
        p = tmp_path / "bzImage"
        p.write_bytes(bzimage(**kw))
        return str(p)
    return make


@pytest.fixture
def initrd(tmp_path):
    p = tmp_path / "initrd.cpio"
    p.write_bytes(b"\x5a" * 0x1000)
    return str(p)


@pytest.mark.parametrize("entry", ["vmlinux", "bzimage"])
def test_the_kernel_runs_in_the_32bit_protocol_state(kernel, initrd, entry):
    pc = PC(64 << 20)
    boot = pc.load_kernel(kernel(), cmdline="A console=ttyS0", initrd=initrd, linux_entry=entry)
    assert boot.entry == (VMLINUX_ADDR if entry == "vmlinux" else 0x100000)
    r = pc.run(10_000)
    assert r.exit_code == ((ord("A") + 0x1000) << 1) | 1     # cmd_line_ptr and ramdisk_size seen via ESI
    assert pc.cpu.regs[6] == bz.ZERO_PAGE_ADDR                # ESI (the probe does not touch it)


def test_the_zero_page_is_filled_as_a_boot_loader_must(kernel, initrd):
    pc = PC(64 << 20)
    pc.load_kernel(kernel(), cmdline="console=ttyS0 earlyprintk=serial", initrd=initrd)
    zp = pc.memory.read(bz.ZERO_PAGE_ADDR, 4096)
    assert zp[:0x70] == bytes(0x70)                            # screen_info and apm_bios_info: none
    assert zp[bz.HDR_TYPE_OF_LOADER] == 0xFF and zp[bz.HDR_LOADFLAGS] & bz.LOADED_HIGH
    assert zp[bz.HDR_MAGIC:bz.HDR_MAGIC + 4] == b"HdrS"       # the header was copied
    cmd = struct.unpack_from("<I", zp, bz.HDR_CMD_LINE_PTR)[0]
    assert pc.memory.read(cmd, 33) == b"console=ttyS0 earlyprintk=serial\0"
    image, size = struct.unpack_from("<II", zp, bz.HDR_RAMDISK_IMAGE)
    assert size == 0x1000 and image & 0xFFF == 0 and image + size <= 64 << 20
    assert pc.memory.read(image, size) == b"\x5a" * 0x1000
    assert struct.unpack_from("<Q", zp, bz.BP_ACPI_RSDP_ADDR)[0] == pc.board.rsdp != 0
    n = zp[bz.BP_E820_ENTRIES]
    table = [struct.unpack_from("<QQI", zp, bz.BP_E820_TABLE + 20 * i) for i in range(n)]
    assert table == bios.e820_map(64 << 20)
    assert (bios.BIOS_AREA_BASE, bios.BIOS_AREA_END - bios.BIOS_AREA_BASE, 2) in table   # firmware reserved


def test_the_boot_gdt_has_the_protocol_selectors(kernel):
    pc = PC(64 << 20)
    pc.load_kernel(kernel())
    gdt = pc.memory.read(bz.BOOT_GDT_ADDR, 32)
    assert gdt[16:24] == bz.LINUX_GDT_ENTRIES[2] and gdt[24:32] == bz.LINUX_GDT_ENTRIES[3]
    assert pc.cpu.cr0 & 1 and not pc.cpu.cr0 & (1 << 31)      # protected mode, paging off


@pytest.mark.parametrize("make, message", [
    (dict(truncate=3000), "is truncated: its header describes"),
    (dict(truncate=0x240), "576 bytes end inside its setup header"),
    (dict(version=0x0204), "boot protocol 2.04 is too old"),
    (dict(loadflags=0), "is a zImage"),
])
def test_bad_images_are_one_line_errors(kernel, make, message):
    with pytest.raises(UserError, match=message) as e:
        PC(64 << 20).load_kernel(kernel(**make))
    assert "\n" not in str(e.value)


def test_an_initrd_too_large_for_memory_is_refused(kernel, tmp_path):
    big = tmp_path / "big.cpio"
    big.write_bytes(bytes(40 << 20))
    with pytest.raises(UserError, match=r"initrd big.cpio \(40.0 MiB\) does not fit in guest memory \(48 MiB\)"):
        PC(48 << 20).load_kernel(kernel(), initrd=str(big))


def test_a_kernel_beyond_memory_is_refused(kernel):
    with pytest.raises(UserError, match="needs memory up to"):
        PC(8 << 20).load_kernel(kernel())


def test_initrd_is_only_for_a_bzimage(initrd, tmp_path):
    elf = tmp_path / "k.elf"
    elf.write_bytes(elf32([(0x100000, 0x100000, PROBE, 0x1000)], 0x100000))
    with pytest.raises(UserError, match="--initrd is for a Linux bzImage"):
        PC(16 << 20).load_kernel(str(elf), initrd=initrd)
