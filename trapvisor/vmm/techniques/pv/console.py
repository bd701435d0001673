"""The console's split driver: the guest's ring (io/console.h) and the monitor's backend.

struct xencons_interface: the guest (front end) writes bytes into ``out``
at out_prod and notifies the console event channel; the backend copies
[out_cons, out_prod) out (indices are free-running, the ring is 2048 bytes)
and advances out_cons.  Xen's io/console.h; the backend here writes to the
same console sink as the emulated PC's UART, so the run's output is the
same bytes wherever it came from.
"""

from __future__ import annotations

from .abi import CONS_OUT, CONS_OUT_CONS, CONS_OUT_PROD, CONS_OUT_SIZE


class ConsoleBackend:
    def __init__(self, mem, ring: int, sink):
        self.mem, self.ring, self.sink = mem, ring, sink
        self.bytes = 0
        self.notifications = 0

    def notified(self) -> None:
        mem, ring = self.mem, self.ring
        cons = mem.read_u32(ring + CONS_OUT_CONS)
        prod = mem.read_u32(ring + CONS_OUT_PROD)
        n = (prod - cons) & 0xFFFFFFFF
        self.notifications += 1
        if n > CONS_OUT_SIZE:
            # A producer index more than a ring ahead: a broken or hostile front end.
            # Take what the ring holds and resynchronise, as a backend must.
            cons = (prod - CONS_OUT_SIZE) & 0xFFFFFFFF
            n = CONS_OUT_SIZE
        out = bytearray()
        for i in range(n):
            out.append(mem.ram[ring + CONS_OUT + ((cons + i) & (CONS_OUT_SIZE - 1))])
        mem.write_u32(ring + CONS_OUT_CONS, prod)
        if out:
            self.bytes += len(out)
            self.sink(bytes(out))
