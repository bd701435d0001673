"""Booting a Linux bzImage by the x86 boot protocol's 32-bit entry.

Source of truth: the kernel's Documentation/arch/x86/boot.rst ("The Linux/x86
Boot Protocol": "The Real-Mode Kernel Header", "Details of Header Fields",
"32-bit Boot Protocol") and arch/x86/include/uapi/asm/bootparam.h (struct
boot_params, struct setup_header, struct boot_e820_entry).

* Recognition: a bzImage has "HdrS" at 0x202 and the protocol version at
  0x206; trapvisor needs 2.06 or later (cmdline_size), and a big kernel
  (LOADED_HIGH in loadflags: the protected-mode part goes at 1 MiB).
* The protected-mode kernel starts at file offset (setup_sects + 1) * 512
  (setup_sects 0 meaning 4) and is ``syssize`` 16-byte paragraphs long; a
  file shorter than that, or than the payload it declares, is truncated.
* The zero page (struct boot_params) starts zeroed, so screen_info (0x000)
  and apm_bios_info (0x040) say "no video, no APM"; the setup header is
  copied from the image to 0x1F1 and filled as a boot loader must:
  type_of_loader 0xFF (undefined), LOADED_HIGH, cmd_line_ptr,
  ramdisk_image/ramdisk_size (and their ext_ halves, 2.12+), the E820 table
  at 0x2D0 with its count at 0x1E8, and acpi_rsdp_addr (0x070, 2.14+).
* 32-bit entry: protected mode, paging off, interrupts off; a GDT with flat
  4 GiB __BOOT_CS (0x10, execute/read) and __BOOT_DS (0x18, read/write);
  CS = __BOOT_CS, DS = ES = SS = __BOOT_DS; ESI = the zero page; EBP, EDI
  and EBX zero.  The entry point is ``code32_start``, where the
  protected-mode kernel was loaded.

Two ways in, the same zero page and machine state:

* ``bzimage``: the protected-mode part is loaded at ``code32_start``
  (1 MiB) and entered there: the kernel's own decompressor runs.
* ``vmlinux``: trapvisor decompresses the payload on the host
  (``linux_payload.py``), loads the ELF32 vmlinux by its physical addresses
  and enters it at its entry point (startup_32, which takes the same
  32-bit protocol state).  The default on the simulated PC, whose CPU would
  spend minutes in the decompressor.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from ...errors import UserError
from .. import bios
from .boot_state import (
    BootState, RESET_LDTR, RESET_TR, descriptor, read_file, segment_from_descriptor,
)

# -- setup header (boot.rst, "The Real-Mode Kernel Header") --------------------
HDR_SETUP_SECTS = 0x1F1
HDR_SYSSIZE = 0x1F4
HDR_BOOT_FLAG = 0x1FE
HDR_JUMP = 0x200
HDR_MAGIC = 0x202          # "HdrS"
HDR_VERSION = 0x206
HDR_TYPE_OF_LOADER = 0x210
HDR_LOADFLAGS = 0x211
HDR_CODE32_START = 0x214
HDR_RAMDISK_IMAGE = 0x218
HDR_RAMDISK_SIZE = 0x21C
HDR_HEAP_END_PTR = 0x224
HDR_CMD_LINE_PTR = 0x228
HDR_INITRD_ADDR_MAX = 0x22C
HDR_KERNEL_ALIGNMENT = 0x230
HDR_RELOCATABLE = 0x234
HDR_XLOADFLAGS = 0x236
HDR_CMDLINE_SIZE = 0x238
HDR_PAYLOAD_OFFSET = 0x248
HDR_PAYLOAD_LENGTH = 0x24C
HDR_PREF_ADDRESS = 0x258
HDR_INIT_SIZE = 0x260

LOADED_HIGH = 0x01
CAN_USE_HEAP = 0x80
XLF_KERNEL_64 = 0x01
TYPE_OF_LOADER_UNDEFINED = 0xFF
MIN_PROTOCOL = 0x0206       # cmdline_size; the payload fields need 2.08, pref_address 2.10
DEFAULT_INITRD_ADDR_MAX = 0x37FFFFFF   # boot.rst: what kernels before 2.03 allowed

# -- boot_params (bootparam.h) -------------------------------------------------------
BP_SCREEN_INFO = 0x000
BP_APM_BIOS_INFO = 0x040
BP_ACPI_RSDP_ADDR = 0x070          # protocol 2.14+: where the ACPI RSDP is
BP_EXT_RAMDISK_IMAGE = 0x0C0
BP_EXT_RAMDISK_SIZE = 0x0C4
BP_EXT_CMD_LINE_PTR = 0x0C8
BP_E820_ENTRIES = 0x1E8
BP_E820_TABLE = 0x2D0
E820_MAX_ENTRIES_ZEROPAGE = 128
ZERO_PAGE_SIZE = 4096

# -- where trapvisor puts things (low memory, below the EBDA at 0x9FC00) --------------
BOOT_GDT_ADDR = 0x500
ZERO_PAGE_ADDR = 0x7000
CMDLINE_ADDR = 0x20000
DEFAULT_LOAD_ADDR = 0x100_0000   # 16 MiB: Debian's CONFIG_PHYSICAL_START
PROTECTED_MODE_ADDR = 0x10_0000  # where a big kernel's protected-mode part goes (code32_start)

# boot.rst, 32-bit protocol: __BOOT_CS = 0x10, __BOOT_DS = 0x18.
BOOT_CS, BOOT_DS = 0x10, 0x18
LINUX_GDT_ENTRIES = (
    bytes(8), bytes(8),
    descriptor(0, 0xFFFFF, 0x9B, 0xC),   # __BOOT_CS: flat 32-bit execute/read, 4 KiB granular
    descriptor(0, 0xFFFFF, 0x93, 0xC),   # __BOOT_DS: flat 32-bit read/write
)
LINUX_GDT = b"".join(LINUX_GDT_ENTRIES)
BOOT_CODE = segment_from_descriptor(BOOT_CS, LINUX_GDT_ENTRIES[2])
BOOT_DATA = segment_from_descriptor(BOOT_DS, LINUX_GDT_ENTRIES[3])


@dataclass
class SetupHeader:
    setup_sects: int
    syssize: int
    version: int
    loadflags: int
    code32_start: int
    initrd_addr_max: int
    kernel_alignment: int
    relocatable: bool
    xloadflags: int
    cmdline_size: int
    payload_offset: int
    payload_length: int
    pref_address: int
    init_size: int
    raw: bytes          # the header bytes to copy into the zero page

    @property
    def pm_offset(self) -> int:
        """File offset of the protected-mode kernel (boot.rst: (setup_sects+1)*512)."""
        return ((self.setup_sects or 4) + 1) * 512

    @property
    def version_text(self) -> str:
        return f"{self.version >> 8}.{self.version & 0xFF:02d}"


def is_bzimage(data: bytes) -> bool:
    return len(data) > 0x210 and data[HDR_MAGIC:HDR_MAGIC + 4] == b"HdrS"


def parse_setup_header(data: bytes, name: str = "kernel") -> SetupHeader:
    if not is_bzimage(data):
        raise UserError(f"{name} is not a Linux bzImage (no 'HdrS' at 0x202)")
    if len(data) < HDR_INIT_SIZE + 4:
        raise UserError(f"{name} is truncated: {len(data)} bytes end inside its setup header")
    u8 = lambda o: data[o]                                     # noqa: E731
    u16 = lambda o: struct.unpack_from("<H", data, o)[0]       # noqa: E731
    u32 = lambda o: struct.unpack_from("<I", data, o)[0]       # noqa: E731
    version = u16(HDR_VERSION)
    if version < MIN_PROTOCOL:
        raise UserError(f"{name}: boot protocol {version >> 8}.{version & 0xFF:02d} is too old "
                        f"(trapvisor needs 2.06 or later)")
    end = HDR_JUMP + 2 + u8(HDR_JUMP + 1)      # the header ends where the jump at 0x200 lands
    return SetupHeader(
        setup_sects=u8(HDR_SETUP_SECTS), syssize=u32(HDR_SYSSIZE), version=version,
        loadflags=u8(HDR_LOADFLAGS),
        code32_start=u32(HDR_CODE32_START), initrd_addr_max=u32(HDR_INITRD_ADDR_MAX),
        kernel_alignment=u32(HDR_KERNEL_ALIGNMENT), relocatable=bool(u8(HDR_RELOCATABLE)),
        xloadflags=u16(HDR_XLOADFLAGS) if version >= 0x020C else 0,
        cmdline_size=u32(HDR_CMDLINE_SIZE),
        payload_offset=u32(HDR_PAYLOAD_OFFSET) if version >= 0x0208 else 0,
        payload_length=u32(HDR_PAYLOAD_LENGTH) if version >= 0x0208 else 0,
        pref_address=struct.unpack_from("<Q", data, HDR_PREF_ADDRESS)[0] if version >= 0x020A else DEFAULT_LOAD_ADDR,
        init_size=u32(HDR_INIT_SIZE) if version >= 0x020A else 0,
        raw=bytes(data[HDR_SETUP_SECTS:end]))


def check_complete(data: bytes, hdr: SetupHeader, name: str) -> None:
    """A file shorter than its protected-mode part (syssize) or its payload is truncated."""
    need = hdr.pm_offset + max(hdr.syssize * 16, hdr.payload_offset + hdr.payload_length)
    if len(data) < need or len(data) <= hdr.pm_offset:
        raise UserError(f"{name} is truncated: its header describes {need} bytes, the file has {len(data)}")


# -- the zero page --------------------------------------------------------------------
def write_zero_page(memory, hdr: SetupHeader, *, cmdline_addr: int, initrd: tuple[int, int] | None,
                    e820: list[tuple[int, int, int]], rsdp: int = 0, addr: int = ZERO_PAGE_ADDR) -> int:
    """struct boot_params at ``addr``: zeroed (screen_info, apm_bios_info: none), the image's
    setup header, and what the loader fills in (boot.rst, "Details of Header Fields")."""
    zp = bytearray(ZERO_PAGE_SIZE)
    zp[HDR_SETUP_SECTS:HDR_SETUP_SECTS + len(hdr.raw)] = hdr.raw
    zp[HDR_TYPE_OF_LOADER] = TYPE_OF_LOADER_UNDEFINED
    zp[HDR_LOADFLAGS] = hdr.loadflags | LOADED_HIGH | CAN_USE_HEAP
    struct.pack_into("<H", zp, HDR_HEAP_END_PTR, 0xFE00 - 0x200)
    struct.pack_into("<I", zp, HDR_CMD_LINE_PTR, cmdline_addr)
    if initrd:
        base, size = initrd
        struct.pack_into("<II", zp, HDR_RAMDISK_IMAGE, base & 0xFFFFFFFF, size & 0xFFFFFFFF)
        struct.pack_into("<II", zp, BP_EXT_RAMDISK_IMAGE, base >> 32, size >> 32)
    if rsdp and hdr.version >= 0x020E:
        struct.pack_into("<Q", zp, BP_ACPI_RSDP_ADDR, rsdp)
    entries = e820[:E820_MAX_ENTRIES_ZEROPAGE]
    zp[BP_E820_ENTRIES] = len(entries)
    for i, (base, length, kind) in enumerate(entries):
        struct.pack_into("<QQI", zp, BP_E820_TABLE + 20 * i, base, length, kind)
    memory.write(addr, bytes(zp))
    return addr


def write_cmdline(memory, hdr: SetupHeader, cmdline: str, name: str, addr: int = CMDLINE_ADDR) -> int:
    raw = cmdline.encode() + b"\0"
    if hdr.cmdline_size and len(raw) > hdr.cmdline_size + 1:
        raise UserError(f"kernel command line is {len(raw) - 1} bytes; {name} takes at most {hdr.cmdline_size}")
    memory.write(addr, raw)
    return addr


def check_fits(memory, start: int, end: int, what: str) -> None:
    if end > memory.size:
        raise UserError(f"{what} needs memory up to {-(-end >> 20)} MiB; the guest has {memory.size >> 20} MiB",
                        hint="give more with --memory")


def place_initrd(mem_size: int, size: int, *, kernel_end: int, addr_max: int, name: str = "initrd") -> tuple[int, int]:
    """As high as allowed (below initrd_addr_max and the top of RAM), page-aligned, above the kernel."""
    top = min(mem_size, (addr_max or DEFAULT_INITRD_ADDR_MAX) + 1)
    addr = (top - size) & ~0xFFF
    if addr < kernel_end or size > mem_size:
        raise UserError(f"initrd {name} ({size / (1 << 20):.1f} MiB) does not fit in guest memory "
                        f"({mem_size >> 20} MiB) above the kernel (which ends at {kernel_end >> 20} MiB)",
                        hint="give more memory with --memory, or a smaller initrd")
    return addr, size


# -- the 32-bit entry ------------------------------------------------------------------
def protected_mode_entry(memory, *, entry: int, zero_page: int, loaded, path) -> BootState:
    """boot.rst "32-bit Boot Protocol": the GDT with __BOOT_CS/__BOOT_DS, ESI = boot_params."""
    memory.write(BOOT_GDT_ADDR, LINUX_GDT)
    regs = {"eax": 0, "ecx": 0, "edx": 0, "ebx": 0, "esp": 0, "ebp": 0, "esi": zero_page, "edi": 0}
    segs = {"cs": BOOT_CODE, "ds": BOOT_DATA, "es": BOOT_DATA, "fs": BOOT_DATA, "gs": BOOT_DATA,
            "ss": BOOT_DATA, "tr": RESET_TR, "ldtr": RESET_LDTR}
    return BootState(kind="linux", entry=entry, registers=regs, segments=segs, gdt_base=BOOT_GDT_ADDR,
                     gdt_limit=len(LINUX_GDT) - 1, info_addr=zero_page, loaded=list(loaded), path=str(path))


def load_vmlinux_payload(memory, data: bytes, hdr: SetupHeader, path, name: str) -> tuple[int, list]:
    """Decompress the payload and load the ELF32 vmlinux by its physical addresses."""
    from .elf import parse_elf32
    from .linux_payload import decompress_payload
    elf = decompress_payload(data, hdr)
    if elf[:4] == b"\x7fELF" and len(elf) > 4 and elf[4] == 2:
        raise UserError(f"{name} is a 64-bit kernel; the simulated PC is a 32-bit i386 machine",
                        hint="boot it with --accel kvm, or use an i386 (686) kernel")
    segments, entry = parse_elf32(elf, f"{name}'s vmlinux")
    ranges = []
    for paddr, blob, memsz in segments:
        check_fits(memory, paddr, paddr + max(memsz, len(blob)), f"{name}'s vmlinux")
    for paddr, blob, memsz in segments:
        memory.write(paddr, blob)
        if memsz > len(blob):
            memory.fill(paddr + len(blob), memsz - len(blob), 0)
        ranges.append((paddr, paddr + max(memsz, len(blob))))
    return entry, ranges


def load_bzimage(memory, path, *, initrd=None, cmdline: str = "", entry: str = "vmlinux",
                 rsdp: int = 0) -> BootState:
    """Load a bzImage (and initrd) for the 32-bit entry; ``entry`` is "bzimage" or "vmlinux"."""
    name = os.path.basename(str(path))
    data = read_file(path, "kernel")
    hdr = parse_setup_header(data, name)
    check_complete(data, hdr, name)
    if not hdr.loadflags & LOADED_HIGH:
        raise UserError(f"{name} is a zImage (loadflags.LOADED_HIGH clear): only bzImages load at 1 MiB")
    if entry == "bzimage":
        load = hdr.code32_start or PROTECTED_MODE_ADDR
        image = data[hdr.pm_offset:]
        # The decompressor works in place up to init_size above the (aligned) load address.
        end = max(load + len(image), (hdr.pref_address if hdr.relocatable else load) + hdr.init_size)
        check_fits(memory, load, end, f"{name} (protected-mode part plus init_size)")
        memory.write(load, image)
        start, ranges = load, [(load, load + len(image))]
    elif entry == "vmlinux":
        start, ranges = load_vmlinux_payload(memory, data, hdr, path, name)
        end = max(e for _, e in ranges)
    else:
        raise UserError(f"unknown Linux entry {entry!r}: expected bzimage or vmlinux")
    write_cmdline(memory, hdr, cmdline, name)
    initrd_range = None
    if initrd:
        blob = read_file(initrd, "initrd")
        initrd_range = place_initrd(memory.size, len(blob), kernel_end=end, addr_max=hdr.initrd_addr_max,
                                    name=os.path.basename(str(initrd)))
        memory.write(initrd_range[0], blob)
        ranges.append((initrd_range[0], initrd_range[0] + len(blob)))
    zp = write_zero_page(memory, hdr, cmdline_addr=CMDLINE_ADDR, initrd=initrd_range,
                         e820=bios.e820_map(memory.size), rsdp=rsdp)
    boot = protected_mode_entry(memory, entry=start, zero_page=zp, loaded=ranges, path=path)
    boot.modules = [(initrd_range[0], initrd_range[0] + initrd_range[1], "initrd")] if initrd_range else []
    return boot
