"""PS/2 System Control Port A (I/O port 0x92), the "fast A20 and reset" port.

Layout from the IBM PS/2 Hardware Interface Technical Reference (System
Control Port A): bit 0 alternate hot reset (writing 1 resets the processor),
bit 1 alternate A20 gate (1 = A20 enabled); other bits are not modelled and
read 0.  QEMU's port 92 behaves the same.  The reset goes to ``on_reset``.
"""

from __future__ import annotations

PORT_A = 0x92

FAST_RESET = 0x01
A20_ENABLE = 0x02


class SystemControlPortA:
    def __init__(self, on_reset=None, on_a20=None, a20: bool = True):
        self.on_reset = on_reset
        self.on_a20 = on_a20
        self.value = A20_ENABLE if a20 else 0
        self.resets = 0

    @property
    def a20(self) -> bool:
        return bool(self.value & A20_ENABLE)

    def io_read(self, port: int, size: int) -> int:
        return self.value | (0xFFFFFF00 & ((1 << (8 * size)) - 1))

    def io_write(self, port: int, size: int, value: int) -> None:
        old = self.value
        self.value = value & A20_ENABLE
        if (old ^ self.value) & A20_ENABLE and self.on_a20 is not None:
            self.on_a20(self.a20)
        if value & FAST_RESET and not old & FAST_RESET:
            self.resets += 1
            if self.on_reset is not None:
                self.on_reset()
