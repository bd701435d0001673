"""The block device's split driver: the guest's blkif ring and the monitor's backend.

io/ring.h and io/blkif.h: a shared page holds the indices req_prod,
req_event, rsp_prod, rsp_event and a ring of 32 slots; the front end writes
requests { operation, nr_segments, handle, id, sector_number, seg[11] { gref,
first_sect, last_sect } } and notifies the event channel; the backend consumes
them, performs each on the disk image through the emulated PC's own ATA model
(``AtaPio.read_sectors``/``write_sectors``), copying through the granted pages
only (grants.py), writes a response { id, operation, status } in the same slot
and notifies back.  Barham et al. 2003, section 3.2 "Data Transfer: I/O
Rings" (their Figure 2 is this ring).
"""

from __future__ import annotations

import struct

from .abi import (
    BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_REQUEST_SIZE,
    BLKIF_RING_SIZE, BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_ERROR, BLKIF_RSP_OKAY, RING_HEADER, SECTOR,
)
from .grants import GrantError

REQUEST_HEAD = struct.Struct("<BBHQQ")        # operation, nr_segments, handle, id, sector_number
SEGMENT = struct.Struct("<IBBxx")             # gref, first_sect, last_sect
RESPONSE = struct.Struct("<QBxh")             # id, operation, status
REQ_PROD, REQ_EVENT, RSP_PROD, RSP_EVENT = 0, 4, 8, 12


class BlockBackend:
    def __init__(self, mem, ring: int, disk, grants, notify):
        """``ring``: host-physical address of the shared ring page; ``disk``: the VM's
        AtaPio (or None); ``notify``: raises the front end's event."""
        self.mem, self.ring, self.disk, self.grants, self.notify = mem, ring, disk, grants, notify
        self.req_cons = 0
        self.rsp_prod = 0
        self.requests = self.errors = self.sectors = 0

    def notified(self) -> None:
        mem, ring = self.mem, self.ring
        prod = mem.read_u32(ring + REQ_PROD)
        if (prod - self.req_cons) & 0xFFFFFFFF > BLKIF_RING_SIZE:
            # A producer more than a ring ahead: skip to what the ring can hold.
            self.req_cons = (prod - BLKIF_RING_SIZE) & 0xFFFFFFFF
        done = 0
        while self.req_cons != prod:
            slot = ring + RING_HEADER + BLKIF_REQUEST_SIZE * (self.req_cons % BLKIF_RING_SIZE)
            raw = bytes(mem.ram[slot:slot + BLKIF_REQUEST_SIZE])
            op, nseg, _handle, rid, sector = REQUEST_HEAD.unpack_from(raw)
            status = self.perform(op, nseg, sector, raw)
            mem.write(slot, RESPONSE.pack(rid, op, status))
            self.req_cons = (self.req_cons + 1) & 0xFFFFFFFF
            self.rsp_prod = (self.rsp_prod + 1) & 0xFFFFFFFF
            self.requests += 1
            self.errors += status != BLKIF_RSP_OKAY
            done += 1
        if done:
            mem.write_u32(ring + RSP_PROD, self.rsp_prod)
            self.notify()

    def perform(self, op: int, nseg: int, sector: int, raw: bytes) -> int:
        if op not in (BLKIF_OP_READ, BLKIF_OP_WRITE):
            return BLKIF_RSP_EOPNOTSUPP
        if self.disk is None or not 0 < nseg <= BLKIF_MAX_SEGMENTS_PER_REQUEST:
            return BLKIF_RSP_ERROR
        segs = [SEGMENT.unpack_from(raw, REQUEST_HEAD.size + SEGMENT.size * i) for i in range(nseg)]
        write_to_guest = op == BLKIF_OP_READ
        used = []
        try:
            pages = []
            for gref, first, last in segs:
                if not first <= last < 8:
                    return BLKIF_RSP_ERROR
                pages.append((self.grants.use(gref, write=write_to_guest), first, last))
                used.append(gref)
            lba = sector
            for page, first, last in pages:
                n = last - first + 1
                at = page + first * SECTOR
                if op == BLKIF_OP_READ:
                    data = self.disk.read_sectors(lba, n)
                    if data is None:
                        return BLKIF_RSP_ERROR
                    self.mem.write(at, data)
                else:
                    if not self.disk.write_sectors(lba, bytes(self.mem.ram[at:at + n * SECTOR])):
                        return BLKIF_RSP_ERROR
                lba += n
                self.sectors += n
            return BLKIF_RSP_OKAY
        except GrantError:
            return BLKIF_RSP_ERROR
        finally:
            for gref in used:
                self.grants.done(gref)
