import struct
import subprocess

import pytest

from tests.hosttools_gate import need
from trapvisor.errors import UserError
from trapvisor.machine import bios
from trapvisor.machine.loader import load_any, load_elf, load_kernel, load_multiboot, load_raw
from trapvisor.machine.loader.boot_state import BOOT_GDT, segment_from_descriptor
from trapvisor.machine.loader.multiboot import find_header
from trapvisor.machine.memory import PhysicalMemory

from .images import elf32, elf64_stub, multiboot_elf, multiboot_header

MEM = 16 << 20


def cstr(mem, addr):
    out = bytearray()
    while mem.ram[addr]:
        out.append(mem.ram[addr])
        addr += 1
    return out.decode()


def parse_mbi(mem, addr):
    f = struct.unpack_from("<22I", mem.ram, addr)
    return dict(flags=f[0], mem_lower=f[1], mem_upper=f[2], boot_device=f[3], cmdline=f[4],
                mods_count=f[5], mods_addr=f[6], mmap_length=f[11], mmap_addr=f[12],
                boot_loader_name=f[16])


def parse_mmap(mem, addr, length):
    entries, p = [], addr
    while p < addr + length:
        size, base, ln, typ = struct.unpack_from("<IQQI", mem.ram, p)
        entries.append((base, ln, typ))
        p += size + 4
    return entries


@pytest.fixture
def mem():
    m = PhysicalMemory(MEM)
    m.ram[:] = b"\xAA" * MEM                     # junk, so zeroing is visible
    return m


def write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_elf_multiboot_kernel_loads_at_paddr_with_bss_zeroed(mem, tmp_path):
    k = write(tmp_path, "k.elf", multiboot_elf(bss=0x3000))
    boot = load_multiboot(mem, k, cmdline="console=ttyS0 quiet")
    assert boot.kind == "multiboot"
    assert boot.entry == 0x10000C
    assert mem.read(0x100000, 4) == struct.pack("<I", 0x1BADB002)
    assert mem.read(0x101000, 32) == b"DATA" * 8
    assert mem.read(0x101020, 0x3000) == bytes(0x3000)
    assert boot.registers["eax"] == 0x2BADB002
    assert boot.registers["ebx"] == boot.info_addr == 0x9500
    assert boot.loaded == [(0x100000, 0x100040), (0x101000, 0x104020)]


def test_multiboot_information_structure(mem, tmp_path):
    k = write(tmp_path, "k.elf", multiboot_elf())
    m1 = write(tmp_path, "initrd.img", b"M1" * 3000)
    m2 = write(tmp_path, "second", b"two")
    boot = load_multiboot(mem, k, cmdline="a=1",
                          modules=[f"{m1} root=/dev/ram", (str(m2), "second module")])
    mbi = parse_mbi(mem, boot.info_addr)
    assert mbi["flags"] == (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 6) | (1 << 9)
    assert mbi["mem_lower"] == 639
    assert mbi["mem_upper"] == (MEM >> 10) - 1024
    assert mbi["boot_device"] == 0x8000FFFF
    assert cstr(mem, mbi["cmdline"]) == f"{k} a=1"
    assert cstr(mem, mbi["boot_loader_name"]) == "trapvisor"
    assert mbi["mmap_addr"] == 0x9000
    assert parse_mmap(mem, mbi["mmap_addr"], mbi["mmap_length"]) == bios.e820_map(MEM)
    assert mbi["mods_count"] == 2
    mods = [struct.unpack_from("<4I", mem.ram, mbi["mods_addr"] + 16 * i) for i in range(2)]
    (s1, e1, str1, _), (s2, e2, str2, _) = mods
    assert s1 % 4096 == 0 and s2 % 4096 == 0
    assert s1 >= 0x105000 - 0x1000 and s1 >= max(e for _, e in boot.loaded)
    assert s2 >= e1
    assert mem.read(s1, e1 - s1) == b"M1" * 3000 and e1 - s1 == 6000
    assert mem.read(s2, e2 - s2) == b"two"
    assert cstr(mem, str1) == f"{m1} root=/dev/ram"
    assert cstr(mem, str2) == "second module"
    assert boot.modules == [(s1, e1, f"{m1} root=/dev/ram"), (s2, e2, "second module")]


def test_flat_protected_mode_state_and_gdt(mem, tmp_path):
    boot = load_multiboot(mem, write(tmp_path, "k.elf", multiboot_elf()))
    assert boot.cr0 & 1 and not boot.cr0 & 0x80000000
    assert boot.eflags == 0x2                    # IF = 0, VM = 0
    assert boot.a20
    assert boot.code_selector == 0x08 and boot.data_selector == 0x10
    assert boot.gdt_base == 0x500 and boot.gdt_limit == 39
    gdt = mem.read(boot.gdt_base, boot.gdt_limit + 1)
    assert gdt == BOOT_GDT
    cs = boot.segments["cs"]
    assert (cs.base, cs.limit, cs.type, cs.s, cs.dpl, cs.present, cs.db, cs.g) == \
        (0, 0xFFFFFFFF, 0xB, 1, 0, 1, 1, 1)
    assert segment_from_descriptor(0x08, gdt[8:16]) == cs
    for name in ("ds", "es", "fs", "gs", "ss"):
        s = boot.segments[name]
        assert s.selector == 0x10 and s == segment_from_descriptor(0x10, gdt[16:24])
        assert s.type == 0x3 and s.db == 1 and s.limit == 0xFFFFFFFF
    assert boot.segments["tr"].type == 0xB


def test_higher_half_entry_is_translated_to_physical(mem, tmp_path):
    k = write(tmp_path, "hh.elf", multiboot_elf(text_vaddr=0xC0100000))
    boot = load_multiboot(mem, k)
    assert boot.entry == 0x10000C
    assert mem.read(0x100000, 4) == struct.pack("<I", 0x1BADB002)


def aout_image(load_addr=0x200000, header_off=0x40, body=b"\x90" * 0x100, load_end=None, bss_end=None):
    img = bytearray(b"\xEB\xFE" + bytes(header_off - 2))
    header_addr = load_addr + header_off
    load_end = load_addr + header_off + 32 + len(body) if load_end is None else load_end
    bss_end = load_end + 0x1000 if bss_end is None else bss_end
    img += multiboot_header(aout=(header_addr, load_addr, load_end, bss_end, load_addr))
    img += body
    return bytes(img)


def test_aout_kludge(mem, tmp_path):
    img = aout_image()
    k = write(tmp_path, "aout.bin", img)
    boot = load_multiboot(mem, k)
    assert boot.entry == 0x200000
    assert mem.read(0x200000, len(img)) == img
    assert mem.read(0x200000 + len(img), 0x1000) == bytes(0x1000)
    assert boot.loaded == [(0x200000, 0x200000 + len(img) + 0x1000)]


def test_aout_kludge_zero_end_fields_mean_whole_file_and_no_bss(mem, tmp_path):
    img = aout_image(load_end=0, bss_end=0) + b"TAIL"
    boot = load_multiboot(mem, write(tmp_path, "a.bin", img))
    assert mem.read(0x200000, len(img)) == img
    assert mem.read(0x200000 + len(img), 4) == b"\xAA" * 4   # nothing zeroed past the file
    assert boot.loaded == [(0x200000, 0x200000 + len(img))]


def test_aout_kludge_with_file_offset(mem, tmp_path):
    # The image proper starts 0x200 bytes into the file (header_addr - load_addr < offset).
    img = bytearray(0x200) + aout_image(header_off=0x40)
    hdr = find_header(bytes(img))
    assert hdr.offset == 0x240
    boot = load_multiboot(mem, write(tmp_path, "off.bin", bytes(img)))
    assert mem.read(0x200000, 2) == b"\xEB\xFE"
    assert boot.entry == 0x200000


def test_kernel_over_0x9000_moves_the_information_block(mem, tmp_path):
    img = aout_image(load_addr=0x8000, header_off=0x40, body=bytes(0x3000))
    boot = load_multiboot(mem, write(tmp_path, "low.bin", img))
    end = max(e for _, e in boot.loaded)
    assert boot.info_addr >= end
    mbi = parse_mbi(mem, boot.info_addr)
    assert mbi["mem_lower"] == 639
    assert mem.read(0x8000, 2) == b"\xEB\xFE"     # kernel intact


def test_kernel_over_the_gdt_moves_the_gdt(mem, tmp_path):
    img = aout_image(load_addr=0x400, header_off=0x40, body=bytes(0x400))
    boot = load_multiboot(mem, write(tmp_path, "vlow.bin", img))
    assert boot.gdt_base >= 0x400 + len(img) + 0x1000 or boot.gdt_base + 40 <= 0x400
    assert mem.read(boot.gdt_base, 40) == BOOT_GDT
    assert mem.read(0x400, 2) == b"\xEB\xFE"


def test_video_flag_is_accepted_unknown_requirements_refused(mem, tmp_path):
    load_multiboot(mem, write(tmp_path, "v.elf", multiboot_elf(flags=0x7)))
    with pytest.raises(UserError, match="features"):
        load_multiboot(mem, write(tmp_path, "x.elf", multiboot_elf(flags=0x13)))


def test_bad_checksum_is_no_header(mem, tmp_path):
    img = multiboot_header(checksum_ok=False) + bytes(100)
    with pytest.raises(UserError, match="not a Multiboot kernel"):
        load_multiboot(mem, write(tmp_path, "bad.bin", img))


def test_header_beyond_8192_bytes_is_not_found(mem, tmp_path):
    img = bytes(8192) + multiboot_header()
    assert find_header(img) is None


@pytest.mark.parametrize("case", ["missing", "directory", "no_header_raw", "header_not_elf",
                                  "elf64", "arm", "segment_outside", "truncated_segment",
                                  "aout_load_above_header", "aout_bss_below_end",
                                  "aout_load_end_past_file", "module_missing", "module_too_large",
                                  "not_exec"])
def test_bad_input_is_a_one_line_user_error(case, mem, tmp_path):
    k, modules = None, ()
    if case == "missing":
        k = tmp_path / "nope.elf"
    elif case == "directory":
        k = tmp_path
    elif case == "no_header_raw":
        k = write(tmp_path, "r.bin", b"\x90" * 100)
    elif case == "header_not_elf":
        k = write(tmp_path, "h.bin", multiboot_header() + bytes(64))
    elif case == "elf64":
        k = write(tmp_path, "k64.elf", elf64_stub() + multiboot_header() + bytes(64))
    elif case == "arm":
        k = write(tmp_path, "arm.elf", elf32([(0x100000, 0x100000, multiboot_header(), 12)], 0x100000,
                                             machine=40))
    elif case == "segment_outside":
        k = write(tmp_path, "big.elf", elf32([(0x100000, MEM - 8, multiboot_header() + bytes(20), 32)],
                                             MEM - 8))
    elif case == "truncated_segment":
        k = write(tmp_path, "t.elf", multiboot_elf()[:-10])
    elif case == "aout_load_above_header":
        k = write(tmp_path, "a.bin", multiboot_header(aout=(0x100000, 0x100100, 0, 0, 0x100000)))
    elif case == "aout_bss_below_end":
        k = write(tmp_path, "a.bin", multiboot_header(aout=(0x100000, 0x100000, 0x100020, 0x100010,
                                                            0x100000)))
    elif case == "aout_load_end_past_file":
        k = write(tmp_path, "a.bin", multiboot_header(aout=(0x100000, 0x100000, 0x200000, 0, 0x100000)))
    elif case == "module_missing":
        k = write(tmp_path, "k.elf", multiboot_elf())
        modules = [str(tmp_path / "gone.img")]
    elif case == "module_too_large":
        k = write(tmp_path, "k.elf", multiboot_elf())
        modules = [str(write(tmp_path, "huge.img", bytes(MEM)))]
    elif case == "not_exec":
        k = write(tmp_path, "rel.elf", elf32([(0x100000, 0x100000, multiboot_header(), 12)], 0x100000,
                                             e_type=1))
    with pytest.raises(UserError) as e:
        load_multiboot(mem, k, modules=modules)
    msg = str(e.value)
    assert msg and "\n" not in msg


def test_plain_elf_loader(mem, tmp_path):
    k = write(tmp_path, "plain.elf", elf32([(0x300000, 0x300000, b"\xf4" * 16, 64)], 0x300004))
    boot = load_elf(mem, k)
    assert boot.kind == "elf" and boot.entry == 0x300004
    assert boot.registers["eax"] == 0 and boot.info_addr is None
    assert mem.read(0x300010, 48) == bytes(48)
    assert boot.code_selector == 0x08
    with pytest.raises(UserError, match="not an ELF"):
        load_elf(mem, write(tmp_path, "x.bin", b"nope" * 10))


def test_raw_loader(mem, tmp_path):
    k = write(tmp_path, "raw.bin", b"\x90\x90\xf4")
    boot = load_raw(mem, k, 0x7000, 0x7001)
    assert mem.read(0x7000, 3) == b"\x90\x90\xf4"
    assert boot.entry == 0x7001 and boot.kind == "raw"
    assert load_raw(mem, k, 0x8000).entry == 0x8000
    with pytest.raises(UserError, match="outside guest memory"):
        load_raw(mem, k, MEM - 1)
    with pytest.raises(UserError, match="empty"):
        load_raw(mem, write(tmp_path, "e.bin", b""), 0x1000)


def test_raw_loader_in_tiny_memory(tmp_path):
    m = PhysicalMemory(64 << 10)
    boot = load_raw(m, write(tmp_path, "t.bin", bytes(0x800)), 0)
    assert boot.gdt_base >= 0x800
    assert m.read(boot.gdt_base, 40) == BOOT_GDT
    assert boot.registers["esp"] == 0x7C00


def test_load_kernel_dispatch(mem, tmp_path):
    mb = write(tmp_path, "mb.elf", multiboot_elf())
    plain = write(tmp_path, "p.elf", elf32([(0x300000, 0x300000, b"\xf4", 1)], 0x300000))
    assert load_kernel(mem, mb).kind == "multiboot"
    assert load_kernel(mem, plain).kind == "elf"
    assert load_any(mem, plain, raw_load=0x1000).kind == "raw"
    with pytest.raises(UserError, match="not a Linux bzImage, a Multiboot kernel or an ELF"):
        load_kernel(mem, write(tmp_path, "junk", b"junk" * 100))
    with pytest.raises(UserError, match="modules"):
        load_kernel(mem, plain, modules=[str(plain)])


def test_kernel_built_with_binutils(mem, tmp_path):
    need("as", "ld")
    src = tmp_path / "k.S"
    src.write_text("""
        .section .multiboot, "a"
        .align 4
        .long 0x1BADB002, 0x00000003, -(0x1BADB002 + 0x00000003)
        .text
        .globl _start
    _start:
        movl $stack_top, %esp
        outb %al, $0xf4
    1:  hlt
        jmp 1b
        .bss
        .align 16
        .space 8192
    stack_top:
    """)
    obj, elf = tmp_path / "k.o", tmp_path / "k.elf"
    subprocess.run(["as", "--32", "-o", str(obj), str(src)], check=True)
    lds = tmp_path / "k.ld"
    lds.write_text("ENTRY(_start) SECTIONS { . = 0x100000; .multiboot : { *(.multiboot) } "
                   ".text : { *(.text) } .bss : { *(.bss) } }")
    subprocess.run(["ld", "-m", "elf_i386", "-T", str(lds), "-o", str(elf), str(obj)], check=True)
    boot = load_multiboot(mem, elf)
    assert mem.read(0x100000, 4) == struct.pack("<I", 0x1BADB002)
    assert 0x10000C <= boot.entry < 0x100100
    assert mem.read(boot.entry, 5)[:1] == b"\xbc"            # movl $imm, %esp
    end = max(e for _, e in boot.loaded)
    assert end >= 0x100000 + 8192
