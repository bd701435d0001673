"""Kernel loaders: put a guest image in memory and say how it starts.

* ``multiboot.py``: Multiboot 0.6.96 kernels (ELF or a.out kludge) with
  modules and the Multiboot information structure, as ``qemu -kernel``;
* ``elf.py``: plain ELF32 i386 executables at their physical addresses;
* ``raw.py``: a raw binary at a given address;
* ``bzimage.py``: Linux bzImages by the x86 boot protocol's 32-bit entry
  (``linux_payload.py`` decompresses their kernel on the host).

Each returns a :class:`~.boot_state.BootState` (entry point, registers, the
flat segments and the GDT placed in memory).  :func:`load_kernel` picks the
loader from the file's contents.  Bad input is a one-line ``UserError``.
"""

from __future__ import annotations

import os

from ...errors import UserError
from .boot_state import BootState, SegmentState, read_file
from .bzimage import is_bzimage, load_bzimage
from .elf import is_elf, load_elf
from .multiboot import find_header, load_multiboot
from .raw import load_raw, load_raw_bytes

__all__ = ["BootState", "SegmentState", "load_any", "load_kernel", "load_multiboot", "load_elf",
           "load_raw", "load_raw_bytes", "load_bzimage", "is_bzimage"]


def load_kernel(memory, path, *, cmdline: str = "", modules=(), initrd=None,
                linux_entry: str = "vmlinux", rsdp: int = 0) -> BootState:
    """Load ``path`` as a Linux bzImage if it has the boot protocol's header, as Multiboot if it
    has a Multiboot header, else as plain ELF."""
    data = read_file(path, "kernel")
    name = os.path.basename(str(path))
    if is_bzimage(data):
        if modules:
            raise UserError(f"{name} is a Linux bzImage: it takes an --initrd, not modules")
        return load_bzimage(memory, path, initrd=initrd, cmdline=cmdline, entry=linux_entry, rsdp=rsdp)
    if initrd:
        raise UserError(f"--initrd is for a Linux bzImage; {name} is not one")
    if find_header(data) is not None:
        return load_multiboot(memory, path, cmdline=cmdline, modules=modules)
    if is_elf(data):
        if modules:
            raise UserError(f"{os.path.basename(str(path))} is not a Multiboot kernel: "
                            f"it cannot take modules")
        return load_elf(memory, path)
    raise UserError(f"{os.path.basename(str(path))} is not a Linux bzImage, a Multiboot kernel or an ELF file")


def load_any(memory, path, *, cmdline: str = "", modules=(), raw_load: int | None = None,
             raw_entry: int | None = None, **linux) -> BootState:
    """``raw_load`` given: a raw binary there; else :func:`load_kernel` (``linux``: its
    ``initrd``, ``linux_entry`` and ``rsdp``)."""
    if raw_load is not None:
        return load_raw(memory, path, raw_load, raw_entry)
    return load_kernel(memory, path, cmdline=cmdline, modules=modules, **linux)
