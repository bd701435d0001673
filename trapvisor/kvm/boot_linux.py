"""Loading a Linux bzImage per the x86 boot protocol, and entering it in 64-bit mode.

Source of truth: the kernel's Documentation/arch/x86/boot.rst ("The Linux/x86
Boot Protocol") and arch/x86/include/uapi/asm/bootparam.h (struct
boot_params, struct setup_header, struct boot_e820_entry).

The choice, documented in docs/kvm.md: **the 64-bit boot protocol**.  The
CPU starts in long mode with paging on; the page tables identity-map the
first 4 GiB with 2 MiB pages (the protocol asks for the kernel, the zero
page and the command line to be identity-mapped); the GDT has a 64-bit code
segment at __BOOT_CS = 0x10 and a data segment at __BOOT_DS = 0x18; RSI
holds the address of the zero page (struct boot_params) whose setup header
is copied from the image and filled in as a boot loader must (type_of_loader,
cmd_line_ptr, ramdisk_image/size, the E820 table).

Two entry points, same page tables and zero page:

* ``bzimage``: the protected-mode part of the bzImage is loaded at its
  preferred address and entered at load address + 0x200, the protocol's
  64-bit entry: the kernel decompresses itself.  The default with hardware
  assist.
* ``vmlinux``: trapvisor decompresses the payload on the host (LZ4 legacy
  format for Debian's kernel, through liblz4 via ctypes, or a pure-Python
  decoder), loads the ELF vmlinux at its physical addresses and enters it at
  ``startup_64``, as Firecracker does.  The default on software KVM, where the
  guest's own decompressor runs at emulator speed (minutes: the reference
  measured 579 s to a shell with the bzImage against 337 s with vmlinux).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from dataclasses import dataclass, field

from ..errors import UserError
from .entry_state import CpuEntry, Segment

# -- setup header (boot.rst, "The real-mode kernel header") --------------------
HDR_SETUP_SECTS = 0x1F1
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
MIN_PROTOCOL = 0x0206       # cmdline_size and the 64-bit fields we read need >= 2.06 (payload: 2.08)

# -- boot_params (bootparam.h) -------------------------------------------------------
BP_ACPI_RSDP_ADDR = 0x070          # protocol 2.14+: where the ACPI RSDP is
BP_EXT_RAMDISK_IMAGE = 0x0C0
BP_EXT_RAMDISK_SIZE = 0x0C4
BP_EXT_CMD_LINE_PTR = 0x0C8
BP_E820_ENTRIES = 0x1E8
BP_E820_TABLE = 0x2D0
E820_MAX_ENTRIES_ZEROPAGE = 128

# -- where trapvisor puts things (low memory, below the EBDA at 0x9FC00) --------------
BOOT_GDT_ADDR = 0x500
ZERO_PAGE_ADDR = 0x7000
BOOT_STACK_TOP = 0x8FF0
PML4_ADDR = 0x9000
PDPT_ADDR = 0xA000
PD_ADDR = 0xB000            # four page directories, 0xB000-0xEFFF: 4 GiB of 2 MiB pages
CMDLINE_ADDR = 0x20000
DEFAULT_LOAD_ADDR = 0x100_0000   # 16 MiB: Debian's CONFIG_PHYSICAL_START

BOOT_CS, BOOT_DS = 0x10, 0x18
CR0_PE, CR0_ET, CR0_NE, CR0_PG = 1, 0x10, 0x20, 1 << 31
CR4_PAE = 0x20
EFER_LME, EFER_LMA = 0x100, 0x400
MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING = 0x1A0, 1

# Kernel command-line workarounds for software KVM (measured; docs/kvm.md): the
# instruction emulator fails on XSAVE/XRSTOR, SSE3+, CMPXCHG16B, CLAC/STAC,
# POPCNT, RDFSBASE and friends, and kvm_pvm shows the guest the host's feature
# bits for every feature KVM does not report as supported, whatever
# KVM_SET_CPUID2 says, so only the kernel's own clearcpuid= keeps Linux off
# them (Documentation/admin-guide/kernel-parameters.txt, clearcpuid).
SOFTWARE_KVM_CMDLINE = [
    "noxsave",
    "clearcpuid=pni,ssse3,sse4_1,sse4_2,cx16,avx,avx2,fma,aes,pclmulqdq,movbe,xsave,xsaveopt,rdrand,rdseed,smap,popcnt,f16c,fsgsbase,invpcid,rdpid,clflushopt,clwb,bmi1,bmi2,adx,sha_ni,gfni,vaes,vpclmulqdq,avx512f",
    "mitigations=off",
    "cryptomgr.notests",
    "no_timer_check",
]
# So that `reboot` ends the VM: reset through the keyboard controller (port 0x64, 0xFE).
ALWAYS_CMDLINE = ["reboot=k"]


@dataclass
class SetupHeader:
    setup_sects: int
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


@dataclass
class LinuxBoot:
    entry: CpuEntry
    cmdline: str
    kernel_range: tuple[int, int]
    initrd_range: tuple[int, int] | None
    mode: str
    notes: list[str] = field(default_factory=list)


def is_bzimage(data: bytes) -> bool:
    return len(data) > 0x210 and data[HDR_MAGIC:HDR_MAGIC + 4] == b"HdrS"


def parse_setup_header(data: bytes, name: str = "kernel") -> SetupHeader:
    if not is_bzimage(data):
        raise UserError(f"{name} is not a Linux bzImage (no 'HdrS' at 0x202)")
    u8 = lambda o: data[o]                                     # noqa: E731
    u16 = lambda o: struct.unpack_from("<H", data, o)[0]       # noqa: E731
    u32 = lambda o: struct.unpack_from("<I", data, o)[0]       # noqa: E731
    version = u16(HDR_VERSION)
    if version < MIN_PROTOCOL:
        raise UserError(f"{name}: boot protocol {version >> 8}.{version & 0xFF:02d} is too old "
                        f"(trapvisor needs 2.06 or later)")
    end = HDR_JUMP + 2 + u8(HDR_JUMP + 1)      # the header ends where the jump at 0x200 lands
    return SetupHeader(
        setup_sects=u8(HDR_SETUP_SECTS), version=version, loadflags=u8(HDR_LOADFLAGS),
        code32_start=u32(HDR_CODE32_START), initrd_addr_max=u32(HDR_INITRD_ADDR_MAX),
        kernel_alignment=u32(HDR_KERNEL_ALIGNMENT), relocatable=bool(u8(HDR_RELOCATABLE)),
        xloadflags=u16(HDR_XLOADFLAGS) if version >= 0x020C else 0,
        cmdline_size=u32(HDR_CMDLINE_SIZE),
        payload_offset=u32(HDR_PAYLOAD_OFFSET) if version >= 0x0208 else 0,
        payload_length=u32(HDR_PAYLOAD_LENGTH) if version >= 0x0208 else 0,
        pref_address=struct.unpack_from("<Q", data, HDR_PREF_ADDRESS)[0] if version >= 0x020A else DEFAULT_LOAD_ADDR,
        init_size=u32(HDR_INIT_SIZE) if version >= 0x020A else 0,
        raw=bytes(data[HDR_SETUP_SECTS:end]))


# -- the compressed payload -------------------------------------------------------------
LZ4_LEGACY_MAGIC = 0x184C2102
LZ4_LEGACY_BLOCK = 8 << 20


def payload_format(payload: bytes) -> str:
    if payload[:4] == struct.pack("<I", LZ4_LEGACY_MAGIC):
        return "lz4"
    if payload[:2] == b"\x1f\x8b":
        return "gzip"
    if payload[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if payload[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return "unknown"


def _liblz4():
    name = ctypes.util.find_library("lz4") or "liblz4.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    fn = lib.LZ4_decompress_safe
    fn.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int)
    fn.restype = ctypes.c_int
    return fn


def lz4_block_python(src: bytes, limit: int) -> bytes:
    """The LZ4 block format (lz4 Block_format.md), decoded in Python: slow, but no library."""
    out = bytearray()
    i, n = 0, len(src)
    while i < n:
        token = src[i]
        i += 1
        lit = token >> 4
        if lit == 15:
            while True:
                b = src[i]
                i += 1
                lit += b
                if b != 255:
                    break
        out += src[i:i + lit]
        i += lit
        if i >= n:
            break
        offset = src[i] | (src[i + 1] << 8)
        i += 2
        mlen = token & 15
        if mlen == 15:
            while True:
                b = src[i]
                i += 1
                mlen += b
                if b != 255:
                    break
        mlen += 4
        start = len(out) - offset
        if offset >= mlen:
            out += out[start:start + mlen]
        else:                       # overlapping copy: the pattern repeats
            chunk = out[start:]
            reps = -(-mlen // len(chunk))
            out += (chunk * reps)[:mlen]
        if len(out) > limit:
            raise ValueError("LZ4 block larger than its limit")
    return bytes(out)


def lz4_legacy_decompress(payload: bytes) -> bytes:
    """The LZ4 legacy frame the kernel's 'lz4 -l' makes: magic, then (u32 size, block)*.

    The kernel build appends the uncompressed length (4 bytes) after the
    stream; a block header that would run past the end is that trailer.
    """
    fast = _liblz4()
    out = []
    off = 4
    buf = ctypes.create_string_buffer(LZ4_LEGACY_BLOCK) if fast else None
    while off + 4 <= len(payload):
        size = struct.unpack_from("<I", payload, off)[0]
        if size == LZ4_LEGACY_MAGIC:
            off += 4
            continue
        if off + 4 + size > len(payload):
            break
        block = payload[off + 4: off + 4 + size]
        off += 4 + size
        if fast:
            n = fast(block, buf, size, LZ4_LEGACY_BLOCK)
            if n < 0:
                raise UserError("the bzImage's LZ4 payload is corrupt")
            out.append(buf.raw[:n])
        else:
            out.append(lz4_block_python(block, LZ4_LEGACY_BLOCK))
    return b"".join(out)


def decompress_payload(data: bytes, hdr: SetupHeader) -> bytes:
    """The vmlinux ELF inside a bzImage (protocol 2.08+: payload_offset/length)."""
    if not hdr.payload_offset:
        raise UserError("this bzImage predates boot protocol 2.08: no payload to decompress",
                        hint="use --linux-entry bzimage")
    start = hdr.pm_offset + hdr.payload_offset
    payload = data[start:start + hdr.payload_length]
    fmt = payload_format(payload)
    if fmt == "lz4":
        return lz4_legacy_decompress(payload)
    if fmt == "gzip":
        import zlib
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(payload)
    if fmt == "xz":
        import lzma
        return lzma.LZMADecompressor().decompress(payload)
    raise UserError(f"cannot decompress a {fmt} kernel payload on the host",
                    hint="use --linux-entry bzimage (the kernel decompresses itself)")


def elf64_segments(elf: bytes) -> tuple[int, list[tuple[int, bytes, int]]]:
    """(entry, [(paddr, file bytes, memsz)]) of an ELF64 x86-64 vmlinux's PT_LOAD segments."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        raise UserError("the bzImage payload is not an ELF64 vmlinux")
    e_entry, e_phoff = struct.unpack_from("<QQ", elf, 0x18)
    e_phentsize, e_phnum = struct.unpack_from("<HH", elf, 0x36)
    segs = []
    for i in range(e_phnum):
        p_type, _flags, p_offset, _vaddr, p_paddr, p_filesz, p_memsz, _align = \
            struct.unpack_from("<IIQQQQQQ", elf, e_phoff + i * e_phentsize)
        if p_type == 1:      # PT_LOAD
            segs.append((p_paddr, elf[p_offset:p_offset + p_filesz], p_memsz))
    return e_entry, segs


# -- building the zero page, page tables and GDT -------------------------------------
def identity_page_tables(memory) -> int:
    """PML4 -> one PDPT -> four PDs of 2 MiB pages: the first 4 GiB identity-mapped."""
    memory.write(PML4_ADDR, struct.pack("<Q", PDPT_ADDR | 0x3) + bytes(4096 - 8))
    memory.write(PDPT_ADDR, b"".join(struct.pack("<Q", (PD_ADDR + i * 4096) | 0x3) for i in range(4))
                 + bytes(4096 - 32))
    pds = b"".join(struct.pack("<Q", (i << 21) | 0x83) for i in range(4 * 512))   # P RW PS
    memory.write(PD_ADDR, pds)
    return PML4_ADDR


def boot_gdt(memory) -> tuple[int, int]:
    """null, null, __BOOT_CS (64-bit code), __BOOT_DS (data): boot.rst, 64-bit protocol."""
    gdt = struct.pack("<4Q", 0, 0, 0x00AF9B000000FFFF, 0x00CF93000000FFFF)
    memory.write(BOOT_GDT_ADDR, gdt)
    return BOOT_GDT_ADDR, len(gdt) - 1


def write_zero_page(memory, hdr: SetupHeader, *, cmdline_addr: int, initrd: tuple[int, int] | None,
                    e820: list[tuple[int, int, int]], rsdp: int = 0) -> int:
    zp = bytearray(4096)
    zp[HDR_SETUP_SECTS:HDR_SETUP_SECTS + len(hdr.raw)] = hdr.raw
    zp[HDR_TYPE_OF_LOADER] = 0xFF                     # "undefined" boot loader (boot.rst)
    zp[HDR_LOADFLAGS] = hdr.loadflags | LOADED_HIGH | CAN_USE_HEAP
    struct.pack_into("<H", zp, HDR_HEAP_END_PTR, 0xFE00 - 0x200)
    struct.pack_into("<I", zp, HDR_CMD_LINE_PTR, cmdline_addr)
    if initrd:
        addr, size = initrd
        struct.pack_into("<II", zp, HDR_RAMDISK_IMAGE, addr & 0xFFFFFFFF, size & 0xFFFFFFFF)
        struct.pack_into("<II", zp, BP_EXT_RAMDISK_IMAGE, addr >> 32, size >> 32)
    if rsdp and hdr.version >= 0x020E:
        struct.pack_into("<Q", zp, BP_ACPI_RSDP_ADDR, rsdp)
    entries = e820[:E820_MAX_ENTRIES_ZEROPAGE]
    zp[BP_E820_ENTRIES] = len(entries)
    for i, (base, length, kind) in enumerate(entries):
        struct.pack_into("<QQI", zp, BP_E820_TABLE + 20 * i, base, length, kind)
    memory.write(ZERO_PAGE_ADDR, bytes(zp))
    return ZERO_PAGE_ADDR


def long_mode_entry(rip: int, zero_page: int, gdt: tuple[int, int], cr3: int) -> CpuEntry:
    code = Segment(BOOT_CS, 0, 0xFFFFFFFF, type=0xB, l=1, db=0, g=1)
    data = Segment(BOOT_DS, 0, 0xFFFFFFFF, type=0x3, db=1, g=1)
    segs = {"cs": code, "ds": data, "es": data, "ss": data, "fs": data, "gs": data,
            # VM entry needs usable TR and LDTR: a busy 64-bit TSS and an LDT, base 0.
            "tr": Segment(0, 0, 0xFFFF, type=0xB, s=0), "ldt": Segment(0, 0, 0xFFFF, type=0x2, s=0)}
    return CpuEntry(rip=rip, segments=segs, gdt=gdt, idt=(0, 0),
                    cr0=CR0_PE | CR0_ET | CR0_NE | CR0_PG, cr3=cr3, cr4=CR4_PAE,
                    efer=EFER_LME | EFER_LMA, rflags=0x2,
                    registers={"rsi": zero_page, "rsp": BOOT_STACK_TOP},
                    msrs={MSR_IA32_MISC_ENABLE: MISC_ENABLE_FAST_STRING})


# -- the loader ---------------------------------------------------------------------------
def effective_cmdline(user: str, *, software_kvm: bool) -> tuple[str, list[str]]:
    """The user's command line plus trapvisor's additions (those the user did not set)."""
    words = user.split()
    keys = {w.split("=", 1)[0] for w in words}
    added = [w for w in ALWAYS_CMDLINE + (SOFTWARE_KVM_CMDLINE if software_kvm else [])
             if w.split("=", 1)[0] not in keys]
    return " ".join(words + added), added


def _read(path, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise UserError(f"cannot read {what} {path}: {e.strerror or e}") from None


def load_linux(memory, path, *, initrd=None, cmdline: str = "", software_kvm: bool = False,
               entry: str = "auto", rsdp: int = 0) -> LinuxBoot:
    from ..machine import bios
    name = os.path.basename(str(path))
    data = _read(path, "kernel")
    hdr = parse_setup_header(data, name)
    mode = entry if entry != "auto" else ("vmlinux" if software_kvm else "bzimage")
    notes = []
    if mode == "bzimage":
        if not hdr.xloadflags & XLF_KERNEL_64:
            raise UserError(f"{name} has no 64-bit entry point (XLF_KERNEL_64 clear)")
        load = max(hdr.pref_address, DEFAULT_LOAD_ADDR) if hdr.relocatable else hdr.code32_start
        image = data[hdr.pm_offset:]
        end = load + max(len(image), hdr.init_size)
        _check_fits(memory, load, end, f"{name} (protected-mode part plus init_size)")
        memory.write(load, image)
        rip = load + 0x200
        notes.append(f"Linux: 64-bit boot protocol, bzImage entered at {rip:#x} (the kernel decompresses itself)")
    elif mode == "vmlinux":
        elf = decompress_payload(data, hdr)
        rip, segs = elf64_segments(elf)
        load, end = min(p for p, _, _ in segs), max(p + max(m, len(d)) for p, d, m in segs)
        _check_fits(memory, load, end, f"{name}'s vmlinux")
        for paddr, blob, memsz in segs:
            memory.write(paddr, blob)
            if memsz > len(blob):
                memory.fill(paddr + len(blob), memsz - len(blob))
        rip &= 0x7FFF_FFFF_FFFF      # e_entry is physical (phys_startup_64) in x86-64 vmlinux
        notes.append(f"Linux: 64-bit boot protocol, payload ({payload_format(data[hdr.pm_offset + hdr.payload_offset:][:8])}, "
                     f"{len(elf) >> 20} MiB) decompressed on the host and vmlinux entered at startup_64 {rip:#x}"
                     + (" (software KVM: the guest's own decompressor would take minutes)" if software_kvm else ""))
    else:
        raise UserError(f"unknown Linux entry {entry!r}: expected auto, bzimage or vmlinux")

    full_cmdline, added = effective_cmdline(cmdline, software_kvm=software_kvm)
    if added:
        why = "software-KVM workarounds and reboot=k" if software_kvm else "so that reboot ends the VM"
        notes.append(f"Linux command line: added {' '.join(added)} ({why})")
    raw_cmd = full_cmdline.encode() + b"\0"
    if hdr.cmdline_size and len(raw_cmd) > hdr.cmdline_size + 1:
        raise UserError(f"kernel command line is {len(raw_cmd) - 1} bytes; {name} takes at most {hdr.cmdline_size}")
    memory.write(CMDLINE_ADDR, raw_cmd)

    initrd_range = None
    if initrd:
        blob = _read(initrd, "initrd")
        initrd_range = place_initrd(memory.size, len(blob), kernel_end=end, addr_max=hdr.initrd_addr_max,
                                    name=os.path.basename(str(initrd)))
        memory.write(initrd_range[0], blob)
    zp = write_zero_page(memory, hdr, cmdline_addr=CMDLINE_ADDR, initrd=initrd_range,
                         e820=bios.e820_map(memory.size), rsdp=rsdp)
    cr3 = identity_page_tables(memory)
    gdt = boot_gdt(memory)
    return LinuxBoot(long_mode_entry(rip, zp, gdt, cr3), full_cmdline, (load, end), initrd_range, mode, notes)


def _check_fits(memory, start: int, end: int, what: str) -> None:
    if end > memory.size:
        raise UserError(f"{what} needs memory up to {end >> 20} MiB; the guest has {memory.size >> 20} MiB",
                        hint="give more with --memory")


def place_initrd(mem_size: int, size: int, *, kernel_end: int, addr_max: int, name: str = "initrd") -> tuple[int, int]:
    """As high as allowed (below initrd_addr_max and the top of RAM), page-aligned, above the kernel."""
    top = min(mem_size, (addr_max or 0x37FFFFFF) + 1)
    addr = (top - size) & ~0xFFF
    if addr < kernel_end or size > mem_size:
        raise UserError(f"initrd {name} ({size / (1 << 20):.1f} MiB) does not fit in guest memory "
                        f"({mem_size >> 20} MiB) above the kernel (which ends at {kernel_end >> 20} MiB)",
                        hint="give more memory with --memory, or a smaller initrd")
    return addr, size
