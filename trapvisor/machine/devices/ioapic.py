"""The Intel 82093AA I/O APIC at 0xFEC00000.

Rules from the 82093AA datasheet (order no. 290566): two memory-mapped
registers, IOREGSEL (offset 0x00, selects an indirect register) and IOWIN
(offset 0x10, reads/writes it); indirect registers IOAPICID (0x00, ID in bits
27:24), IOAPICVER (0x01: version 0x11, maximum redirection entry 23 in bits
23:16), IOAPICARB (0x02) and the 24 64-bit redirection entries IOREDTBL0-23
(0x10 + 2n low half, 0x11 + 2n high half):

* bits 7:0 vector, 10:8 delivery mode (fixed, lowest priority, SMI, NMI,
  INIT, ExtINT), 11 destination mode (0 physical, 1 logical), 12 delivery
  status (read-only), 13 polarity, 14 remote IRR (read-only), 15 trigger
  mode (1 level), 16 mask (set at reset), 63:56 destination;
* an edge-triggered pin delivers on each rising edge while unmasked; edges on
  a masked pin are discarded;
* a level-triggered pin delivers while asserted and sets remote IRR; the
  local APIC's EOI for the vector clears remote IRR and, if the pin is still
  asserted, delivers again.

PC wiring, consistent with the MP table that ``bios.py`` writes: ISA IRQ n
drives pin n, except IRQ 0 (the 8254), which drives pin 2 (the interrupt
source override every PC BIOS reports; QEMU wires it so).  Pins 16-23 take
router lines 16-23.  Polarity is not modelled (QEMU neither): ISA lines are
active-high and a guest that sets active-low on them gets the same behaviour.
"""

from __future__ import annotations

IOAPIC_BASE = 0xFEC00000
IOAPIC_SIZE = 0x1000

IOREGSEL = 0x00
IOWIN = 0x10

IOAPICID = 0x00
IOAPICVER = 0x01
IOAPICARB = 0x02
IOREDTBL = 0x10

NUM_PINS = 24
IOAPIC_VERSION = 0x11
IOAPICVER_VALUE = ((NUM_PINS - 1) << 16) | IOAPIC_VERSION

REDIR_MASKED = 1 << 16
REDIR_LEVEL_TRIGGER = 1 << 15
REDIR_REMOTE_IRR = 1 << 14
REDIR_POLARITY_LOW = 1 << 13
REDIR_DELIVERY_STATUS = 1 << 12
REDIR_DEST_LOGICAL = 1 << 11
REDIR_READ_ONLY = REDIR_REMOTE_IRR | REDIR_DELIVERY_STATUS
REDIR_LOW_WRITABLE = 0x1FFFF & ~REDIR_READ_ONLY

ISA_IRQ0_PIN = 2


def isa_irq_to_pin(irq: int) -> int:
    """The I/O APIC input an ISA IRQ line drives on this PC (IRQ0 -> pin 2)."""
    return ISA_IRQ0_PIN if irq == 0 else irq


class IoApic:
    def __init__(self, lapic, *, ioapic_id: int = 0):
        self.lapic = lapic
        self.id = ioapic_id & 0xF
        self.regsel = 0
        self.redir = [REDIR_MASKED] * NUM_PINS
        self.pin_level = [False] * NUM_PINS
        self.delivered = [0] * NUM_PINS

    # -- IrqSink -------------------------------------------------------------
    def set_irq(self, irq: int, level: bool) -> None:
        if not 0 <= irq < NUM_PINS:
            return
        pin = isa_irq_to_pin(irq)
        old = self.pin_level[pin]
        self.pin_level[pin] = bool(level)
        if not level:
            return
        if self.redir[pin] & REDIR_LEVEL_TRIGGER or not old:
            self._service(pin)

    def _service(self, pin: int) -> None:
        e = self.redir[pin]
        if e & REDIR_MASKED:
            return
        level = bool(e & REDIR_LEVEL_TRIGGER)
        if level and e & REDIR_REMOTE_IRR:
            return
        lapic = self.lapic
        if not lapic.matches_destination((e >> 56) & 0xFF, bool(e & REDIR_DEST_LOGICAL)):
            return
        if level and lapic.software_enabled:
            self.redir[pin] = e | REDIR_REMOTE_IRR
        self.delivered[pin] += 1
        lapic.deliver((e >> 8) & 7, e & 0xFF, level)

    def eoi(self, vector: int) -> None:
        """EOI broadcast from the local APIC for a level-triggered vector."""
        for pin in range(NUM_PINS):
            e = self.redir[pin]
            if e & REDIR_REMOTE_IRR and e & 0xFF == vector:
                self.redir[pin] = e & ~REDIR_REMOTE_IRR
                if self.pin_level[pin] and e & REDIR_LEVEL_TRIGGER:
                    self._service(pin)

    # -- indirect registers ------------------------------------------------------------
    def read_register(self, index: int) -> int:
        if index == IOAPICID or index == IOAPICARB:
            return self.id << 24
        if index == IOAPICVER:
            return IOAPICVER_VALUE
        if IOREDTBL <= index < IOREDTBL + 2 * NUM_PINS:
            e = self.redir[(index - IOREDTBL) >> 1]
            return (e >> 32) & 0xFFFFFFFF if index & 1 else e & 0xFFFFFFFF
        return 0

    def write_register(self, index: int, value: int) -> None:
        value &= 0xFFFFFFFF
        if index == IOAPICID:
            self.id = (value >> 24) & 0xF
        elif IOREDTBL <= index < IOREDTBL + 2 * NUM_PINS:
            pin = (index - IOREDTBL) >> 1
            e = self.redir[pin]
            if index & 1:
                e = (e & 0xFFFFFFFF) | ((value & 0xFF000000) << 32)
            else:
                e = (e & ~0xFFFFFFFF) | (e & REDIR_READ_ONLY) | (value & REDIR_LOW_WRITABLE)
                if not e & REDIR_LEVEL_TRIGGER:
                    e &= ~REDIR_REMOTE_IRR
            self.redir[pin] = e
            # An unmasked level-triggered pin that is asserted delivers now.
            if self.pin_level[pin] and e & REDIR_LEVEL_TRIGGER:
                self._service(pin)
        # IOAPICVER and IOAPICARB are read-only.

    # -- MMIO ---------------------------------------------------------------------------
    def mmio_read(self, offset: int, size: int) -> int:
        mask = (1 << (8 * size)) - 1
        if offset < IOWIN:
            if offset < 4:
                return (self.regsel >> (8 * offset)) & mask
            return 0
        if offset < IOWIN + 4:
            return (self.read_register(self.regsel) >> (8 * (offset - IOWIN))) & mask
        return 0

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        if offset == IOREGSEL:
            self.regsel = value & 0xFF
        elif offset == IOWIN and size == 4:
            self.write_register(self.regsel, value)
