"""An ATA hard disk on the primary IDE channel, PIO only (ports 0x1F0-0x1F7, 0x3F6, IRQ 14).

Rules from ATA/ATAPI-4 (NCITS 317-1998):

* command block registers (section 7): 0x1F0 Data (16-bit), 0x1F1 Error (read)
  / Features (write), 0x1F2 Sector Count, 0x1F3 Sector Number / LBA 7:0,
  0x1F4 Cylinder Low / LBA 15:8, 0x1F5 Cylinder High / LBA 23:16, 0x1F6
  Device/Head (bit 6 LBA, bit 4 DEV, bits 3:0 head / LBA 27:24), 0x1F7 Status
  (read) / Command (write); control block: 0x3F6 Alternate Status (read) /
  Device Control (write: bit 1 nIEN, bit 2 SRST);
* status bits BSY 0x80, DRDY 0x40, DF 0x20, DSC 0x10, DRQ 0x08, ERR 0x01;
  error bits UNC 0x40, IDNF 0x10, ABRT 0x04;
* PIO data-in protocol (9.7) for IDENTIFY DEVICE and READ SECTORS: for each
  sector the device sets DRQ and asserts INTRQ, the host reads 256 words;
* PIO data-out protocol (9.8) for WRITE SECTORS: DRQ without an interrupt for
  the first sector, INTRQ after each sector written;
* non-data commands (9.9) assert INTRQ on completion;
* INTRQ is asserted while an interrupt is pending and nIEN is clear; reading
  the Status register (not Alternate Status) clears the pending interrupt;
* a Sector Count of 0 means 256 sectors (LBA28 / CHS);
* after a software reset (SRST) the device shows its signature: Sector Count
  1, LBA 1/0/0, Error 01h (diagnostics passed).

Only device 0 exists.  With device 1 selected the Status registers read 00h
(what QEMU returns: a driver sees no device); commands to it are ignored.
With no image at all the channel floats: every read returns 0xFF.

Commands execute at once (BSY is never seen except during SRST).  Supported:
IDENTIFY DEVICE, READ SECTORS (0x20/0x21), WRITE SECTORS (0x30/0x31), READ
VERIFY SECTORS, INITIALIZE DEVICE PARAMETERS, RECALIBRATE, SEEK, SET FEATURES,
FLUSH CACHE, EXECUTE DEVICE DIAGNOSTIC, CHECK POWER MODE, the idle/standby
commands.  Everything else aborts (ERR, ABRT), as the standard requires for
unsupported commands; IDENTIFY PACKET DEVICE aborts with the ATA signature.

The image is a raw file opened read-write (read-only if the file is not
writable: writes then abort); a missing or unreadable image is a UserError at
construction.
"""

from __future__ import annotations

import os

from ...errors import UserError

PRIMARY_BASE = 0x1F0
PRIMARY_CTRL = 0x3F6
PRIMARY_IRQ = 14
SECTOR_SIZE = 512

REG_DATA, REG_ERROR, REG_COUNT, REG_LBA_LOW, REG_LBA_MID, REG_LBA_HIGH, REG_DEVICE, REG_STATUS = range(8)

STATUS_BSY = 0x80
STATUS_DRDY = 0x40
STATUS_DF = 0x20
STATUS_DSC = 0x10
STATUS_DRQ = 0x08
STATUS_CORR = 0x04
STATUS_ERR = 0x01

ERROR_UNC = 0x40
ERROR_IDNF = 0x10
ERROR_ABRT = 0x04
ERROR_AMNF = 0x01
DIAGNOSTIC_PASSED = 0x01

DEVICE_LBA = 0x40
DEVICE_DEV = 0x10
DEVICE_OBSOLETE = 0xA0

CONTROL_NIEN = 0x02
CONTROL_SRST = 0x04

CMD_RECALIBRATE = 0x10       # 0x10-0x1F
CMD_READ_SECTORS = 0x20
CMD_READ_SECTORS_NORETRY = 0x21
CMD_WRITE_SECTORS = 0x30
CMD_WRITE_SECTORS_NORETRY = 0x31
CMD_READ_VERIFY = 0x40
CMD_READ_VERIFY_NORETRY = 0x41
CMD_SEEK = 0x70              # 0x70-0x7F
CMD_EXECUTE_DIAGNOSTIC = 0x90
CMD_INITIALIZE_DEVICE_PARAMETERS = 0x91
CMD_IDENTIFY_PACKET_DEVICE = 0xA1
CMD_STANDBY_IMMEDIATE = 0xE0
CMD_IDLE_IMMEDIATE = 0xE1
CMD_STANDBY = 0xE2
CMD_IDLE = 0xE3
CMD_CHECK_POWER_MODE = 0xE5
CMD_FLUSH_CACHE = 0xE7
CMD_IDENTIFY_DEVICE = 0xEC
CMD_SET_FEATURES = 0xEF

MAX_LBA28 = 0x0FFFFFFF

MODEL = "TRAPVISOR HARDDISK"
SERIAL = "TV0000000001"
FIRMWARE = "1.0"


def _ata_string(text: str, length: int) -> list[int]:
    """ATA strings: two characters per word, the first in the high byte (ATA-4 7.1.1)."""
    b = text.encode("ascii").ljust(length)[:length]
    return [(b[i] << 8) | b[i + 1] for i in range(0, length, 2)]


class AtaPio:
    def __init__(self, image_path: str | None = None, irq=None):
        self.irq = irq
        self.path = image_path
        self.fd: int | None = None
        self.read_only = False
        self.sectors = 0
        if image_path is not None:
            self._open(image_path)
        # geometry reported by IDENTIFY (default translation) and in use for CHS
        spt, heads = 63, 16
        self.default_chs = (max(1, min(16383, self.sectors // (heads * spt))), heads, spt)
        self.logical_heads, self.logical_spt = heads, spt
        self.intrq = False
        self._line = False
        self.control = 0
        self.buffer = bytearray()
        self.pos = 0
        self.transfer = None          # None, "in" (device to host) or "out"
        self.remaining = 0            # sectors left in the command
        self.lba = 0                  # next sector of the transfer
        self.commands = 0
        self.sectors_read = 0
        self.sectors_written = 0
        self._set_signature()
        self.status = STATUS_DRDY | STATUS_DSC

    # -- image ------------------------------------------------------------------
    def _open(self, path: str) -> None:
        try:
            try:
                fd = os.open(path, os.O_RDWR)
            except PermissionError:
                fd = os.open(path, os.O_RDONLY)
                self.read_only = True
            if not os.path.isfile(path):
                os.close(fd)
                raise UserError(f"disk image {path} is not a regular file")
            size = os.fstat(fd).st_size
        except IsADirectoryError:
            raise UserError(f"disk image {path} is a directory") from None
        except OSError as e:
            raise UserError(f"cannot open disk image {path}: {e.strerror}") from None
        if size < SECTOR_SIZE:
            os.close(fd)
            raise UserError(f"disk image {path} is smaller than one {SECTOR_SIZE}-byte sector")
        self.fd = fd
        self.sectors = min(size // SECTOR_SIZE, MAX_LBA28 + 1)

    @property
    def present(self) -> bool:
        return self.fd is not None

    def close(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            finally:
                self.fd = None

    def flush(self) -> None:
        if self.fd is not None and not self.read_only:
            try:
                os.fsync(self.fd)
            except OSError:
                pass

    # -- the image's sectors, for a front end other than the registers ------------------
    def read_sectors(self, lba: int, count: int) -> bytes | None:
        """``count`` sectors from ``lba`` (the pv technique's block backend); None if
        outside the image or unreadable."""
        if self.fd is None or lba < 0 or count < 0 or lba + count > self.sectors:
            return None
        try:
            return os.pread(self.fd, count * SECTOR_SIZE, lba * SECTOR_SIZE).ljust(count * SECTOR_SIZE, b"\0")
        except OSError:
            return None

    def write_sectors(self, lba: int, data: bytes) -> bool:
        count = len(data) // SECTOR_SIZE
        if self.fd is None or self.read_only or len(data) % SECTOR_SIZE or lba < 0 \
                or lba + count > self.sectors:
            return False
        try:
            os.pwrite(self.fd, data, lba * SECTOR_SIZE)
        except OSError:
            return False
        self.sectors_written += count
        return True

    # -- interrupt line ----------------------------------------------------------------
    def _update_line(self) -> None:
        level = self.intrq and not self.control & CONTROL_NIEN
        if level != self._line:
            self._line = level
            if self.irq is not None:
                if level:
                    self.irq.raise_()
                else:
                    self.irq.lower()

    def _interrupt(self) -> None:
        self.intrq = True
        self._update_line()

    # -- register file -----------------------------------------------------------------
    def _set_signature(self) -> None:
        self.error = DIAGNOSTIC_PASSED
        self.features = 0
        self.count = 1
        self.lba_low = 1
        self.lba_mid = 0
        self.lba_high = 0
        self.device = DEVICE_OBSOLETE

    @property
    def device1_selected(self) -> bool:
        return bool(self.device & DEVICE_DEV)

    def _address(self) -> int | None:
        """The starting sector of a command (LBA or CHS), or None if it is not valid."""
        if self.device & DEVICE_LBA:
            return ((self.device & 0x0F) << 24) | (self.lba_high << 16) | (self.lba_mid << 8) | self.lba_low
        cyl = (self.lba_high << 8) | self.lba_mid
        head = self.device & 0x0F
        sector = self.lba_low
        if sector == 0 or sector > self.logical_spt or head >= self.logical_heads:
            return None
        return (cyl * self.logical_heads + head) * self.logical_spt + sector - 1

    def _set_address(self, lba: int) -> None:
        """Leave the address registers at ``lba`` (the last sector transferred, or the error)."""
        if self.device & DEVICE_LBA:
            self.lba_low = lba & 0xFF
            self.lba_mid = (lba >> 8) & 0xFF
            self.lba_high = (lba >> 16) & 0xFF
            self.device = (self.device & 0xF0) | ((lba >> 24) & 0x0F)
        else:
            spt, heads = self.logical_spt, self.logical_heads
            cyl, rest = divmod(lba, spt * heads)
            head, sector = divmod(rest, spt)
            self.lba_low = sector + 1
            self.lba_mid = cyl & 0xFF
            self.lba_high = (cyl >> 8) & 0xFF
            self.device = (self.device & 0xF0) | (head & 0x0F)

    # -- command completion helpers --------------------------------------------------------
    def _ok(self, interrupt: bool = True) -> None:
        self.transfer = None
        self.error = 0
        self.status = STATUS_DRDY | STATUS_DSC
        if interrupt:
            self._interrupt()

    def _abort(self, error: int = ERROR_ABRT) -> None:
        self.transfer = None
        self.buffer = bytearray()
        self.error = error
        self.status = STATUS_DRDY | STATUS_DSC | STATUS_ERR
        self._interrupt()

    def _start_in(self, data: bytes) -> None:
        self.buffer = bytearray(data)
        self.pos = 0
        self.transfer = "in"
        self.status = STATUS_DRDY | STATUS_DSC | STATUS_DRQ
        self._interrupt()

    # -- commands -----------------------------------------------------------------------------
    def _command(self, cmd: int) -> None:
        if self.device1_selected or self.control & CONTROL_SRST:
            return
        self.commands += 1
        self.intrq = False
        self._update_line()
        self.transfer = None
        self.remaining = 0
        if cmd == CMD_IDENTIFY_DEVICE:
            self._start_in(self.identify_data())
        elif cmd in (CMD_READ_SECTORS, CMD_READ_SECTORS_NORETRY):
            self._begin_rw(write=False)
        elif cmd in (CMD_WRITE_SECTORS, CMD_WRITE_SECTORS_NORETRY):
            self._begin_rw(write=True)
        elif cmd in (CMD_READ_VERIFY, CMD_READ_VERIFY_NORETRY):
            lba, n = self._address(), self.count or 256
            if lba is None or lba + n > self.sectors:
                self._abort(ERROR_IDNF)
            else:
                self._set_address(lba + n - 1)
                self._ok()
        elif cmd == CMD_INITIALIZE_DEVICE_PARAMETERS:
            if self.count == 0:
                self._abort()
            else:
                self.logical_spt = self.count
                self.logical_heads = (self.device & 0x0F) + 1
                self._ok()
        elif cmd & 0xF0 in (CMD_RECALIBRATE, CMD_SEEK) or cmd in (
                CMD_SET_FEATURES, CMD_STANDBY_IMMEDIATE, CMD_IDLE_IMMEDIATE, CMD_STANDBY, CMD_IDLE):
            self._ok()
        elif cmd == CMD_FLUSH_CACHE:
            self.flush()
            self._ok()
        elif cmd == CMD_CHECK_POWER_MODE:
            self.count = 0xFF                  # active or idle
            self._ok()
        elif cmd == CMD_EXECUTE_DIAGNOSTIC:
            self._set_signature()
            self.status = STATUS_DRDY | STATUS_DSC
            self._interrupt()
        elif cmd == CMD_IDENTIFY_PACKET_DEVICE:
            self._set_signature()
            self._abort()
        else:
            self._abort()

    def _begin_rw(self, write: bool) -> None:
        lba, n = self._address(), self.count or 256
        if lba is None or lba + n > self.sectors:
            self._abort(ERROR_IDNF)
            return
        if write and self.read_only:
            self._abort()
            return
        self.lba, self.remaining = lba, n
        if write:
            self.buffer = bytearray()
            self.transfer = "out"
            self.status = STATUS_DRDY | STATUS_DSC | STATUS_DRQ   # no interrupt before the first sector
        else:
            self._read_next()

    def _read_next(self) -> None:
        try:
            data = os.pread(self.fd, SECTOR_SIZE, self.lba * SECTOR_SIZE)
        except OSError:
            self._set_address(self.lba)
            self._abort(ERROR_UNC)
            return
        self._set_address(self.lba)
        self._start_in(data.ljust(SECTOR_SIZE, b"\0"))

    def _sector_read_done(self) -> None:
        self.sectors_read += 1
        self.lba += 1
        self.remaining -= 1
        if self.remaining > 0:
            self._read_next()
        else:
            self.transfer = None
            self.status = STATUS_DRDY | STATUS_DSC

    def _sector_written(self) -> None:
        try:
            os.pwrite(self.fd, bytes(self.buffer), self.lba * SECTOR_SIZE)
        except OSError:
            self._set_address(self.lba)
            self._abort(ERROR_UNC)
            return
        self._set_address(self.lba)
        self.sectors_written += 1
        self.buffer = bytearray()
        self.lba += 1
        self.remaining -= 1
        if self.remaining > 0:
            self.status = STATUS_DRDY | STATUS_DSC | STATUS_DRQ
            self._interrupt()
        else:
            self._ok()

    def identify_data(self) -> bytes:
        w = [0] * 256
        cyl, heads, spt = self.default_chs
        w[0] = 0x0040                         # fixed device
        w[1], w[3], w[6] = cyl, heads, spt
        w[10:20] = _ata_string(SERIAL, 20)
        w[23:27] = _ata_string(FIRMWARE, 8)
        w[27:47] = _ata_string(MODEL, 40)
        w[47] = 0x8000                        # READ/WRITE MULTIPLE not supported
        w[49] = 0x0200                        # LBA supported
        w[50] = 0x4000
        w[51] = 0x0200                        # PIO mode 2 timing
        w[53] = 0x0003                        # words 54-58 and 64-70 valid
        lcyl = min(0xFFFF, self.sectors // max(1, self.logical_heads * self.logical_spt))
        w[54], w[55], w[56] = lcyl, self.logical_heads, self.logical_spt
        cap = lcyl * self.logical_heads * self.logical_spt
        w[57], w[58] = cap & 0xFFFF, cap >> 16
        total = min(self.sectors, MAX_LBA28)
        w[60], w[61] = total & 0xFFFF, total >> 16
        w[64] = 0x0003                        # PIO modes 3 and 4
        w[65] = w[66] = w[67] = w[68] = 120
        w[80] = 0x001E                        # ATA-1 .. ATA-4
        w[83] = 0x4000
        w[84] = 0x4000
        w[87] = 0x4000
        return b"".join(x.to_bytes(2, "little") for x in w)

    # -- data port -------------------------------------------------------------------
    def _read_data(self, size: int) -> int:
        if self.transfer != "in":
            return 0xFFFFFFFF & ((1 << (8 * size)) - 1)
        chunk = self.buffer[self.pos:self.pos + size]
        self.pos += size
        value = int.from_bytes(chunk.ljust(size, b"\xff"), "little")
        if self.pos >= len(self.buffer):
            if self.remaining > 0:
                self._sector_read_done()
            else:                             # IDENTIFY
                self.transfer = None
                self.status = STATUS_DRDY | STATUS_DSC
        return value

    def _write_data(self, size: int, value: int) -> None:
        if self.transfer != "out":
            return
        room = SECTOR_SIZE - len(self.buffer)
        self.buffer += value.to_bytes(size, "little")[:room]
        if len(self.buffer) >= SECTOR_SIZE:
            self._sector_written()

    # -- I/O ports -----------------------------------------------------------------
    def _status(self) -> int:
        if self.device1_selected:
            return 0x00
        if self.control & CONTROL_SRST:
            return STATUS_BSY
        return self.status

    def io_read(self, port: int, size: int) -> int:
        mask = (1 << (8 * size)) - 1
        if self.fd is None:
            return mask                       # nothing on the cable: the bus floats
        if port == PRIMARY_CTRL:
            return self._status() | (mask & ~0xFF)
        reg = port - PRIMARY_BASE
        if reg == REG_DATA:
            return self._read_data(size)
        if reg == REG_ERROR:
            v = self.error
        elif reg == REG_COUNT:
            v = self.count
        elif reg == REG_LBA_LOW:
            v = self.lba_low
        elif reg == REG_LBA_MID:
            v = self.lba_mid
        elif reg == REG_LBA_HIGH:
            v = self.lba_high
        elif reg == REG_DEVICE:
            v = self.device | DEVICE_OBSOLETE
        elif reg == REG_STATUS:
            v = self._status()
            if not self.device1_selected and self.intrq:
                self.intrq = False
                self._update_line()
        else:
            return mask
        return v | (mask & ~0xFF)

    def io_write(self, port: int, size: int, value: int) -> None:
        if self.fd is None:
            return
        if port == PRIMARY_CTRL:
            old = self.control
            self.control = value & (CONTROL_NIEN | CONTROL_SRST)
            if old & CONTROL_SRST and not self.control & CONTROL_SRST:
                # End of software reset: signature, device ready, no interrupt.
                self._set_signature()
                self.transfer = None
                self.intrq = False
                self.status = STATUS_DRDY | STATUS_DSC
            elif self.control & CONTROL_SRST:
                self.transfer = None
            self._update_line()
            return
        reg = port - PRIMARY_BASE
        if reg == REG_DATA:
            self._write_data(size, value)
            return
        value &= 0xFF
        if reg == REG_ERROR:
            self.features = value
        elif reg == REG_COUNT:
            self.count = value
        elif reg == REG_LBA_LOW:
            self.lba_low = value
        elif reg == REG_LBA_MID:
            self.lba_mid = value
        elif reg == REG_LBA_HIGH:
            self.lba_high = value
        elif reg == REG_DEVICE:
            self.device = value | DEVICE_OBSOLETE
        elif reg == REG_STATUS:
            self._command(value)
