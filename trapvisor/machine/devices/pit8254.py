"""The Intel 8254 Programmable Interval Timer as wired in the PC/AT.

Rules from the Intel 8254 datasheet (order no. 231164): three 16-bit down
counters clocked at 1.193182 MHz on the PC, the control word at port 0x43
(SC1:0 counter select or read-back, RW1:0 access mode lobyte/hibyte/both or
counter latch, M2:0 mode, BCD), the read-back command (datasheet "Read-Back
Command": latch count and/or status of several counters at once), status byte
(OUT, NULL COUNT, RW, mode, BCD), and the six modes:

* 0 interrupt on terminal count: OUT low from the control word until the
  count reaches 0, then high;
* 1 hardware-retriggerable one-shot: OUT low from a GATE rising edge for N clocks;
* 2 rate generator: OUT high, low for one clock when the count reaches 1,
  period N;
* 3 square wave: OUT high for ceil(N/2) clocks, low for floor(N/2), period N;
* 4 software-triggered strobe: OUT low for one clock after N clocks;
* 5 hardware-triggered strobe: like 4, started by a GATE rising edge.

GATE (datasheet "Gate Pin Operations Summary"): in modes 0, 2, 3 and 4 a low
gate stops counting (and forces OUT high in modes 2 and 3); a rising edge
reloads the count in modes 1, 2, 3 and 5.  PC/AT wiring: counter 0 drives
IRQ0, counter 1 the DRAM refresh request, counter 2 the speaker; the gates of
counters 0 and 1 are tied high, counter 2's is bit 0 of port 0x61
(``port61.py``).

Counters are not stepped: a counter's value and OUT are functions of the
guest time elapsed since its count was loaded (``Clock.now_ns``).  IRQ0 is
raised by a one-shot Clock timer armed for OUT's next rising edge and re-armed
when it fires, so a periodic mode costs one timer per period and nothing per
instruction.  Each rising edge is delivered as an IRQ pulse (raise, lower): the
PC's 8259A inputs are edge-triggered.  If the timer fires late (the CPU runs a
block past the deadline), the edges missed in between are one edge, as the
8259A's IRR would have merged them.

Simplifications (QEMU has them too): a count written in modes 2/3 restarts
the period at once instead of at the end of the current one; the one-clock
delay between writing a count and the counter loading it is not modelled.
"""

from __future__ import annotations

from .isa import from_bcd, split_read, split_write, to_bcd

PIT_HZ = 1_193_182
NS_PER_S = 1_000_000_000

COUNTER0, COUNTER1, COUNTER2, CONTROL = 0x40, 0x41, 0x42, 0x43

# RW1:0 access modes
RW_LATCH = 0
RW_LSB = 1
RW_MSB = 2
RW_BOTH = 3
# read/write sequencing within RW_BOTH
_WORD0, _WORD1 = 3, 4

READ_BACK = 3           # SC1:0 = 11
RB_NOT_COUNT = 0x20
RB_NOT_STATUS = 0x10

STATUS_OUT = 0x80
STATUS_NULL_COUNT = 0x40


def ticks_to_ns(ticks: int) -> int:
    """Guest ns at which ``ticks`` PIT clocks have elapsed (rounded up)."""
    return -(-ticks * NS_PER_S // PIT_HZ)


def ns_to_ticks(ns: int) -> int:
    return ns * PIT_HZ // NS_PER_S


class PitCounter:
    """One of the three counters."""

    def __init__(self, pit: "Pit8254", index: int, gate: bool):
        self.pit = pit
        self.index = index
        self.gate = gate
        self.mode = 0
        self.bcd = False
        self.rw_mode = RW_LSB
        self.read_state = RW_LSB
        self.write_state = RW_LSB
        self.write_latch = 0
        self.count = 0x10000          # N, the reload value (1..65536 or 1..10000 in BCD)
        self.latched_count: int | None = None
        self.latch_state = RW_LSB
        self.latched_status: int | None = None
        self.counting = False         # a count has been written since the control word
        self.triggered = False        # modes 1 and 5: a gate edge started the count
        self.paused: int | None = None  # elapsed ticks frozen by a low gate
        self.load_ns = 0
        self.null_count = True
        self.timer = None
        self.edges = 0                # rising edges delivered (counter 0: IRQ0 pulses)

    # -- state as a function of time ---------------------------------------
    def elapsed(self, now: int) -> int | None:
        """PIT clocks counted since the count was loaded, or None if not counting."""
        if not self.counting:
            return None
        if self.mode in (1, 5) and not self.triggered:
            return None
        if self.paused is not None:
            return self.paused
        return ns_to_ticks(now - self.load_ns)

    def out(self, now: int) -> bool:
        d = self.elapsed(now)
        n, mode = self.count, self.mode
        if mode == 0:
            return d is not None and d >= n
        if mode == 1:
            return d is None or d >= n
        if mode in (2, 3):
            if d is None or not self.gate or n < 2:
                return True
            if mode == 2:
                return d % n != n - 1
            return d % n < (n + 1) // 2
        # modes 4 and 5
        return d is None or d != n

    def value(self, now: int) -> int:
        """The counting element as a read would see it (binary or BCD)."""
        d = self.elapsed(now)
        n = self.count
        modulus = 10000 if self.bcd else 0x10000
        if d is None:
            v = n
        elif self.mode in (2, 3):
            if n < 2:
                v = n
            elif self.mode == 2:
                v = n - d % n
            else:
                v = n - (2 * d) % n
        else:
            v = n - d
        v %= modulus
        if self.bcd:
            return (to_bcd(v // 100) << 8) | to_bcd(v % 100)
        return v

    def next_rise(self, now: int) -> int | None:
        """Guest ns of OUT's next rising edge after ``now``, or None."""
        d = self.elapsed(now)
        if d is None or self.paused is not None:
            return None
        n, mode = self.count, self.mode
        if mode in (0, 1):
            t = n if d < n else None
        elif mode in (2, 3):
            t = (d // n + 1) * n if n >= 2 and self.gate else None
        else:
            t = n + 1 if d < n + 1 else None
        if t is None:
            return None
        return self.load_ns + ticks_to_ns(t)

    def status(self, now: int) -> int:
        return ((STATUS_OUT if self.out(now) else 0) | (STATUS_NULL_COUNT if self.null_count else 0)
                | (self.rw_mode << 4) | (self.mode << 1) | int(self.bcd))

    # -- programming -------------------------------------------------------------
    def control(self, value: int, now: int) -> None:
        access = (value >> 4) & 3
        if access == RW_LATCH:
            self.latch_count(now)
            return
        mode = (value >> 1) & 7
        if mode >= 6:
            mode -= 4                   # 110 and 111 are modes 2 and 3
        self.rw_mode = self.read_state = self.write_state = access
        self.mode = mode
        self.bcd = bool(value & 1)
        self.counting = False
        self.triggered = False
        self.paused = None
        self.null_count = True
        self.latched_count = None
        self.latched_status = None
        self.pit._reschedule(self)

    def latch_count(self, now: int) -> None:
        if self.latched_count is None:   # a second latch before reading is ignored
            self.latched_count = self.value(now)
            self.latch_state = self.rw_mode

    def latch_status(self, now: int) -> None:
        if self.latched_status is None:
            self.latched_status = self.status(now)

    def _load(self, raw: int, now: int) -> None:
        if self.bcd:
            n = from_bcd(raw >> 8) * 100 + from_bcd(raw & 0xFF)
            self.count = n or 10000
        else:
            self.count = raw or 0x10000
        self.null_count = False
        if self.mode in (1, 5) and self.counting and self.triggered:
            # A new count does not disturb a one-shot in progress (datasheet, modes 1 and 5).
            pass
        else:
            self.counting = True
            self.load_ns = now
            self.paused = 0 if (not self.gate and self.mode in (0, 2, 3, 4)) else None
        self.pit._reschedule(self)

    def write(self, value: int, now: int) -> None:
        ws = self.write_state
        if ws == RW_LSB:
            self._load(value, now)
        elif ws == RW_MSB:
            self._load(value << 8, now)
        elif ws == _WORD0 or ws == RW_BOTH:
            self.write_latch = value
            self.write_state = _WORD1
            if self.mode == 0:
                # Writing the first byte stops a mode-0 count (datasheet, mode 0).
                self.counting = False
                self.pit._reschedule(self)
        else:
            self._load(self.write_latch | (value << 8), now)
            self.write_state = _WORD0

    def read(self, now: int) -> int:
        if self.latched_status is not None:
            v, self.latched_status = self.latched_status, None
            return v
        if self.latched_count is not None:
            lc, st = self.latched_count, self.latch_state
            if st == RW_LSB:
                self.latched_count = None
                return lc & 0xFF
            if st == RW_MSB:
                self.latched_count = None
                return (lc >> 8) & 0xFF
            if st in (RW_BOTH, _WORD0):
                self.latch_state = RW_MSB
                return lc & 0xFF
            self.latched_count = None
            return (lc >> 8) & 0xFF
        v = self.value(now)
        rs = self.read_state
        if rs == RW_LSB:
            return v & 0xFF
        if rs == RW_MSB:
            return (v >> 8) & 0xFF
        if rs in (RW_BOTH, _WORD0):
            self.read_state = _WORD1
            return v & 0xFF
        self.read_state = _WORD0
        return (v >> 8) & 0xFF

    def set_gate(self, level: bool, now: int) -> None:
        level = bool(level)
        if level == self.gate:
            return
        mode = self.mode
        if not level:
            if mode in (0, 2, 3, 4):
                d = self.elapsed(now)
                if d is not None:
                    self.paused = d
        else:
            if mode in (0, 4):
                if self.paused is not None:
                    self.load_ns = now - ticks_to_ns(self.paused)
                    self.paused = None
            elif self.counting:          # modes 1, 2, 3, 5: a rising edge (re)starts the count
                self.triggered = True
                self.paused = None
                self.load_ns = now
        self.gate = level
        self.pit._reschedule(self)


class Pit8254:
    """The PC's 8254 at ports 0x40-0x43.  ``irq0`` is an IrqLine (or None)."""

    def __init__(self, clock, irq0=None):
        self.clock = clock
        self.irq0 = irq0
        self.counters = [PitCounter(self, 0, True), PitCounter(self, 1, True),
                         PitCounter(self, 2, False)]

    # -- timers ------------------------------------------------------------------
    def _reschedule(self, c: PitCounter) -> None:
        if c.index != 0 or self.irq0 is None:
            return
        self.clock.cancel(c.timer)
        c.timer = None
        t = c.next_rise(self.clock.now_ns())
        if t is not None:
            c.timer = self.clock.add_timer(t, self._irq0_edge)

    def _irq0_edge(self) -> None:
        c = self.counters[0]
        c.timer = None
        c.edges += 1
        self.irq0.pulse()
        self._reschedule(c)

    # -- helpers for port 0x61 -----------------------------------------------------
    def set_gate(self, index: int, level: bool) -> None:
        self.counters[index].set_gate(level, self.clock.now_ns())

    def out(self, index: int) -> bool:
        return self.counters[index].out(self.clock.now_ns())

    # -- I/O ports ---------------------------------------------------------------------
    def _read_byte(self, port: int) -> int:
        if COUNTER0 <= port <= COUNTER2:
            return self.counters[port - COUNTER0].read(self.clock.now_ns())
        return 0xFF                      # the control register is write-only

    def _write_byte(self, port: int, value: int) -> None:
        now = self.clock.now_ns()
        if COUNTER0 <= port <= COUNTER2:
            self.counters[port - COUNTER0].write(value, now)
        elif port == CONTROL:
            sc = value >> 6
            if sc == READ_BACK:
                for i in range(3):
                    if value & (2 << i):
                        c = self.counters[i]
                        if not value & RB_NOT_COUNT:
                            c.latch_count(now)
                        if not value & RB_NOT_STATUS:
                            c.latch_status(now)
            else:
                self.counters[sc].control(value, now)

    def io_read(self, port: int, size: int) -> int:
        return split_read(self._read_byte, port, size)

    def io_write(self, port: int, size: int, value: int) -> None:
        split_write(self._write_byte, port, size, value)
