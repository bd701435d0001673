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

import os
import struct
from dataclasses import dataclass, field

from ..errors import UserError
from .entry_state import CpuEntry, Segment

# The boot protocol's header, payload, zero page and initrd placement are shared with the
# simulated PC's 32-bit entry (machine/loader/bzimage.py, linux_payload.py).
from ..machine.loader.bzimage import (  # noqa: E402,F401  (re-exported for the KVM tests)
    BP_ACPI_RSDP_ADDR, BP_E820_ENTRIES, BP_E820_TABLE, BP_EXT_CMD_LINE_PTR, BP_EXT_RAMDISK_IMAGE,
    BP_EXT_RAMDISK_SIZE, CAN_USE_HEAP, CMDLINE_ADDR, DEFAULT_LOAD_ADDR, E820_MAX_ENTRIES_ZEROPAGE,
    HDR_BOOT_FLAG, HDR_CMD_LINE_PTR, HDR_CMDLINE_SIZE, HDR_CODE32_START, HDR_HEAP_END_PTR,
    HDR_INIT_SIZE, HDR_INITRD_ADDR_MAX, HDR_JUMP, HDR_KERNEL_ALIGNMENT, HDR_LOADFLAGS, HDR_MAGIC,
    HDR_PAYLOAD_LENGTH, HDR_PAYLOAD_OFFSET, HDR_PREF_ADDRESS, HDR_RAMDISK_IMAGE, HDR_RAMDISK_SIZE,
    HDR_RELOCATABLE, HDR_SETUP_SECTS, HDR_TYPE_OF_LOADER, HDR_VERSION, HDR_XLOADFLAGS, LOADED_HIGH,
    MIN_PROTOCOL, XLF_KERNEL_64, ZERO_PAGE_ADDR, SetupHeader, check_fits as _check_fits, is_bzimage,
    parse_setup_header, place_initrd, write_zero_page,
)
from ..machine.loader.linux_payload import (  # noqa: E402,F401
    LZ4_LEGACY_BLOCK, LZ4_LEGACY_MAGIC, decompress_payload, lz4_block_python, lz4_legacy_decompress,
    payload_format,
)

# -- where trapvisor puts things (low memory, below the EBDA at 0x9FC00) --------------
BOOT_GDT_ADDR = 0x500
BOOT_STACK_TOP = 0x8FF0
PML4_ADDR = 0x9000
PDPT_ADDR = 0xA000
PD_ADDR = 0xB000            # four page directories, 0xB000-0xEFFF: 4 GiB of 2 MiB pages

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
class LinuxBoot:
    entry: CpuEntry
    cmdline: str
    kernel_range: tuple[int, int]
    initrd_range: tuple[int, int] | None
    mode: str
    notes: list[str] = field(default_factory=list)


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
