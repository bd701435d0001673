"""Loading plain ELF32 i386 executables (and the ELF part of Multiboot kernels).

Rules from the System V ABI (ELF, "Program Loading") and its Intel386
supplement: the file must be ELFCLASS32, ELFDATA2LSB, e_machine EM_386 and
of type ET_EXEC; each PT_LOAD segment's p_filesz bytes from p_offset are
copied to its physical address p_paddr (the machine has no paging yet) and
the rest up to p_memsz is zeroed (the bss).

The entry point is e_entry.  When e_entry lies inside a loaded segment whose
virtual and physical addresses differ (a kernel linked for a higher half but
loaded low), it is translated to the physical address through that segment,
as GRUB 2 does for Multiboot kernels; identity-linked files are unaffected.

The machine state on entry is the flat protected mode of ``boot_state.py``
with EAX = EBX = 0.
"""

from __future__ import annotations

import io
import os

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ...errors import UserError
from .boot_state import BootState, Layout, flat_protected_mode, load_segments, read_file

ELF_MAGIC = b"\x7fELF"


def is_elf(data: bytes) -> bool:
    return data[:4] == ELF_MAGIC


def parse_elf32(data: bytes, path) -> tuple[list[tuple[int, bytes, int]], int]:
    """PT_LOAD segments as (paddr, file bytes, memsz) and the (physical) entry point."""
    name = os.path.basename(str(path))
    if not is_elf(data):
        raise UserError(f"{name} is not an ELF file")
    try:
        elf = ELFFile(io.BytesIO(data))
        elfclass, machine = elf.elfclass, elf["e_machine"]
    except (ELFError, ValueError, KeyError, TypeError, Exception) as e:  # pyelftools raises assorted errors
        raise UserError(f"{name} is not a valid ELF file ({e})") from None
    if elfclass != 32:
        raise UserError(f"{name} is a {elfclass}-bit ELF file; trapvisor loads 32-bit i386 kernels")
    if machine != "EM_386":
        raise UserError(f"{name} is an ELF file for {machine}, not i386 (EM_386)")
    if not elf.little_endian:
        raise UserError(f"{name} is a big-endian ELF file, not i386")
    if elf["e_type"] != "ET_EXEC":
        raise UserError(f"{name} is not an executable ELF file (e_type {elf['e_type']})")
    segments = []
    spans = []
    try:
        for seg in elf.iter_segments():
            if seg["p_type"] != "PT_LOAD" or seg["p_memsz"] == 0 and seg["p_filesz"] == 0:
                continue
            off, filesz, memsz = seg["p_offset"], seg["p_filesz"], seg["p_memsz"]
            if filesz > memsz:
                raise UserError(f"{name}: malformed ELF segment (p_filesz {filesz:#x} > p_memsz {memsz:#x})")
            if off + filesz > len(data):
                raise UserError(f"{name}: ELF segment at offset {off:#x} runs past the end of the file")
            segments.append((seg["p_paddr"], data[off:off + filesz], memsz))
            spans.append((seg["p_vaddr"], seg["p_paddr"], memsz))
        entry = elf["e_entry"]
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{name} is not a valid ELF file ({e})") from None
    if not segments:
        raise UserError(f"{name} has no loadable (PT_LOAD) segments")
    for vaddr, paddr, memsz in spans:
        if vaddr <= entry < vaddr + memsz:
            entry = entry - vaddr + paddr
            break
    return segments, entry


def load_elf(memory, path) -> BootState:
    """Load a plain (non-Multiboot) ELF32 executable; returns its boot state."""
    data = read_file(path, "kernel")
    segments, entry = parse_elf32(data, path)
    layout = Layout.for_pc(memory.size)
    loaded = load_segments(memory, segments, path, layout)
    return flat_protected_mode(memory, layout, kind="elf", entry=entry, loaded=loaded, path=path)
