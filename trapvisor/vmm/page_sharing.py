"""Content-based page sharing across VMs, after VMware ESX Server.

Waldspurger, "Memory Resource Management in VMware ESX Server" (OSDI 2002,
§4): the monitor scans guest pages in the background, hashes each one's
contents, and looks the hash up in a global table.  A match with a frame
already shared is confirmed byte for byte and the page is remapped onto it,
read-only, its own frame freed; a match with a page seen once before (a
*hint*: not yet shared, still writable) is confirmed the same way, after
checking that the hinted page still has the frame it had, and both become
one shared frame.  A page of zeros is remapped onto the host's zero frame.
A write to a shared page faults (the shadow page tables map it read-only;
the virtual CPU's stores go through ``PmapMemory.before_store``) and gets a
private copy: copy-on-write.  A shared frame whose last but one sharer left
is simply given back, writable, to the one left.

Here the scan is done between time slices with a budget of pages per slice
(``budget``), round robin over every VM's guest frames, which is the paper's
"scanning ... at a rate" of a few pages per VM per second, scaled to the
simulator's slices.  The hash is BLAKE2b (64 bits, as ESX's); equality is
always confirmed on the bytes, so a collision costs a comparison, never a
wrong share.
"""

from __future__ import annotations

import hashlib

from .pmap import ZERO_PAGE


def page_hash(data) -> bytes:
    return hashlib.blake2b(data, digest_size=8).digest()


class PageSharing:
    def __init__(self, frames, budget: int):
        if budget < 1:
            raise ValueError("a sharing scan looks at one page per slice at least")
        self.frames = frames
        self.budget = budget
        self.table: dict[bytes, int] = {}          # hash -> shared host frame
        self.shared_frames: dict[int, bytes] = {}  # shared host frame -> its hash
        self.hints: dict[bytes, tuple] = {}        # hash -> (memory, guest page, host frame)
        self.vm_cursor = 0
        self.page_cursor = 0
        self.scanned = self.merges = self.zero_merges = self.cow_breaks = self.collisions = 0
        frames.sharing = self

    # -- the frame table ------------------------------------------------------
    def is_shared(self, h: int) -> bool:
        return h in self.shared_frames

    def forget(self, h: int) -> None:
        """Frame ``h`` is shared no more (freed, or left to its last sharer)."""
        key = self.shared_frames.pop(h, None)
        if key is not None and self.table.get(key) == h:
            del self.table[key]

    # -- the scan ----------------------------------------------------------------
    def scan(self, budget: int | None = None) -> int:
        """Look at up to ``budget`` guest pages, continuing where the last scan stopped."""
        vms = self.frames.vms
        if not vms:
            return 0
        n = budget if budget is not None else self.budget
        total = sum(m.pages for m in vms)
        for _ in range(min(n, total)):
            if self.vm_cursor >= len(vms):
                self.vm_cursor = 0
            mem = vms[self.vm_cursor]
            g = self.page_cursor
            self.page_cursor += 1
            if self.page_cursor >= mem.pages:
                self.page_cursor = 0
                self.vm_cursor += 1
            self.scanned += 1
            self.consider(mem, g)
        return n

    def consider(self, mem, g: int) -> None:
        """One page: share it if its contents are somewhere else already."""
        frames = self.frames
        h = mem.pmap[g]
        if h < 0 or h == frames.zero or h in self.shared_frames or mem.ballooned[g]:
            return
        data = bytes(frames.frame_bytes(h))
        if data == ZERO_PAGE:
            frames.refs[frames.zero] += 1
            frames.release(mem.set_entry(g, frames.zero))
            self.zero_merges += 1
            return
        key = page_hash(data)
        s = self.table.get(key)
        if s is not None:
            if bytes(frames.frame_bytes(s)) != data:
                self.collisions += 1
                return
            frames.refs[s] += 1
            frames.release(mem.set_entry(g, s))
            self.merges += 1
            return
        hint = self.hints.get(key)
        if hint is not None:
            hmem, hg, hh = hint
            if hh != h and hmem.pmap[hg] == hh and frames.refs[hh] == 1 \
                    and bytes(frames.frame_bytes(hh)) == data:
                # The hinted page becomes the shared frame: its writable shadow
                # entries go, so its owner's next write faults and copies.
                del self.hints[key]
                self.table[key] = hh
                self.shared_frames[hh] = key
                if hmem.on_remap is not None:
                    hmem.on_remap(hg, hh)
                frames.refs[hh] += 1
                frames.release(mem.set_entry(g, hh))
                self.merges += 1
                return
        self.hints[key] = (mem, g, h)

    # -- what sharing holds now, read from the pmaps --------------------------------
    def statistics(self) -> dict:
        frames = self.frames
        shared_pages = sum(frames.refs[h] for h in self.shared_frames)
        zero_pages = sum(m.zero_backed_touched() for m in frames.vms)
        return {
            "scanned": self.scanned,
            "shared": shared_pages + zero_pages,          # guest pages on a shared frame now
            "shared_frames": len(self.shared_frames),
            "zero": zero_pages,
            "saved": shared_pages - len(self.shared_frames) + zero_pages,
            "cow_breaks": self.cow_breaks,
            "merges": self.merges + self.zero_merges,
        }
