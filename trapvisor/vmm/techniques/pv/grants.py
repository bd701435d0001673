"""Grant tables: a domain says which of its pages another domain may use.

Barham et al. 2003 (section 3.3.2, and Xen's grant_table.h, version 1): the
guest owns an array of grant entries { flags, domid, frame } in pages the
hypervisor gives it (GNTTABOP_setup_table) and maps; entry r with
GTF_permit_access lets domain ``domid`` use machine frame ``frame``, read-only
with GTF_readonly.  Here the other domain is the monitor's block backend
(domain 0): before it touches a request's page it checks the grant, so a
guest can hand it exactly the pages of a request and nothing else -- not a
frame it does not own, not a page it granted read-only for a device read.
"""

from __future__ import annotations

from .abi import (
    DOMID_BACKEND, GNTST_bad_gntref, GNTST_bad_page, GNTST_permission_denied, GRANT_ENTRY,
    GTF_permit_access, GTF_readonly, GTF_reading, GTF_writing, MAX_GRANT_FRAMES,
)
from .mm import PAGE

ENTRIES_PER_FRAME = PAGE // GRANT_ENTRY


class GrantError(Exception):
    def __init__(self, status: int, why: str):
        super().__init__(why)
        self.status = status


class GrantTable:
    def __init__(self, mem, alloc, frames):
        """``frames``: the domain's frame table (who owns what)."""
        self.mem, self.alloc, self.frames = mem, alloc, frames
        self.table: list[int] = []            # host-physical addresses of the table's frames
        self.uses = 0

    def setup(self, nr_frames: int) -> list[int]:
        """GNTTABOP_setup_table: grow the table to ``nr_frames``; their machine frame numbers."""
        if not 0 < nr_frames <= MAX_GRANT_FRAMES:
            raise GrantError(-1, f"{nr_frames} grant frames (1 to {MAX_GRANT_FRAMES})")
        while len(self.table) < nr_frames:
            f = self.alloc.alloc_frame()
            self.table.append(f)
            self.frames.add_shared(f >> 12)      # the guest maps it writable, like shared_info
        return [f >> 12 for f in self.table[:nr_frames]]

    def entry(self, ref: int) -> tuple[int, int, int]:
        if not 0 <= ref < len(self.table) * ENTRIES_PER_FRAME:
            raise GrantError(GNTST_bad_gntref, f"grant reference {ref} outside the table")
        at = self.table[ref // ENTRIES_PER_FRAME] + GRANT_ENTRY * (ref % ENTRIES_PER_FRAME)
        flags = int.from_bytes(self.mem.ram[at:at + 2], "little")
        domid = int.from_bytes(self.mem.ram[at + 2:at + 4], "little")
        frame = int.from_bytes(self.mem.ram[at + 4:at + 8], "little")
        return at, flags, domid, frame

    def use(self, ref: int, *, write: bool) -> int:
        """The backend (domain 0) uses grant ``ref``: the machine address of its page, after
        checking the grant allows it.  Sets GTF_reading/GTF_writing while in use (``done``)."""
        at, flags, domid, frame = self.entry(ref)
        if not flags & GTF_permit_access or domid != DOMID_BACKEND:
            raise GrantError(GNTST_permission_denied, f"grant {ref} does not permit domain 0")
        if write and flags & GTF_readonly:
            raise GrantError(GNTST_permission_denied, f"grant {ref} is read-only")
        f = self.frames.frames.get(frame)
        if f is None or frame in self.frames.shared:
            raise GrantError(GNTST_bad_page, f"grant {ref} names frame {frame:#x}, not the domain's")
        if write and f.type_count and f.type not in ("writable", "none"):
            raise GrantError(GNTST_bad_page, f"grant {ref}: frame {frame:#x} is a {f.type} page")
        self.mem.write(at, (flags | (GTF_writing if write else GTF_reading)).to_bytes(2, "little"))
        self.uses += 1
        return frame << 12

    def done(self, ref: int) -> None:
        at, flags, _, _ = self.entry(ref)
        self.mem.write(at, (flags & ~(GTF_reading | GTF_writing)).to_bytes(2, "little"))
