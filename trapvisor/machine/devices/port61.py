"""PC/AT System Control Port B (I/O port 0x61).

Layout from the IBM PC/AT Technical Reference ("System Board I/O", port 061h):

* bit 0 (RW): TIM2GATESPK, gate of 8254 counter 2;
* bit 1 (RW): SPKRDATA, speaker data enable (ANDed with counter 2's OUT);
* bits 2-3 (RW): parity / I/O channel check enables (stored, no effect here);
* bit 4 (RO): REFRESH_DETECT, toggles on every DRAM refresh request, i.e.
  every 15.085 us (counter 1 is programmed for 66.3 kHz by the BIOS); derived
  from guest time so delay loops that count toggles see the right rate;
* bit 5 (RO): OUT2, the output of 8254 counter 2 (read by PIT calibration loops);
* bits 6-7 (RO): I/O channel check / parity error, always 0 here.

The speaker itself makes no sound; ``speaker_on`` says whether it would.
"""

from __future__ import annotations

PORT_B = 0x61

TIM2GATESPK = 0x01
SPKRDATA = 0x02
WRITABLE = 0x0F
REFRESH_DETECT = 0x10
OUT2 = 0x20

REFRESH_PERIOD_NS = 15_085


class SystemControlPortB:
    def __init__(self, pit, clock):
        self.pit = pit
        self.clock = clock
        self.value = 0

    @property
    def speaker_on(self) -> bool:
        return bool(self.value & SPKRDATA) and self.pit.out(2)

    def io_read(self, port: int, size: int) -> int:
        v = self.value & WRITABLE
        if (self.clock.now_ns() // REFRESH_PERIOD_NS) & 1:
            v |= REFRESH_DETECT
        if self.pit.out(2):
            v |= OUT2
        if size > 1:
            v |= (0xFF << 8) if size == 2 else 0xFFFFFF00   # nothing at 0x62-0x64 here
        return v

    def io_write(self, port: int, size: int, value: int) -> None:
        self.value = value & WRITABLE
        self.pit.set_gate(2, bool(value & TIM2GATESPK))
