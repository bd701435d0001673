"""The Motorola MC146818 real-time clock and CMOS RAM (ports 0x70/0x71, IRQ 8).

Register map from the MC146818A datasheet ("Address Map"): 0x00 seconds,
0x01 seconds alarm, 0x02 minutes, 0x03 minutes alarm, 0x04 hours, 0x05 hours
alarm, 0x06 day of week (1 = Sunday), 0x07 day of month, 0x08 month, 0x09
year, 0x0A-0x0D status registers A-D, 0x0E-0x7F general-purpose RAM.

* Register A: UIP (bit 7, read-only; set during the 244 us before each
  update), DV2-0 (bits 6-4, 010 = 32.768 kHz time base running, 11x = divider
  chain reset), RS3-0 (bits 3-0, periodic rate: none, 3.90625 ms, 7.8125 ms,
  then 2^(RS-1)/32768 s for RS = 3..15).
* Register B: SET (7, stops updates so the time can be set; clears UIE), PIE
  (6), AIE (5), UIE (4), SQWE (3), DM (2, 1 = binary, 0 = BCD), 24/12 (1,
  1 = 24-hour; in 12-hour mode bit 7 of the hours byte is PM), DSE (0).
* Register C (read-only, cleared by a read): IRQF (7) = PF&PIE | AF&AIE |
  UF&UIE, PF (6), AF (5), UF (4).  The IRQ output is a level that stays
  asserted until register C is read.
* Register D: VRT (bit 7) = 1, the battery is good.
* Alarm bytes with bits 7:6 = 11 match any value ("don't care").

PC conventions (IBM PC/AT Technical Reference, CMOS RAM map, as SeaBIOS and
QEMU fill it): index port 0x70 bit 7 disables NMI; 0x10 floppy types, 0x12
hard-disk types, 0x14 equipment byte, 0x15/0x16 base memory in KiB, 0x17/0x18
and 0x30/0x31 extended memory above 1 MiB in KiB (at most 65535), 0x2E/0x2F
checksum of 0x10-0x2D, 0x32 century, 0x34/0x35 memory above 16 MiB in
64 KiB units (QEMU's extension), 0x5F number of CPUs minus one (QEMU's).

Time is guest time: the clock starts at ``start_time`` (a fixed date unless
the machine passes the host's, so runs are deterministic by default) and
advances with ``Clock.now_ns``.  The day of week is derived from the date
(writes to register 6 are ignored).  Invalid dates a guest writes are clamped
to the nearest valid one.
"""

from __future__ import annotations

import calendar
import time
from datetime import datetime, timezone

from .isa import from_bcd, to_bcd

INDEX_PORT, DATA_PORT = 0x70, 0x71
RTC_IRQ = 8
NMI_DISABLE = 0x80

SECONDS, SECONDS_ALARM, MINUTES, MINUTES_ALARM, HOURS, HOURS_ALARM = 0, 1, 2, 3, 4, 5
DAY_OF_WEEK, DAY_OF_MONTH, MONTH, YEAR = 6, 7, 8, 9
REG_A, REG_B, REG_C, REG_D = 0x0A, 0x0B, 0x0C, 0x0D
SHUTDOWN_STATUS = 0x0F
FLOPPY_TYPES = 0x10
HARD_DISK_TYPES = 0x12
EQUIPMENT = 0x14
BASE_MEM_LO, BASE_MEM_HI = 0x15, 0x16
EXT_MEM_LO, EXT_MEM_HI = 0x17, 0x18
CHECKSUM_HI, CHECKSUM_LO = 0x2E, 0x2F
ACTUAL_EXT_MEM_LO, ACTUAL_EXT_MEM_HI = 0x30, 0x31
CENTURY = 0x32
HIGH_MEM_LO, HIGH_MEM_HI = 0x34, 0x35
NUM_CPUS_MINUS_1 = 0x5F

REG_A_UIP = 0x80
REG_A_DV_MASK = 0x70
REG_A_DV_32KHZ = 0x20
REG_A_RS_MASK = 0x0F
REG_B_SET = 0x80
REG_B_PIE = 0x40
REG_B_AIE = 0x20
REG_B_UIE = 0x10
REG_B_SQWE = 0x08
REG_B_DM = 0x04
REG_B_24H = 0x02
REG_B_DSE = 0x01
REG_C_IRQF = 0x80
REG_C_PF = 0x40
REG_C_AF = 0x20
REG_C_UF = 0x10
REG_D_VRT = 0x80

EQUIPMENT_FPU = 0x02

NS_PER_S = 1_000_000_000
UIP_WINDOW_NS = 244_000
TIME_BASE_HZ = 32_768

DEFAULT_START_TIME = datetime(2000, 1, 1, 0, 0, 0, tzinfo=timezone.utc)

_MIN_YEAR, _MAX_YEAR = 1900, 9999


def _period_ticks(rs: int) -> int:
    """Periodic interrupt period in 32.768 kHz ticks for rate select ``rs`` (0: none)."""
    if rs == 0:
        return 0
    if rs < 3:
        rs += 7          # RS=1,2 give the same rates as RS=8,9 with a 32.768 kHz base
    return 1 << (rs - 1)


class CmosRtc:
    def __init__(self, clock, irq=None, *, start_time: datetime | None = None,
                 memory_size: int | None = None, cpus: int = 1):
        self.clock = clock
        self.irq = irq
        self.ram = bytearray(128)
        self.index = 0
        self.nmi_disabled = False
        self.reg_a = REG_A_DV_32KHZ | 0x06      # 32.768 kHz, 1024 Hz rate
        self.reg_b = REG_B_24H
        self.reg_c = 0
        start = start_time or DEFAULT_START_TIME
        if start.tzinfo is None:
            start = start.replace(tzinfo=timezone.utc)
        self._base_seconds = int(start.timestamp())
        self._base_ns = clock.now_ns()
        self._frozen: int | None = None          # seconds while SET or divider reset
        self._irq_level = False
        self._periodic_timer = None
        self._second_timer = None
        self._last_c_read_ns = self._base_ns
        self.ram[NUM_CPUS_MINUS_1] = max(0, cpus - 1) & 0xFF
        self.ram[EQUIPMENT] = EQUIPMENT_FPU
        if memory_size is not None:
            self.set_memory_size(memory_size)

    # -- configuration -----------------------------------------------------
    def set_memory_size(self, size: int) -> None:
        """Fill the PC/AT memory-size bytes for ``size`` bytes of RAM (as QEMU's pc.c)."""
        kib, mib = 1024, 1024 * 1024
        base = min(size // kib, 640)
        ext = min(max(size - mib, 0) // kib, 0xFFFF)
        high = min(max(size - 16 * mib, 0) // (64 * kib), 0xFFFF)
        r = self.ram
        r[BASE_MEM_LO], r[BASE_MEM_HI] = base & 0xFF, base >> 8
        r[EXT_MEM_LO], r[EXT_MEM_HI] = ext & 0xFF, ext >> 8
        r[ACTUAL_EXT_MEM_LO], r[ACTUAL_EXT_MEM_HI] = ext & 0xFF, ext >> 8
        r[HIGH_MEM_LO], r[HIGH_MEM_HI] = high & 0xFF, high >> 8
        self._update_checksum()

    def _update_checksum(self) -> None:
        s = sum(self.ram[0x10:0x2E]) & 0xFFFF
        self.ram[CHECKSUM_HI], self.ram[CHECKSUM_LO] = s >> 8, s & 0xFF

    # -- time ------------------------------------------------------------------
    def _running(self) -> bool:
        return not self.reg_b & REG_B_SET and (self.reg_a & REG_A_DV_MASK) >> 4 < 6

    def seconds(self) -> int:
        """Current RTC time as seconds since the Unix epoch."""
        if self._frozen is not None:
            return self._frozen
        return self._base_seconds + (self.clock.now_ns() - self._base_ns) // NS_PER_S

    def _phase_ns(self) -> int:
        return (self.clock.now_ns() - self._base_ns) % NS_PER_S

    def _set_seconds(self, secs: int) -> None:
        if self._frozen is not None:
            self._frozen = secs
        else:
            self._base_seconds += secs - self.seconds()

    def _set_running(self, was_running: bool) -> None:
        running = self._running()
        if was_running and not running:
            self._frozen = self.seconds()
        elif running and not was_running:
            self._base_seconds = self._frozen if self._frozen is not None else self.seconds()
            self._base_ns = self.clock.now_ns()
            self._frozen = None
        self._reschedule()

    def now_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.seconds(), tz=timezone.utc)

    def _encode(self, value: int) -> int:
        return value & 0xFF if self.reg_b & REG_B_DM else to_bcd(value)

    def _decode(self, value: int) -> int:
        return value if self.reg_b & REG_B_DM else from_bcd(value)

    def _encode_hours(self, h24: int) -> int:
        if self.reg_b & REG_B_24H:
            return self._encode(h24)
        h12 = h24 % 12 or 12
        return self._encode(h12) | (0x80 if h24 >= 12 else 0)

    def _decode_hours(self, value: int) -> int:
        if self.reg_b & REG_B_24H:
            return self._decode(value)
        h = self._decode(value & 0x7F) % 12
        return h + 12 if value & 0x80 else h

    def _time_register(self, index: int, tm: time.struct_time) -> int:
        if index == SECONDS:
            return self._encode(tm.tm_sec)
        if index == MINUTES:
            return self._encode(tm.tm_min)
        if index == HOURS:
            return self._encode_hours(tm.tm_hour)
        if index == DAY_OF_WEEK:
            return self._encode((tm.tm_wday + 1) % 7 + 1)
        if index == DAY_OF_MONTH:
            return self._encode(tm.tm_mday)
        if index == MONTH:
            return self._encode(tm.tm_mon)
        if index == YEAR:
            return self._encode(tm.tm_year % 100)
        return self._encode(tm.tm_year // 100)     # CENTURY

    def _write_time_register(self, index: int, value: int) -> None:
        tm = time.gmtime(self.seconds())
        y, mo, d, h, mi, s = tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec
        if index == SECONDS:
            s = self._decode(value)
        elif index == MINUTES:
            mi = self._decode(value)
        elif index == HOURS:
            h = self._decode_hours(value)
        elif index == DAY_OF_MONTH:
            d = self._decode(value)
        elif index == MONTH:
            mo = self._decode(value)
        elif index == YEAR:
            y = (y // 100) * 100 + self._decode(value) % 100
        elif index == CENTURY:
            y = self._decode(value) * 100 + y % 100
        else:
            return
        y = min(max(y, _MIN_YEAR), _MAX_YEAR)
        mo = min(max(mo, 1), 12)
        d = min(max(d, 1), calendar.monthrange(y, mo)[1])
        h, mi, s = min(max(h, 0), 23), min(max(mi, 0), 59), min(max(s, 0), 59)
        self._set_seconds(calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)))

    def _alarm_matches(self, secs: int) -> bool:
        tm = time.gmtime(secs)
        for alarm, field in ((SECONDS_ALARM, SECONDS), (MINUTES_ALARM, MINUTES), (HOURS_ALARM, HOURS)):
            a = self.ram[alarm]
            if a & 0xC0 == 0xC0:
                continue
            if a != self._time_register(field, tm):
                return False
        return True

    # -- interrupts ------------------------------------------------------------
    def _update_irq(self) -> None:
        b, c = self.reg_b, self.reg_c
        if (c & REG_C_PF and b & REG_B_PIE) or (c & REG_C_AF and b & REG_B_AIE) \
                or (c & REG_C_UF and b & REG_B_UIE):
            self.reg_c |= REG_C_IRQF
        level = bool(self.reg_c & REG_C_IRQF)
        if level != self._irq_level:
            self._irq_level = level
            if self.irq is not None:
                if level:
                    self.irq.raise_()
                else:
                    self.irq.lower()

    def _periodic_ticks(self) -> int:
        if self.reg_a & REG_A_DV_MASK != REG_A_DV_32KHZ:
            return 0
        return _period_ticks(self.reg_a & REG_A_RS_MASK)

    def _reschedule(self) -> None:
        clock = self.clock
        clock.cancel(self._periodic_timer)
        clock.cancel(self._second_timer)
        self._periodic_timer = self._second_timer = None
        now = clock.now_ns()
        ticks = self._periodic_ticks()
        if ticks and self.reg_b & REG_B_PIE:
            k = now * TIME_BASE_HZ // (NS_PER_S * ticks) + 1
            self._periodic_timer = clock.add_timer(-(-k * ticks * NS_PER_S // TIME_BASE_HZ),
                                                   self._periodic)
        if self._running() and self.reg_b & (REG_B_UIE | REG_B_AIE):
            elapsed = now - self._base_ns
            self._second_timer = clock.add_timer(
                self._base_ns + (elapsed // NS_PER_S + 1) * NS_PER_S, self._second)

    def _periodic(self) -> None:
        self._periodic_timer = None
        self.reg_c |= REG_C_PF
        self._update_irq()
        self._reschedule_periodic_only()

    def _reschedule_periodic_only(self) -> None:
        ticks = self._periodic_ticks()
        if ticks and self.reg_b & REG_B_PIE:
            now = self.clock.now_ns()
            k = now * TIME_BASE_HZ // (NS_PER_S * ticks) + 1
            self._periodic_timer = self.clock.add_timer(
                -(-k * ticks * NS_PER_S // TIME_BASE_HZ), self._periodic)

    def _second(self) -> None:
        self._second_timer = None
        self.reg_c |= REG_C_UF
        if self._alarm_matches(self.seconds()):
            self.reg_c |= REG_C_AF
        self._update_irq()
        if self._running() and self.reg_b & (REG_B_UIE | REG_B_AIE):
            now = self.clock.now_ns()
            self._second_timer = self.clock.add_timer(
                self._base_ns + ((now - self._base_ns) // NS_PER_S + 1) * NS_PER_S, self._second)

    def _read_reg_c(self) -> int:
        # Flags whose interrupts are disabled are not driven by timers: work
        # out whether their events happened since the last read.
        now = self.clock.now_ns()
        last = self._last_c_read_ns
        ticks = self._periodic_ticks()
        if ticks and not self.reg_b & REG_B_PIE:
            q = NS_PER_S * ticks
            if now * TIME_BASE_HZ // q > last * TIME_BASE_HZ // q:
                self.reg_c |= REG_C_PF
        if self._running() and not self.reg_b & (REG_B_UIE | REG_B_AIE):
            if (now - self._base_ns) // NS_PER_S > (last - self._base_ns) // NS_PER_S:
                self.reg_c |= REG_C_UF
                if self._alarm_matches(self.seconds()):
                    self.reg_c |= REG_C_AF
        self._last_c_read_ns = now
        v = self.reg_c
        self.reg_c = 0
        self._update_irq()
        return v

    # -- registers ---------------------------------------------------------------
    def read_register(self, index: int) -> int:
        index &= 0x7F
        if index in (SECONDS, MINUTES, HOURS, DAY_OF_WEEK, DAY_OF_MONTH, MONTH, YEAR, CENTURY):
            return self._time_register(index, time.gmtime(self.seconds()))
        if index == REG_A:
            v = self.reg_a & ~REG_A_UIP
            if self._running() and self._phase_ns() >= NS_PER_S - UIP_WINDOW_NS:
                v |= REG_A_UIP
            return v
        if index == REG_B:
            return self.reg_b
        if index == REG_C:
            return self._read_reg_c()
        if index == REG_D:
            return REG_D_VRT
        return self.ram[index]

    def write_register(self, index: int, value: int) -> None:
        index &= 0x7F
        value &= 0xFF
        if index in (SECONDS, MINUTES, HOURS, DAY_OF_MONTH, MONTH, YEAR, CENTURY):
            self._write_time_register(index, value)
        elif index == DAY_OF_WEEK:
            pass                                  # derived from the date
        elif index == REG_A:
            was = self._running()
            self.reg_a = value & ~REG_A_UIP
            self._set_running(was)
        elif index == REG_B:
            was = self._running()
            if value & REG_B_SET:
                value &= ~REG_B_UIE               # datasheet: SET clears UIE
            self.reg_b = value
            self._set_running(was)
            self._update_irq()
        elif index in (REG_C, REG_D):
            pass                                  # read-only
        else:
            self.ram[index] = value

    def io_read(self, port: int, size: int) -> int:
        if port == DATA_PORT:
            v = self.read_register(self.index)
        else:
            v = 0xFF                              # the index register is write-only
        return v if size == 1 else v | (0xFFFFFF00 & ((1 << (8 * size)) - 1))

    def io_write(self, port: int, size: int, value: int) -> None:
        if port == INDEX_PORT:
            self.nmi_disabled = bool(value & NMI_DISABLE)
            self.index = value & 0x7F
        elif port == DATA_PORT:
            self.write_register(self.index, value & 0xFF)
