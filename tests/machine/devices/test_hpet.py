"""The HPET (IA-PC HPET Specification 1.0a §2.3): capabilities, the main counter, comparators."""

from trapvisor.machine.clock import VirtualClock
from trapvisor.machine.devices import hpet as h


class Line:
    def __init__(self):
        self.events = []

    def raise_(self):
        self.events.append("raise")

    def lower(self):
        self.events.append("lower")

    def pulse(self):
        self.events.append("pulse")


class Setup:
    def __init__(self):
        self.now = 0
        self.clock = VirtualClock(1, counter=lambda: self.now)
        self.lines = {}
        self.hpet = h.Hpet(self.clock, lambda n: self.lines.setdefault(n, Line()))

    def advance(self, ns):
        self.now += ns
        self.clock.run_due()


def test_capabilities_say_10ns_64bit_three_timers_legacy_capable():
    d = Setup().hpet
    cap = d.mmio_read(h.GCAP_ID, 4) | d.mmio_read(h.GCAP_ID + 4, 4) << 32
    assert cap >> 32 == 10_000_000                     # femtoseconds per tick
    assert cap & 0xFF == 1 and (cap >> 8) & 0x1F == 2  # REV_ID, NUM_TIM_CAP = timers - 1
    assert cap >> 13 & 1 and cap >> 15 & 1 and (cap >> 16) & 0xFFFF == 0x8086


def test_the_main_counter_runs_only_while_enabled_and_is_writable_when_halted():
    s = Setup()
    d = s.hpet
    s.advance(1000)
    assert d.mmio_read(h.MAIN_CNT, 8) == 0
    d.mmio_write(h.GEN_CONF, 8, h.ENABLE_CNF)
    s.advance(1000)
    assert d.mmio_read(h.MAIN_CNT, 8) == 100           # 1000 ns at 10 ns a tick
    d.mmio_write(h.MAIN_CNT, 8, 5)                      # ignored while running
    d.mmio_write(h.GEN_CONF, 8, 0)
    s.advance(1000)
    assert d.mmio_read(h.MAIN_CNT, 8) == 100
    d.mmio_write(h.MAIN_CNT, 4, 7)
    assert d.mmio_read(h.MAIN_CNT, 8) == 7 and d.mmio_read(h.MAIN_CNT + 4, 4) == 0


def test_a_one_shot_comparator_interrupts_its_route_once():
    s = Setup()
    d = s.hpet
    t1 = h.TIMER_BASE + h.TIMER_STRIDE
    d.mmio_write(t1, 8, h.TN_INT_ENB_CNF | (10 << h.TN_INT_ROUTE_SHIFT))
    d.mmio_write(t1 + 8, 8, 50)
    d.mmio_write(h.GEN_CONF, 8, h.ENABLE_CNF)
    s.advance(490)
    assert 10 not in s.lines
    s.advance(20)
    assert s.lines[10].events == ["pulse"]
    s.advance(10_000)
    assert s.lines[10].events == ["pulse"]


def test_periodic_legacy_timer0_goes_to_irq0_every_period_and_level_status_clears():
    s = Setup()
    d = s.hpet
    t0 = h.TIMER_BASE
    d.mmio_write(t0, 8, h.TN_INT_ENB_CNF | h.TN_TYPE_CNF | h.TN_VAL_SET_CNF)
    d.mmio_write(t0 + 8, 8, 100)                        # first match and period: 100 ticks
    d.mmio_write(h.GEN_CONF, 8, h.ENABLE_CNF | h.LEG_RT_CNF)
    for _ in range(3):
        s.advance(1000)
    assert s.lines[0].events == ["pulse"] * 3
    assert d.mmio_read(t0 + 8, 8) == 400                # the comparator moved on by the period
    t2 = h.TIMER_BASE + 2 * h.TIMER_STRIDE
    d.mmio_write(t2, 8, h.TN_INT_ENB_CNF | h.TN_INT_TYPE_CNF | (11 << h.TN_INT_ROUTE_SHIFT))
    d.mmio_write(t2 + 8, 8, 350)
    s.advance(1000)
    assert s.lines[11].events == ["raise"] and d.mmio_read(h.GINTR_STA, 8) == 1 << 2
    d.mmio_write(h.GINTR_STA, 8, 1 << 2)
    assert s.lines[11].events == ["raise", "lower"] and d.mmio_read(h.GINTR_STA, 8) == 0
    caps = d.mmio_read(t0, 8)
    assert caps & h.TN_PER_INT_CAP and not d.mmio_read(t2, 8) & h.TN_PER_INT_CAP
