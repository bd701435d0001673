"""ACPI fixed hardware: the PM1a event and control register blocks the FADT points to.

Rules from the ACPI Specification 6.5, chapter 4.8 ("ACPI Hardware
Features"): the PM1 event block is a status register (write 1 to clear)
followed by an enable register, each PM1_EVT_LEN / 2 = 2 bytes (4.8.4.1,
Tables 4.12-4.15); the PM1 control block (4.8.4.2, Table 4.16) holds SCI_EN
(bit 0), BM_RLD, GBL_RLS, SLP_TYPx (bits 12:10) and SLP_EN (bit 13, write-only,
reads 0).

This PC has no fixed-feature events (no PM timer, power or sleep button, RTC
alarm wake: the FADT says so), so no status bit is ever set and the SCI is
never raised; with SMI_CMD zero the platform is always in ACPI mode, so SCI_EN
reads 1.  The DSDT defines no sleep states, so OSPM never writes SLP_EN; a
write is ignored.  This is what an ACPI OS needs to initialise its event
handling without errors (ACPICA reads and clears PM1 status, writes the
enables, and checks SCI_EN).
"""

from __future__ import annotations

from .isa import split_read, split_write

PM_BASE = 0x600                 # as QEMU's ICH9 LPC places the PM block
PM_SIZE = 6                     # PM1a_EVT_BLK (4 bytes) then PM1a_CNT_BLK (2 bytes)
PM1_STS, PM1_EN, PM1_CNT = 0, 2, 4

SCI_EN = 1 << 0
SLP_EN = 1 << 13
PM1_EN_WRITABLE = 0x0721        # TMR_EN, GBL_EN, PWRBTN_EN, SLPBTN_EN, RTC_EN (Table 4.14)
PM1_CNT_WRITABLE = 0x1C06       # BM_RLD, GBL_RLS, SLP_TYPx


class AcpiPm:
    def __init__(self, base: int = PM_BASE):
        self.base = base
        self.status = 0
        self.enable = 0
        self.control = SCI_EN

    def _read_byte(self, port: int) -> int:
        off = port - self.base
        reg = (self.status, self.enable, self.control)[off // 2]
        return (reg >> (8 * (off & 1))) & 0xFF

    def _write_byte(self, port: int, value: int) -> None:
        off = port - self.base
        shift = 8 * (off & 1)
        if off // 2 == 0:
            self.status &= ~(value << shift)                 # write 1 to clear
        elif off // 2 == 1:
            self.enable = (self.enable & ~(0xFF << shift)) | ((value << shift) & PM1_EN_WRITABLE)
        else:
            kept = self.control & ~(0xFF << shift)
            self.control = kept | ((value << shift) & PM1_CNT_WRITABLE) | SCI_EN

    def io_read(self, port: int, size: int) -> int:
        return split_read(self._read_byte, port, size)

    def io_write(self, port: int, size: int, value: int) -> None:
        split_write(self._write_byte, port, size, value)
