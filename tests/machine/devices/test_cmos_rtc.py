from datetime import datetime, timezone

from hypothesis import given, settings, strategies as st

from trapvisor.machine.bus import IoBus
from trapvisor.machine.devices.cmos_rtc import CmosRtc
from trapvisor.machine.irq import IrqRouter

from .timeline import IrqRecorder, Timeline

S = 1_000_000_000


def make(start=None, memory_size=None):
    tl = Timeline()
    router = IrqRouter()
    rec = IrqRecorder(tl)
    router.connect(rec)
    rtc = CmosRtc(tl.clock, router.line(8), start_time=start, memory_size=memory_size)
    bus = IoBus()
    bus.register(0x70, 2, rtc)
    return tl, bus, rtc, rec


def reg(bus, index):
    bus.write(0x70, 1, index)
    return bus.read(0x71, 1)


def setreg(bus, index, value):
    bus.write(0x70, 1, index)
    bus.write(0x71, 1, value)


def test_default_start_is_fixed_and_bcd():
    tl, bus, rtc, rec = make()
    assert [reg(bus, i) for i in (0, 2, 4, 6, 7, 8, 9, 0x32)] == \
        [0x00, 0x00, 0x00, 0x07, 0x01, 0x01, 0x00, 0x20]     # Sat 2000-01-01 00:00:00
    assert reg(bus, 0x0A) == 0x26
    assert reg(bus, 0x0B) == 0x02
    assert reg(bus, 0x0D) == 0x80


def test_time_advances_with_guest_time():
    tl, bus, rtc, rec = make(datetime(2023, 12, 31, 23, 59, 58, tzinfo=timezone.utc))
    tl.advance(2 * S + S // 2)
    assert [reg(bus, i) for i in (0, 2, 4, 7, 8, 9, 0x32)] == [0x00, 0x00, 0x00, 0x01, 0x01, 0x24, 0x20]


def test_binary_and_12_hour_modes():
    tl, bus, rtc, rec = make(datetime(2021, 7, 4, 13, 5, 9, tzinfo=timezone.utc))
    assert reg(bus, 4) == 0x13
    setreg(bus, 0x0B, 0x04)                       # binary, 12-hour
    assert reg(bus, 4) == 0x80 | 1                # 1 PM
    assert reg(bus, 0) == 9 and reg(bus, 9) == 21
    setreg(bus, 0x0B, 0x06)                       # binary, 24-hour
    assert reg(bus, 4) == 13


def test_setting_the_time():
    tl, bus, rtc, rec = make()
    setreg(bus, 0x0B, 0x82)                       # SET: updates stop
    setreg(bus, 0x09, 0x99)
    setreg(bus, 0x32, 0x19)
    setreg(bus, 0x08, 0x12)
    setreg(bus, 0x07, 0x31)
    setreg(bus, 0x04, 0x23)
    setreg(bus, 0x02, 0x59)
    setreg(bus, 0x00, 0x59)
    tl.advance(5 * S)
    assert reg(bus, 0) == 0x59                    # frozen while SET
    setreg(bus, 0x0B, 0x02)
    tl.advance(S)
    assert rtc.now_datetime() == datetime(2000, 1, 1, tzinfo=timezone.utc)


def test_invalid_dates_are_clamped_not_raised():
    tl, bus, rtc, rec = make()
    setreg(bus, 0x08, 0x02)                       # February
    setreg(bus, 0x07, 0x31)                       # 31st: clamped to the 29th (2000 is leap)
    assert reg(bus, 7) == 0x29
    setreg(bus, 0x08, 0xFF)                       # garbage BCD
    assert 1 <= int(f"{reg(bus, 8):x}") <= 12


def test_periodic_interrupt_on_irq8_until_register_c_is_read():
    tl, bus, rtc, rec = make()
    setreg(bus, 0x0A, 0x26)                       # 1024 Hz
    setreg(bus, 0x0B, 0x42)                       # PIE
    tl.advance(976_563)
    assert rec.level[8]
    tl.advance(976_563 * 3)
    assert rec.rising(8) == [976_563]             # no new edge until C is read
    assert reg(bus, 0x0C) & 0xC0 == 0xC0
    assert not rec.level[8]
    tl.advance(976_563)
    assert len(rec.rising(8)) == 2


def test_periodic_flag_without_interrupt_is_seen_when_polled():
    tl, bus, rtc, rec = make()
    setreg(bus, 0x0A, 0x2F)                       # 2 Hz
    reg(bus, 0x0C)
    tl.advance(S // 4)
    assert reg(bus, 0x0C) == 0
    tl.advance(S // 2)
    assert reg(bus, 0x0C) & 0x40
    assert not rec.events


def test_update_ended_interrupt():
    tl, bus, rtc, rec = make()
    setreg(bus, 0x0B, 0x12)                       # UIE
    tl.advance(S + 1)
    assert rec.level[8]
    assert reg(bus, 0x0C) & 0xB0 == 0x90           # IRQF, UF (PF runs too: RS=6)


def test_alarm_interrupt():
    tl, bus, rtc, rec = make()
    setreg(bus, 0x01, 0x05)                       # alarm at xx:xx:05 ...
    setreg(bus, 0x03, 0xC0)                       # ... any minute
    setreg(bus, 0x05, 0xFF)                       # ... any hour
    setreg(bus, 0x0B, 0x22)                       # AIE
    tl.advance(4 * S + 1)
    assert not rec.level[8]
    tl.advance(S)
    assert rec.level[8]
    assert reg(bus, 0x0C) & 0xA0 == 0xA0


def test_uip_set_just_before_an_update():
    tl, bus, rtc, rec = make()
    tl.ns = S - 100_000
    assert reg(bus, 0x0A) & 0x80
    tl.ns = S + 100_000
    assert not reg(bus, 0x0A) & 0x80


def test_memory_size_bytes_and_checksum():
    tl, bus, rtc, rec = make(memory_size=128 << 20)
    assert reg(bus, 0x15) | reg(bus, 0x16) << 8 == 640
    assert reg(bus, 0x17) | reg(bus, 0x18) << 8 == 0xFFFF   # 127 MiB caps at 65535 KiB
    assert reg(bus, 0x30) | reg(bus, 0x31) << 8 == 0xFFFF
    assert reg(bus, 0x34) | reg(bus, 0x35) << 8 == (112 << 20) // 65536
    tl2, bus2, *_ = make(memory_size=32 << 20)
    assert reg(bus2, 0x17) | reg(bus2, 0x18) << 8 == 31 * 1024
    total = sum(reg(bus2, i) for i in range(0x10, 0x2E))
    assert reg(bus2, 0x2E) << 8 | reg(bus2, 0x2F) == total


def test_nmi_disable_bit_and_cmos_ram():
    tl, bus, rtc, rec = make()
    bus.write(0x70, 1, 0x80 | 0x40)
    assert rtc.nmi_disabled
    bus.write(0x71, 1, 0x5A)
    bus.write(0x70, 1, 0x40)
    assert not rtc.nmi_disabled
    assert bus.read(0x71, 1) == 0x5A
    assert bus.read(0x70, 1) == 0xFF


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255), st.booleans(), st.integers(0, 3 * S)),
                max_size=50))
def test_any_guest_input_is_safe(ops):
    tl, bus, rtc, rec = make()
    for index, value, read, dt in ops:
        bus.write(0x70, 1, index)
        if read:
            assert 0 <= bus.read(0x71, 1) <= 255
        else:
            bus.write(0x71, 1, value)
        tl.advance(dt)
