"""Loading a raw binary image at a given physical address.

The bytes of the file are copied unchanged to ``load_addr``; execution starts
at ``entry`` (default: ``load_addr``) in the flat 32-bit protected mode of
``boot_state.py`` with EAX = EBX = 0.  For test programs and hand-assembled
guests that have no header of any kind.
"""

from __future__ import annotations

import os

from ...errors import UserError
from .boot_state import BootState, Layout, flat_protected_mode, load_segments, read_file


def load_raw(memory, path, load_addr: int, entry: int | None = None) -> BootState:
    data = read_file(path, "binary")
    if not data:
        raise UserError(f"{os.path.basename(str(path))} is empty")
    return load_raw_bytes(memory, data, load_addr, entry, path=path)


def load_raw_bytes(memory, data: bytes, load_addr: int, entry: int | None = None,
                   *, path=None) -> BootState:
    layout = Layout.for_pc(memory.size)
    loaded = load_segments(memory, [(load_addr, bytes(data), len(data))],
                           path if path is not None else "binary", layout)
    return flat_protected_mode(memory, layout, kind="raw",
                               entry=load_addr if entry is None else entry,
                               loaded=loaded, path=path)
