"""Hand-built kernel images for the loader tests (no toolchain needed)."""

from __future__ import annotations

import struct

MB_MAGIC = 0x1BADB002


def multiboot_header(flags: int = 0x3, aout=None, checksum_ok: bool = True) -> bytes:
    """A Multiboot header; ``aout`` = (header_addr, load_addr, load_end, bss_end, entry)."""
    if aout is not None:
        flags |= 1 << 16
    cks = (-(MB_MAGIC + flags)) & 0xFFFFFFFF
    if not checksum_ok:
        cks ^= 1
    h = struct.pack("<III", MB_MAGIC, flags, cks)
    if aout is not None:
        h += struct.pack("<5I", *aout)
    return h


def elf32(segments, entry: int, *, machine: int = 3, e_type: int = 2, elfclass: int = 1,
          data_encoding: int = 1) -> bytes:
    """An ELF32 executable: ``segments`` = [(vaddr, paddr, data, memsz)]."""
    ehsize, phentsize = 52, 32
    off = ehsize + phentsize * len(segments)
    off = (off + 15) & ~15
    phdrs, blobs = b"", b""
    for vaddr, paddr, data, memsz in segments:
        pad = (-(off + len(blobs))) % 16
        blobs += bytes(pad)
        phdrs += struct.pack("<8I", 1, off + len(blobs), vaddr, paddr, len(data), memsz, 7, 16)
        blobs += data
    ident = b"\x7fELF" + bytes([elfclass, data_encoding, 1, 0]) + bytes(8)
    ehdr = ident + struct.pack("<HHIIIIIHHHHHH", e_type, machine, 1, entry, ehsize, 0, 0,
                               ehsize, phentsize, len(segments), 40, 0, 0)
    image = ehdr + phdrs
    image += bytes(((ehsize + phentsize * len(segments) + 15) & ~15) - len(image))
    return image + blobs


def elf64_stub() -> bytes:
    """A minimal x86-64 ELF header with no program headers."""
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    return ident + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0x100000, 0, 0, 0, 64, 56, 0, 64, 0, 0)


def multiboot_elf(text_paddr=0x100000, text_vaddr=None, bss=0x2000, flags=0x3, entry_off=12):
    text = multiboot_header(flags) + b"\xf4" * 52        # header, then HLTs
    data = b"DATA" * 8
    vaddr = text_paddr if text_vaddr is None else text_vaddr
    segs = [(vaddr, text_paddr, text, len(text)),
            (vaddr + 0x1000, text_paddr + 0x1000, data, len(data) + bss)]
    return elf32(segs, vaddr + entry_off)
