from hypothesis import given, settings, strategies as st

from trapvisor.machine.bus import IoBus
from trapvisor.machine.devices.pit8254 import PIT_HZ, Pit8254, ticks_to_ns
from trapvisor.machine.devices.port61 import SystemControlPortB
from trapvisor.machine.irq import IrqRouter

from .timeline import IrqRecorder, Timeline


def make():
    tl = Timeline()
    router = IrqRouter()
    rec = IrqRecorder(tl)
    router.connect(rec)
    pit = Pit8254(tl.clock, router.line(0))
    port61 = SystemControlPortB(pit, tl.clock)
    bus = IoBus()
    bus.register(0x40, 4, pit)
    bus.register(0x61, 1, port61)
    return tl, bus, pit, rec


def program(bus, counter, mode, count, access=3, bcd=False):
    bus.write(0x43, 1, (counter << 6) | (access << 4) | (mode << 1) | int(bcd))
    if access in (1, 3):
        bus.write(0x40 + counter, 1, count & 0xFF)
    if access in (2, 3):
        bus.write(0x40 + counter, 1, (count >> 8) & 0xFF)


def test_mode2_fires_irq0_every_divisor_ticks():
    tl, bus, pit, rec = make()
    n = 1193                                   # ~1 kHz
    program(bus, 0, 2, n)
    tl.advance_to(10 * ticks_to_ns(n) + 1000)
    edges = rec.rising(0)
    assert edges == [ticks_to_ns(k * n) for k in range(1, 11)]
    assert pit.counters[0].edges == 10


def test_mode3_count0_is_the_18_2_hz_bios_tick():
    tl, bus, pit, rec = make()
    program(bus, 0, 3, 0)
    tl.advance_to(1_000_000_000)
    assert len(rec.rising(0)) == 18            # 1193182 / 65536 = 18.2


def test_timer_fired_late_coalesces_missed_edges():
    tl, bus, pit, rec = make()
    program(bus, 0, 2, 100)                    # ~84 us period
    tl.ns = 10 * ticks_to_ns(100) + 5          # the CPU ran long past several deadlines
    tl.clock.run_due()
    assert len(rec.rising(0)) == 1
    tl.advance(ticks_to_ns(100))
    assert len(rec.rising(0)) == 2


def test_mode0_single_edge_and_output_in_status():
    tl, bus, pit, rec = make()
    program(bus, 0, 0, 5000)
    bus.write(0x43, 1, 0xE2)                   # read-back status of counter 0
    st0 = bus.read(0x40, 1)
    assert st0 & 0x80 == 0                     # OUT low while counting
    assert (st0 >> 1) & 7 == 0 and (st0 >> 4) & 3 == 3
    tl.advance_to(3 * ticks_to_ns(5000))
    assert rec.rising(0) == [ticks_to_ns(5000)]
    bus.write(0x43, 1, 0xE2)
    assert bus.read(0x40, 1) & 0x80


def test_latch_command_freezes_count():
    tl, bus, pit, rec = make()
    program(bus, 0, 2, 10000)
    tl.ns = ticks_to_ns(1234)
    bus.write(0x43, 1, 0x00)                   # latch counter 0
    tl.ns = ticks_to_ns(5000)                  # counting goes on; the latch does not
    lo = bus.read(0x40, 1)
    hi = bus.read(0x40, 1)
    assert (hi << 8) | lo == 10000 - 1234
    lo = bus.read(0x40, 1)                     # latch consumed: live value now
    hi = bus.read(0x40, 1)
    assert (hi << 8) | lo == 10000 - 5000


def test_read_back_count_and_status_together():
    tl, bus, pit, rec = make()
    program(bus, 2, 0, 200, access=1)
    bus.write(0x61, 1, 0x01)                   # gate counter 2 on
    tl.ns = ticks_to_ns(50)
    bus.write(0x43, 1, 0xC8)                   # latch count and status of counter 2
    tl.ns = ticks_to_ns(70)
    status = bus.read(0x42, 1)                 # status first, then the count
    assert status & 0x3F == (1 << 4) | (0 << 1)
    assert bus.read(0x42, 1) == 150
    assert bus.read(0x42, 1) == 130            # latches used up: live count
    bus.write(0x61, 1, 0x00)                   # gate off: a mode-0 count stops
    tl.ns = ticks_to_ns(120)
    assert bus.read(0x42, 1) == 130


def test_bcd_counting():
    tl, bus, pit, rec = make()
    program(bus, 1, 2, 0x1000, bcd=True)       # BCD 1000
    tl.ns = ticks_to_ns(1)
    bus.write(0x43, 1, 0x40)
    lo, hi = bus.read(0x41, 1), bus.read(0x41, 1)
    assert (hi << 8) | lo == 0x0999


def test_lobyte_only_and_hibyte_only_access():
    tl, bus, pit, rec = make()
    program(bus, 1, 2, 0x34, access=1)
    assert pit.counters[1].count == 0x34
    program(bus, 1, 2, 0x1200, access=2)
    assert pit.counters[1].count == 0x1200
    tl.ns = ticks_to_ns(0x100)
    assert bus.read(0x41, 1) == 0x11           # MSB only


def test_channel2_gate_and_output_through_port61():
    tl, bus, pit, rec = make()
    program(bus, 2, 0, 1000)
    tl.advance_to(ticks_to_ns(5000))
    assert bus.read(0x61, 1) & 0x20 == 0       # gate low: counter 2 has not counted
    bus.write(0x61, 1, 0x01)                   # gate on
    start = tl.ns
    tl.advance_to(start + ticks_to_ns(999))
    assert bus.read(0x61, 1) & 0x20 == 0
    tl.advance_to(start + ticks_to_ns(1001))
    assert bus.read(0x61, 1) & 0x21 == 0x21
    assert rec.rising(0) == []                 # counter 2 never raises IRQ0


def test_port61_refresh_toggle_follows_guest_time():
    tl, bus, pit, rec = make()
    seen = set()
    for i in range(8):
        tl.ns = i * 15_085
        seen.add(bus.read(0x61, 1) & 0x10)
    assert seen == {0, 0x10}
    bus.write(0x61, 1, 0xFF)
    assert bus.read(0x61, 1) & 0x0F == 0x0F


def test_mode3_square_wave_output_duty():
    tl, bus, pit, rec = make()
    program(bus, 2, 3, 100)
    bus.write(0x61, 1, 0x01)
    highs = 0
    base = tl.ns
    for tick in range(100):
        tl.ns = base + ticks_to_ns(tick) + 1
        highs += bool(pit.out(2))
    assert highs == 50


def test_reprogramming_cancels_old_timer():
    tl, bus, pit, rec = make()
    program(bus, 0, 2, 1000)
    program(bus, 0, 0, 0xFFFF)                 # one-shot far away
    tl.advance_to(ticks_to_ns(5000))
    assert rec.rising(0) == []


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0x40, 0x41, 0x42, 0x43, 0x61]), st.integers(0, 255),
                          st.booleans(), st.integers(0, 200_000)), max_size=60))
def test_any_guest_input_is_safe(ops):
    tl, bus, pit, rec = make()
    for port, value, read, dt in ops:
        if read:
            assert 0 <= bus.read(port, 1) <= 255
        else:
            bus.write(port, 1, value)
        tl.advance(dt)
