"""The balloon device: how a monitor asks a guest's balloon driver for pages.

After VMware ESX Server's balloon (Waldspurger, OSDI 2002, §3.2): the monitor
sets a *target* (pages the guest's driver should hold); the driver takes
pages from its own OS's allocator and reports each one's guest frame number
(inflate), or gives pages back and reports them first (deflate).  ESX's
driver spoke to the monitor through a private channel; this one is a block
of byte-wide I/O ports, so a driver needs nothing but IN and OUT
(guests/os/kernel/balloon.c):

======  ====  ============================================================
offset  dir   meaning
======  ====  ============================================================
0-3     R     ID: the bytes ``BALN``
4-7     R     target, in pages (little endian)
8-11    R/W   staged guest frame number (little endian)
12      W     command: 1 inflate, 2 deflate the staged frame
12      R     1 if the last command was accepted, else 0
======  ====  ============================================================

The device only carries requests: ``on_inflate(frame)`` and
``on_deflate(frame)`` (the monitor's) decide and return whether the frame
was accepted.  It exists only in VMs whose monitor reclaims memory
(``trapvisor vms --host-memory``): on another PC the ports are unclaimed
and the ID reads as all ones.
"""

from __future__ import annotations

BALLOON_BASE = 0x5B0
BALLOON_SIZE = 16
BALLOON_ID = b"BALN"
CMD_INFLATE, CMD_DEFLATE = 1, 2
ID, TARGET, FRAME, COMMAND = 0, 4, 8, 12


class BalloonDevice:
    def __init__(self, on_inflate, on_deflate, base: int = BALLOON_BASE):
        self.base = base
        self.on_inflate, self.on_deflate = on_inflate, on_deflate
        self.target = 0
        self.staged = 0
        self.status = 0
        self.inflates = self.deflates = self.refused = 0

    def _read_byte(self, off: int) -> int:
        if ID <= off < ID + 4:
            return BALLOON_ID[off - ID]
        if TARGET <= off < TARGET + 4:
            return (self.target >> (8 * (off - TARGET))) & 0xFF
        if FRAME <= off < FRAME + 4:
            return (self.staged >> (8 * (off - FRAME))) & 0xFF
        if off == COMMAND:
            return self.status
        return 0

    def io_read(self, port: int, size: int) -> int:
        off = port - self.base
        return sum(self._read_byte(off + i) << (8 * i) for i in range(size))

    def io_write(self, port: int, size: int, value: int) -> None:
        off = port - self.base
        for i in range(size):
            self._write_byte(off + i, (value >> (8 * i)) & 0xFF)

    def _write_byte(self, off: int, v: int) -> None:
        if FRAME <= off < FRAME + 4:
            shift = 8 * (off - FRAME)
            self.staged = (self.staged & ~(0xFF << shift)) | (v << shift)
        elif off == COMMAND:
            if v == CMD_INFLATE:
                ok = self.on_inflate(self.staged)
                self.inflates += ok
            elif v == CMD_DEFLATE:
                ok = self.on_deflate(self.staged)
                self.deflates += ok
            else:
                ok = False
            self.refused += not ok
            self.status = 1 if ok else 0
