"""Booting a Multiboot kernel the way ``qemu -kernel`` does.

Rules from the Multiboot Specification 0.6.96:

* 3.1 "OS image format": the header lies within the first 8192 bytes of the
  image, 32-bit aligned: magic 0x1BADB002, flags, checksum (magic + flags +
  checksum = 0 mod 2^32).  Flags bits 0-15 are requirements (0: page-align
  modules, 1: memory information, 2: video mode); a loader that cannot meet
  one must refuse the kernel.  Bit 16 selects the address fields
  ("a.out kludge"): header_addr, load_addr, load_end_addr (0 = to the end of
  the file), bss_end_addr (0 = no bss), entry_addr.  Without bit 16 the image
  must be ELF and its program headers say where it goes.
* 3.2 "Machine state": EAX = 0x2BADB002, EBX = physical address of the
  Multiboot information structure, flat 32-bit CS and data segments, A20 on,
  CR0.PE = 1 and PG = 0, EFLAGS.VM = 0 and IF = 0; ESP, GDTR and IDTR
  undefined (see ``boot_state.py`` for the values chosen).
* 3.3 "Boot information format": flags, mem_lower/mem_upper, boot_device,
  cmdline, mods_count/mods_addr (16-byte entries: mod_start, mod_end, string,
  reserved), mmap_length/mmap_addr (entries of size, base_addr, length, type,
  the size field not counted in itself), boot_loader_name.

What QEMU does (hw/i386/multiboot.c and pc-bios/optionrom/multiboot.S), and
trapvisor with it:

* the same information flags: memory, boot device (0x8000FFFF: first BIOS
  hard disk, whole disk), command line, modules, memory map, boot loader name;
  no symbol table, drives, APM or VBE information;
* the memory map at 0x9000 and the information structure at 0x9500
  (QEMU's ADDR_E820_MAP / ADDR_MBI); trapvisor also puts the module list and
  all strings right after it in low memory (QEMU puts those after the
  kernel).  If the kernel itself occupies that area, all of it moves to the
  first free page after the kernel and its modules;
* mem_lower is what INT 12h reports (639 KiB: 1 KiB EBDA below 640 KiB),
  mem_upper the RAM contiguous from 1 MiB, from the E820 map (``bios.py``);
* the command line is the kernel's path, a space, and the arguments;
* modules are loaded page-aligned after the kernel, in order; a module
  given as one string "PATH ARGS" gets that whole string as its string;
* a kernel with the VBE bit (2) set is loaded without video information
  (QEMU only warns); unknown requirement bits 3-15 are refused.
* a.out-kludge kernels are loaded from the file offset that puts the header
  at header_addr; ELF kernels (bit 16 clear) by their PT_LOAD segments at
  p_paddr (``elf.py``; the entry point translated to physical if needed).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from ...errors import UserError
from .. import bios
from .boot_state import (
    BootState, Layout, check_in_memory, flat_protected_mode, load_segments, page_align, read_file,
)
from .elf import is_elf, parse_elf32

MULTIBOOT_HEADER_MAGIC = 0x1BADB002
MULTIBOOT_BOOTLOADER_MAGIC = 0x2BADB002
MULTIBOOT_SEARCH = 8192
MULTIBOOT_HEADER_ALIGN = 4

# Header flags
MULTIBOOT_PAGE_ALIGN = 1 << 0
MULTIBOOT_MEMORY_INFO = 1 << 1
MULTIBOOT_VIDEO_MODE = 1 << 2
MULTIBOOT_AOUT_KLUDGE = 1 << 16
SUPPORTED_REQUIREMENTS = MULTIBOOT_PAGE_ALIGN | MULTIBOOT_MEMORY_INFO | MULTIBOOT_VIDEO_MODE

# Information structure flags
MULTIBOOT_INFO_MEMORY = 1 << 0
MULTIBOOT_INFO_BOOTDEV = 1 << 1
MULTIBOOT_INFO_CMDLINE = 1 << 2
MULTIBOOT_INFO_MODS = 1 << 3
MULTIBOOT_INFO_AOUT_SYMS = 1 << 4
MULTIBOOT_INFO_ELF_SHDR = 1 << 5
MULTIBOOT_INFO_MEM_MAP = 1 << 6
MULTIBOOT_INFO_DRIVE_INFO = 1 << 7
MULTIBOOT_INFO_CONFIG_TABLE = 1 << 8
MULTIBOOT_INFO_BOOT_LOADER_NAME = 1 << 9
MULTIBOOT_INFO_APM_TABLE = 1 << 10
MULTIBOOT_INFO_VBE_INFO = 1 << 11

# Information structure offsets
MBI_FLAGS = 0
MBI_MEM_LOWER = 4
MBI_MEM_UPPER = 8
MBI_BOOT_DEVICE = 12
MBI_CMDLINE = 16
MBI_MODS_COUNT = 20
MBI_MODS_ADDR = 24
MBI_MMAP_LENGTH = 44
MBI_MMAP_ADDR = 48
MBI_BOOT_LOADER_NAME = 64
MBI_SIZE = 88
MB_MOD_SIZE = 16
MMAP_ENTRY_SIZE = 20                 # the value of each entry's size field

MULTIBOOT_STRUCT_ADDR = 0x9000       # QEMU's: the memory map here ...
MBI_OFFSET = 0x500                   # ... and the information structure 0x500 above it
BOOT_DEVICE_FIRST_DISK = 0x8000FFFF
BOOT_LOADER_NAME = "trapvisor"


@dataclass
class MultibootHeader:
    offset: int
    flags: int
    header_addr: int = 0
    load_addr: int = 0
    load_end_addr: int = 0
    bss_end_addr: int = 0
    entry_addr: int = 0


def find_header(data: bytes) -> MultibootHeader | None:
    """The first valid Multiboot header in the first 8192 bytes, or None."""
    limit = min(len(data), MULTIBOOT_SEARCH) - 12
    for off in range(0, limit + 1, MULTIBOOT_HEADER_ALIGN):
        magic, flags, checksum = struct.unpack_from("<III", data, off)
        if magic == MULTIBOOT_HEADER_MAGIC and (magic + flags + checksum) & 0xFFFFFFFF == 0:
            hdr = MultibootHeader(off, flags)
            if flags & MULTIBOOT_AOUT_KLUDGE:
                if off + 32 > len(data):
                    return hdr                # caught by the caller as truncated
                (hdr.header_addr, hdr.load_addr, hdr.load_end_addr, hdr.bss_end_addr,
                 hdr.entry_addr) = struct.unpack_from("<5I", data, off + 12)
            return hdr
    return None


def is_multiboot(data: bytes) -> bool:
    return find_header(data) is not None


def _aout_segments(data: bytes, hdr: MultibootHeader, name: str):
    if hdr.offset + 32 > len(data):
        raise UserError(f"{name}: Multiboot header with address fields is truncated")
    if hdr.load_addr > hdr.header_addr:
        raise UserError(f"{name}: Multiboot load_addr {hdr.load_addr:#x} is above "
                        f"header_addr {hdr.header_addr:#x}")
    file_off = hdr.offset - (hdr.header_addr - hdr.load_addr)
    if file_off < 0:
        raise UserError(f"{name}: Multiboot header_addr/load_addr put the image before the file start")
    if hdr.load_end_addr:
        if hdr.load_end_addr < hdr.load_addr:
            raise UserError(f"{name}: Multiboot load_end_addr {hdr.load_end_addr:#x} is below "
                            f"load_addr {hdr.load_addr:#x}")
        size = hdr.load_end_addr - hdr.load_addr
        if file_off + size > len(data):
            raise UserError(f"{name}: Multiboot load_end_addr {hdr.load_end_addr:#x} lies beyond "
                            f"the end of the file")
    else:
        size = len(data) - file_off
    end = hdr.load_addr + size
    if hdr.bss_end_addr:
        if hdr.bss_end_addr < end:
            raise UserError(f"{name}: Multiboot bss_end_addr {hdr.bss_end_addr:#x} is below "
                            f"the end of the loaded image {end:#x}")
        memsz = hdr.bss_end_addr - hdr.load_addr
    else:
        memsz = size
    return [(hdr.load_addr, data[file_off:file_off + size], memsz)], hdr.entry_addr


def _module_spec(spec) -> tuple[str, str]:
    if isinstance(spec, (tuple, list)):
        path, string = spec
        return str(path), str(string)
    spec = str(spec)
    path = spec.split(" ", 1)[0]
    return path, spec


def _cstr(text: str) -> bytes:
    return text.encode("utf-8", "replace").replace(b"\0", b" ") + b"\0"


def load_multiboot(memory, path, *, cmdline: str = "", modules=(),
                   boot_loader_name: str = BOOT_LOADER_NAME,
                   boot_device: int | None = BOOT_DEVICE_FIRST_DISK) -> BootState:
    """Load a Multiboot kernel and its modules; returns the boot state (EAX/EBX set)."""
    name = os.path.basename(str(path))
    data = read_file(path, "kernel")
    hdr = find_header(data)
    if hdr is None:
        raise UserError(f"{name} is not a Multiboot kernel (no Multiboot header in its first "
                        f"{MULTIBOOT_SEARCH} bytes)")
    unknown = hdr.flags & 0xFFFF & ~SUPPORTED_REQUIREMENTS
    if unknown:
        raise UserError(f"{name} requires Multiboot features trapvisor does not provide "
                        f"(header flags {unknown:#x})")
    if hdr.flags & MULTIBOOT_AOUT_KLUDGE:
        segments, entry = _aout_segments(data, hdr, name)
    else:
        if not is_elf(data):
            raise UserError(f"{name} is neither ELF nor a Multiboot kernel with address "
                            f"fields (header flag bit 16)")
        segments, entry = parse_elf32(data, path)

    layout = Layout.for_pc(memory.size)
    loaded = load_segments(memory, segments, path, layout)
    kernel_end = max(end for _, end in loaded)

    mod_specs = [_module_spec(spec) for spec in modules]

    # The information block: memory map, MBI, module list, strings.  At 0x9000
    # unless the kernel is there; then after the kernel and its modules.
    mmap = b"".join(struct.pack("<IQQI", MMAP_ENTRY_SIZE, base, length, typ)
                    for base, length, typ in bios.e820_map(memory.size))
    assert len(mmap) <= MBI_OFFSET
    full_cmdline = f"{path} {cmdline}"
    strings = [_cstr(full_cmdline), _cstr(boot_loader_name)] + [_cstr(s) for _, s in mod_specs]
    block_size = MBI_OFFSET + MBI_SIZE + MB_MOD_SIZE * len(mod_specs) + sum(len(s) for s in strings)
    base = None
    if not layout.overlaps(MULTIBOOT_STRUCT_ADDR, MULTIBOOT_STRUCT_ADDR + block_size) \
            and MULTIBOOT_STRUCT_ADDR + block_size <= min(memory.size, bios.EBDA_BASE):
        base = layout.place(block_size, prefer=MULTIBOOT_STRUCT_ADDR, what="Multiboot information")

    # Modules: page-aligned after the kernel, in order.
    mods = []
    after = page_align(kernel_end)
    for mpath, string in mod_specs:
        mname = os.path.basename(mpath)
        mdata = read_file(mpath, "module")
        size = len(mdata)
        if size > memory.size:
            raise UserError(f"module {mname} ({size} bytes) is larger than guest memory "
                            f"({memory.size // 1024} KiB)")
        start = layout.place(max(size, 1), after=after, align=0x1000, what=f"module {mname}")
        check_in_memory(memory, start, start + size, f"module {mname}")
        if mdata:
            memory.write(start, mdata)
        mods.append((start, start + size, string))
        after = page_align(start + size)

    if base is None:
        base = layout.place(block_size, after=after, align=0x1000, what="Multiboot information")
    mmap_addr = base
    mbi_addr = base + MBI_OFFSET
    mods_addr = mbi_addr + MBI_SIZE
    p = mods_addr + MB_MOD_SIZE * len(mods)
    string_addrs = []
    blob = bytearray()
    for s in strings:
        string_addrs.append(p + len(blob))
        blob += s
    cmdline_addr, name_addr, mod_string_addrs = string_addrs[0], string_addrs[1], string_addrs[2:]

    mem_lower = min(bios.BASE_MEMORY_KIB, memory.size // 1024)
    mem_upper = _contiguous_kib_above_1mib(memory.size)
    flags = (MULTIBOOT_INFO_MEMORY | MULTIBOOT_INFO_CMDLINE | MULTIBOOT_INFO_MODS
             | MULTIBOOT_INFO_MEM_MAP | MULTIBOOT_INFO_BOOT_LOADER_NAME)
    if boot_device is not None:
        flags |= MULTIBOOT_INFO_BOOTDEV
    mbi = bytearray(MBI_SIZE)
    struct.pack_into("<IIIIIII", mbi, 0, flags, mem_lower, mem_upper,
                     boot_device if boot_device is not None else 0, cmdline_addr, len(mods),
                     mods_addr)
    struct.pack_into("<II", mbi, MBI_MMAP_LENGTH, len(mmap), mmap_addr)
    struct.pack_into("<I", mbi, MBI_BOOT_LOADER_NAME, name_addr)
    modlist = b"".join(struct.pack("<IIII", s, e, a, 0) for (s, e, _), a in zip(mods, mod_string_addrs))

    memory.write(mmap_addr, mmap)
    memory.write(mbi_addr, bytes(mbi) + modlist + bytes(blob))

    return flat_protected_mode(memory, layout, kind="multiboot", entry=entry,
                               eax=MULTIBOOT_BOOTLOADER_MAGIC, ebx=mbi_addr, loaded=loaded,
                               path=path, info_addr=mbi_addr, modules=mods)


def _contiguous_kib_above_1mib(memory_size: int) -> int:
    """mem_upper: KiB of RAM from 1 MiB up to the first hole in the E820 map."""
    top = 1 << 20
    changed = True
    while changed:
        changed = False
        for base, length, typ in bios.e820_map(memory_size):
            if typ == bios.E820_RAM and base <= top < base + length:
                top = base + length
                changed = True
    return (top - (1 << 20)) // 1024
