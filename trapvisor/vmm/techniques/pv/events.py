"""Events instead of interrupts: the shared_info page and event channels.

Barham et al. (SOSP 2003, section 3.2, "Control Transfer: Hypercalls and
Events"): "Pending events are stored in a per-domain bitmask which is
updated by Xen before invoking an event-callback handler specified by the
guest OS ... The callback handler is responsible for resetting the set of
pending events ... A domain may explicitly defer event handling by setting
a Xen-readable software flag: this is analogous to disabling interrupts on
a real processor."

Layout and rules after Xen's xen.h (struct shared_info, struct vcpu_info)
and event_channel.h: a port is pending when its bit in evtchn_pending is
set; setting it, if the port's evtchn_mask bit is clear and the port's word
was not yet flagged, sets that word's bit in the vCPU's evtchn_pending_sel
and the vCPU's evtchn_upcall_pending byte.  The upcall is delivered (the
guest's event callback entered) when evtchn_upcall_mask is zero; entering
the callback sets the mask, as an interrupt gate clears IF.
"""

from __future__ import annotations

from .abi import (
    EEXIST, EINVAL, ENOSPC, NR_EVENT_CHANNELS, NR_VIRQS, SI_EVTCHN_MASK, SI_EVTCHN_PENDING, VI_PENDING_SEL,
    VI_UPCALL_MASK, VI_UPCALL_PENDING,
)

FREE, VIRQ, INTERDOMAIN, UNBOUND = "free", "virq", "interdomain", "unbound"


class EventError(Exception):
    def __init__(self, errno: int, why: str):
        super().__init__(why)
        self.errno = errno


class EventChannels:
    """One domain's ports and its shared_info page (at host-physical ``si``, vCPU 0)."""

    def __init__(self, mem, shared_info: int):
        self.mem = mem
        self.si = shared_info
        self.ports: dict[int, tuple] = {}      # port -> (kind, detail)
        self.virqs: dict[int, int] = {}        # virq -> port
        self.backends: dict[int, object] = {}  # port -> callable run on EVTCHNOP_send (a backend)
        self.raised = 0                        # events set pending
        self.sends = 0
        self.mem.write_u32(self.si, 0)
        self.mem.ram[self.si + VI_UPCALL_MASK] = 1   # events masked until the guest unmasks

    # -- the shared page ---------------------------------------------------------
    def _bit(self, base: int, port: int) -> bool:
        return bool(self.mem.ram[self.si + base + (port >> 3)] >> (port & 7) & 1)

    def _set_bit(self, base: int, port: int) -> None:
        self.mem.ram[self.si + base + (port >> 3)] |= 1 << (port & 7)

    @property
    def upcall_mask(self) -> int:
        return self.mem.ram[self.si + VI_UPCALL_MASK]

    @upcall_mask.setter
    def upcall_mask(self, v: int) -> None:
        self.mem.ram[self.si + VI_UPCALL_MASK] = v & 0xFF

    @property
    def upcall_pending(self) -> int:
        return self.mem.ram[self.si + VI_UPCALL_PENDING]

    def deliverable(self) -> bool:
        """An upcall is due: something pending and event delivery not masked."""
        ram, si = self.mem.ram, self.si
        return bool(ram[si + VI_UPCALL_PENDING]) and not ram[si + VI_UPCALL_MASK]

    def set_pending(self, port: int) -> None:
        """Xen's evtchn_set_pending: the pending bit, then the selector and upcall flags."""
        self.raised += 1
        if self._bit(SI_EVTCHN_PENDING, port):
            return
        self._set_bit(SI_EVTCHN_PENDING, port)
        self._flag_word(port)

    def _flag_word(self, port: int) -> None:
        if self._bit(SI_EVTCHN_MASK, port):
            return
        word = port >> 5
        sel = self.mem.read_u32(self.si + VI_PENDING_SEL)
        if not sel >> word & 1:
            self.mem.write_u32(self.si + VI_PENDING_SEL, sel | 1 << word)
            self.mem.ram[self.si + VI_UPCALL_PENDING] = 1

    def unmask(self, port: int) -> None:
        """EVTCHNOP_unmask: clear the mask bit; a port pending meanwhile raises the upcall."""
        self._check(port)
        self.mem.ram[self.si + SI_EVTCHN_MASK + (port >> 3)] &= ~(1 << (port & 7)) & 0xFF
        if self._bit(SI_EVTCHN_PENDING, port):
            self._flag_word(port)

    # -- ports -------------------------------------------------------------------------
    def _alloc(self, kind: str, detail) -> int:
        for port in range(1, NR_EVENT_CHANNELS):     # port 0 is never allocated (Xen)
            if port not in self.ports:
                self.ports[port] = (kind, detail)
                return port
        raise EventError(ENOSPC, "no free event channel")

    def _check(self, port: int) -> None:
        if not 0 < port < NR_EVENT_CHANNELS or port not in self.ports:
            raise EventError(EINVAL, f"port {port} is not bound")

    def bind_virq(self, virq: int, vcpu: int) -> int:
        if not 0 <= virq < NR_VIRQS:
            raise EventError(EINVAL, f"VIRQ {virq} does not exist")
        if vcpu != 0:
            raise EventError(EINVAL, f"vCPU {vcpu} does not exist")
        if virq in self.virqs:
            raise EventError(EEXIST, f"VIRQ {virq} is already bound")
        port = self._alloc(VIRQ, virq)
        self.virqs[virq] = port
        return port

    def bind_backend(self, name: str, backend) -> int:
        """A port to a backend in the monitor (console, block): an interdomain channel
        whose other end is the hypervisor's device model."""
        port = self._alloc(INTERDOMAIN, name)
        self.backends[port] = backend
        return port

    def close(self, port: int) -> None:
        self._check(port)
        kind, detail = self.ports.pop(port)
        if kind == VIRQ:
            self.virqs.pop(detail, None)
        self.backends.pop(port, None)

    def send(self, port: int) -> None:
        """EVTCHNOP_send: notify the other end (a backend runs now, synchronously)."""
        self._check(port)
        self.sends += 1
        backend = self.backends.get(port)
        if backend is not None:
            backend()

    def raise_virq(self, virq: int) -> bool:
        port = self.virqs.get(virq)
        if port is None:
            return False
        self.set_pending(port)
        return True

