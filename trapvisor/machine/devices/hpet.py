"""The High Precision Event Timer at 0xFED00000, per the IA-PC HPET Specification 1.0a.

Registers (spec §2.3, Table 2-1, all 64-bit, accessible as 32-bit halves):

* 0x000 General Capabilities and ID (§2.3.4): REV_ID 1, NUM_TIM_CAP (timers - 1),
  COUNT_SIZE_CAP 1 (64-bit counter), LEG_RT_CAP 1, VENDOR_ID 0x8086, and in bits
  63:32 COUNTER_CLK_PERIOD in femtoseconds (10 ns here, as QEMU's HPET: 100 MHz);
* 0x010 General Configuration (§2.3.5): ENABLE_CNF (bit 0) runs the main counter
  and allows interrupts; LEG_RT_CNF (bit 1) routes timer 0 to IRQ0 and timer 1 to
  IRQ8 (the legacy replacement route, in place of the 8254's and the RTC's; the
  8254 and RTC outputs are not disconnected here);
* 0x020 General Interrupt Status (§2.3.6): Tn_INT_STS for level-triggered timers,
  cleared by writing 1;
* 0x0F0 Main Counter Value (§2.3.7): counts up at the period while enabled, keeps
  its value while halted; software may write it while halted;
* timer N at 0x100 + 0x20 N (§2.3.8-2.3.9): configuration and capability
  (Tn_INT_TYPE_CNF bit 1 level, Tn_INT_ENB_CNF bit 2, Tn_TYPE_CNF bit 3 periodic,
  Tn_PER_INT_CAP bit 4, Tn_SIZE_CAP bit 5, Tn_VAL_SET_CNF bit 6, Tn_32MODE_CNF bit
  8, Tn_INT_ROUTE_CNF bits 13:9, Tn_INT_ROUTE_CAP bits 63:32), and its comparator
  at +0x08.

A comparator fires when the main counter reaches it (§2.3.9.2): a one-shot
timer once (a 64-bit counter does not wrap in practice); a periodic timer (timer
0 only, Tn_PER_INT_CAP) then adds its period, the last value written with
Tn_VAL_SET_CNF or the comparator's first value.  The interrupt goes to the timer's
route (an ISA IRQ line of the board; legacy replacement overrides it for timers 0
and 1): edge-triggered as a pulse, level-triggered held until software clears
Tn_INT_STS.  FSB (message) delivery is not offered (Tn_FSB_INT_DEL_CAP = 0).
The counter is a function of guest time on the board's clock, so runs are
deterministic on the simulated PC.
"""

from __future__ import annotations

HPET_BASE = 0xFED00000
HPET_SIZE = 0x400
NUM_TIMERS = 3
PERIOD_FS = 10_000_000                 # 10 ns per tick
NS_PER_TICK = PERIOD_FS // 1_000_000
VENDOR_ID = 0x8086

# General registers (§2.3, Table 2-1)
GCAP_ID, GEN_CONF, GINTR_STA, MAIN_CNT = 0x000, 0x010, 0x020, 0x0F0
TIMER_BASE, TIMER_STRIDE = 0x100, 0x20
ENABLE_CNF, LEG_RT_CNF = 1 << 0, 1 << 1
# Timer configuration and capability bits (§2.3.8)
TN_INT_TYPE_CNF, TN_INT_ENB_CNF, TN_TYPE_CNF = 1 << 1, 1 << 2, 1 << 3
TN_PER_INT_CAP, TN_SIZE_CAP, TN_VAL_SET_CNF, TN_32MODE_CNF = 1 << 4, 1 << 5, 1 << 6, 1 << 8
TN_INT_ROUTE_SHIFT, TN_INT_ROUTE_MASK = 9, 0x1F << 9
TN_WRITABLE = TN_INT_TYPE_CNF | TN_INT_ENB_CNF | TN_TYPE_CNF | TN_VAL_SET_CNF | TN_32MODE_CNF \
    | TN_INT_ROUTE_MASK
# Free ISA IRQs a timer may be routed to (Tn_INT_ROUTE_CAP): 5, 10, 11.
ROUTE_CAP = (1 << 5) | (1 << 10) | (1 << 11)
LEGACY_IRQ = {0: 0, 1: 8}              # LEG_RT_CNF: timer 0 -> IRQ0, timer 1 -> IRQ8 (§2.3.5)
MASK64 = (1 << 64) - 1


class HpetTimer:
    def __init__(self, n: int):
        self.n = n
        self.config = 0
        self.comparator = MASK64
        self.period = 0
        self.timer = None               # the clock timer armed for the next match

    @property
    def capabilities(self) -> int:
        caps = TN_SIZE_CAP | (TN_PER_INT_CAP if self.n == 0 else 0)
        return (ROUTE_CAP << 32) | caps


class Hpet:
    def __init__(self, clock, line_for_irq):
        """``line_for_irq(n)``: the board's IRQ line n (an object with raise_/lower/pulse)."""
        self.clock = clock
        self.line_for_irq = line_for_irq
        self.config = 0
        self.isr = 0
        self._counter_at_start = 0      # main counter value when last enabled (or written)
        self._start_ns = 0
        self.timers = [HpetTimer(n) for n in range(NUM_TIMERS)]

    # -- the main counter --------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        return bool(self.config & ENABLE_CNF)

    def counter(self) -> int:
        if not self.enabled:
            return self._counter_at_start
        ticks = (self.clock.now_ns() - self._start_ns) // NS_PER_TICK
        return (self._counter_at_start + ticks) & MASK64

    def _set_config(self, value: int) -> None:
        was = self.enabled
        now_count = self.counter()
        self.config = value & (ENABLE_CNF | LEG_RT_CNF)
        if self.enabled and not was:
            self._counter_at_start, self._start_ns = now_count, self.clock.now_ns()
        elif was and not self.enabled:
            self._counter_at_start = now_count
        for t in self.timers:
            self._arm(t)

    # -- comparators -------------------------------------------------------------------
    def _irq(self, t: HpetTimer) -> int:
        if self.config & LEG_RT_CNF and t.n in LEGACY_IRQ:
            return LEGACY_IRQ[t.n]
        return (t.config & TN_INT_ROUTE_MASK) >> TN_INT_ROUTE_SHIFT

    def _arm(self, t: HpetTimer) -> None:
        self.clock.cancel(t.timer)
        t.timer = None
        if not self.enabled:
            return
        ahead = (t.comparator - self.counter()) & MASK64
        if t.config & TN_32MODE_CNF:
            ahead &= 0xFFFFFFFF
        if ahead > 1 << 62:              # not within reach (a 64-bit counter does not wrap)
            return
        deadline = self.clock.now_ns() + ahead * NS_PER_TICK
        t.timer = self.clock.add_timer(deadline, lambda t=t: self._fire(t))

    def _fire(self, t: HpetTimer) -> None:
        t.timer = None
        if t.config & TN_TYPE_CNF and t.period:
            t.comparator = (t.comparator + t.period) & MASK64
        if t.config & TN_INT_ENB_CNF:
            line = self.line_for_irq(self._irq(t))
            if t.config & TN_INT_TYPE_CNF:
                self.isr |= 1 << t.n
                line.raise_()
            else:
                line.pulse()
        if t.config & TN_TYPE_CNF and t.period:
            self._arm(t)

    def _write_timer(self, t: HpetTimer, reg: int, value: int, mask: int) -> None:
        if reg == 0:
            t.config = (t.config & ~(TN_WRITABLE & mask)) | (value & TN_WRITABLE & mask)
        elif reg == 8:
            v = (t.comparator & ~mask) | (value & mask)
            if t.config & TN_TYPE_CNF and not t.config & TN_VAL_SET_CNF:
                t.period = v                 # a periodic timer's later writes set its period
            else:
                t.comparator = v
                if t.config & TN_TYPE_CNF:
                    t.period = v             # Tn_VAL_SET_CNF: the period is the first value too
                t.config &= ~TN_VAL_SET_CNF
        self._arm(t)

    # -- the MMIO interface --------------------------------------------------------------
    def _read64(self, reg: int) -> int:
        if reg == GCAP_ID:
            return (PERIOD_FS << 32) | (VENDOR_ID << 16) | (1 << 15) | (1 << 13) \
                | ((NUM_TIMERS - 1) << 8) | 1
        if reg == GEN_CONF:
            return self.config
        if reg == GINTR_STA:
            return self.isr
        if reg == MAIN_CNT:
            return self.counter()
        n, r = divmod(reg - TIMER_BASE, TIMER_STRIDE)
        if reg >= TIMER_BASE and n < NUM_TIMERS:
            t = self.timers[n]
            if r == 0:
                return t.capabilities | t.config
            if r == 8:
                return t.comparator & (0xFFFFFFFF if t.config & TN_32MODE_CNF else MASK64)
        return 0

    def mmio_read(self, offset: int, size: int) -> int:
        reg, shift = offset & ~7, (offset & 7) * 8
        return (self._read64(reg) >> shift) & ((1 << (8 * size)) - 1)

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        reg, shift = offset & ~7, (offset & 7) * 8
        mask = (((1 << (8 * size)) - 1) << shift) & MASK64
        value = (value << shift) & mask
        if reg == GEN_CONF:
            self._set_config((self.config & ~mask) | value)
        elif reg == GINTR_STA:
            cleared = value & self.isr
            self.isr &= ~cleared
            for t in self.timers:
                if cleared >> t.n & 1:
                    self.line_for_irq(self._irq(t)).lower()
        elif reg == MAIN_CNT:
            if not self.enabled:         # writable only while halted (§2.3.7)
                self._counter_at_start = (self._counter_at_start & ~mask) | value
        elif reg >= TIMER_BASE:
            n, r = divmod(reg - TIMER_BASE, TIMER_STRIDE)
            if n < NUM_TIMERS and r in (0, 8):
                self._write_timer(self.timers[n], r, value, mask)
