"""The Intel 8042 keyboard controller of the PC/AT (ports 0x60/0x64) with a keyboard.

Rules from the IBM PC/AT Technical Reference ("Keyboard Controller") and the
IBM PS/2 Hardware Interface Technical Reference (8042 commands):

* port 0x64 read: status register, bit 0 output buffer full, bit 1 input
  buffer full (always 0 here: input is taken at once), bit 2 system flag,
  bit 3 last write was a command (0x64) rather than data (0x60), bit 4
  keyboard not inhibited, bit 5 the output byte is from the auxiliary device,
  bit 6 timeout, bit 7 parity error;
* port 0x64 write: controller commands: 0x20 read / 0x60 write the command
  byte (bit 0 keyboard interrupt, bit 1 auxiliary interrupt, bit 2 system
  flag, bit 4 keyboard disabled, bit 5 auxiliary disabled, bit 6 scan-code
  translation), 0xA7/0xA8 disable/enable auxiliary, 0xA9 test auxiliary
  (0x00 = OK), 0xAA self test (0x55), 0xAB test keyboard interface (0x00),
  0xAD/0xAE disable/enable keyboard, 0xC0 read input port, 0xD0/0xD1
  read/write output port (bit 0 = processor reset line, active low; bit 1 =
  A20 gate), 0xD2/0xD3 write keyboard/auxiliary output buffer, 0xD4 write to
  the auxiliary device, 0xF0-0xFF pulse output-port bits 3:0 low for the bits
  clear in the command (0xFE pulses the reset line);
* port 0x60: the output buffer (read) and data to the keyboard or a pending
  controller command (write).

The keyboard (IBM PC/AT keyboard commands) acknowledges with 0xFA: reset 0xFF
(then 0xAA, self test passed), identify 0xF2 (0xAB 0x83), echo 0xEE, set
LEDs 0xED, scan-code set 0xF0, typematic 0xF3 (each with a parameter byte),
enable/disable/defaults.  There is no mouse: bytes for the auxiliary device
are answered with 0xFE (as when the device does not respond).

IRQ 1 follows "output buffer holds a keyboard byte and the command byte
enables the keyboard interrupt"; IRQ 12 likewise for auxiliary bytes.  A
reset pulse calls ``on_reset`` (the machine decides what a reset means); a
guest reading an empty output buffer gets the last byte again, as on the
real controller.
"""

from __future__ import annotations

from collections import deque

DATA_PORT = 0x60
STATUS_PORT = 0x64
COMMAND_PORT = 0x64
KEYBOARD_IRQ = 1
AUX_IRQ = 12

STATUS_OBF = 0x01
STATUS_IBF = 0x02
STATUS_SYS = 0x04
STATUS_CMD = 0x08
STATUS_UNLOCKED = 0x10
STATUS_AUX_OBF = 0x20
STATUS_TIMEOUT = 0x40
STATUS_PARITY = 0x80

CCB_KBD_INT = 0x01
CCB_AUX_INT = 0x02
CCB_SYS = 0x04
CCB_KBD_DISABLE = 0x10
CCB_AUX_DISABLE = 0x20
CCB_XLATE = 0x40

OUTPUT_RESET = 0x01        # processor reset line (low = reset)
OUTPUT_A20 = 0x02

CMD_READ_CCB = 0x20
CMD_WRITE_CCB = 0x60
CMD_DISABLE_AUX = 0xA7
CMD_ENABLE_AUX = 0xA8
CMD_TEST_AUX = 0xA9
CMD_SELF_TEST = 0xAA
CMD_TEST_KBD = 0xAB
CMD_DISABLE_KBD = 0xAD
CMD_ENABLE_KBD = 0xAE
CMD_READ_INPUT = 0xC0
CMD_READ_OUTPUT = 0xD0
CMD_WRITE_OUTPUT = 0xD1
CMD_WRITE_KBD_OBUF = 0xD2
CMD_WRITE_AUX_OBUF = 0xD3
CMD_WRITE_AUX = 0xD4
CMD_DISABLE_A20 = 0xDD
CMD_ENABLE_A20 = 0xDF
CMD_PULSE_BASE = 0xF0

SELF_TEST_OK = 0x55

KBD_ACK = 0xFA
KBD_RESEND = 0xFE
KBD_BAT_OK = 0xAA
KBD_ECHO = 0xEE
KBD_CMD_SET_LEDS = 0xED
KBD_CMD_ECHO = 0xEE
KBD_CMD_SCANCODE_SET = 0xF0
KBD_CMD_IDENTIFY = 0xF2
KBD_CMD_TYPEMATIC = 0xF3
KBD_CMD_RESET = 0xFF
KBD_ID = (0xAB, 0x83)

INITIAL_CCB = CCB_KBD_INT | CCB_SYS | CCB_AUX_DISABLE | CCB_XLATE


class I8042:
    def __init__(self, kbd_irq=None, aux_irq=None, *, on_reset=None, on_a20=None):
        self.kbd_irq = kbd_irq
        self.aux_irq = aux_irq
        self.on_reset = on_reset
        self.on_a20 = on_a20
        self.ccb = INITIAL_CCB
        self.status_flags = STATUS_SYS | STATUS_UNLOCKED
        self.output_port = OUTPUT_RESET | OUTPUT_A20
        self.out: deque[tuple[int, bool]] = deque()   # (byte, from auxiliary device)
        self.kbd_pending: deque[int] = deque()        # host key bytes held while disabled
        self.last = 0
        self.pending_command: int | None = None       # controller command awaiting its data byte
        self.kbd_pending_cmd: int | None = None       # keyboard command awaiting its parameter
        self.scancode_set = 2
        self.resets = 0
        self._kbd_line = False
        self._aux_line = False

    @property
    def a20(self) -> bool:
        return bool(self.output_port & OUTPUT_A20)

    # -- output buffer -------------------------------------------------------------------
    def _push(self, byte: int, aux: bool = False) -> None:
        self.out.append((byte & 0xFF, aux))
        self._update_irq()

    def _update_irq(self) -> None:
        head = self.out[0] if self.out else None
        kbd = head is not None and not head[1] and bool(self.ccb & CCB_KBD_INT)
        aux = head is not None and head[1] and bool(self.ccb & CCB_AUX_INT)
        for attr, line, level in (("_kbd_line", self.kbd_irq, kbd), ("_aux_line", self.aux_irq, aux)):
            if getattr(self, attr) != level:
                setattr(self, attr, level)
                if line is not None:
                    line.raise_() if level else line.lower()

    def key_input(self, data: bytes) -> None:
        """Scan codes from the host's keyboard (as the keyboard would send them)."""
        self.kbd_pending.extend(data)
        self._flush_keys()

    def _flush_keys(self) -> None:
        while self.kbd_pending and not self.ccb & CCB_KBD_DISABLE:
            self._push(self.kbd_pending.popleft())

    # -- output port --------------------------------------------------------------------
    def _set_output_port(self, value: int) -> None:
        old_a20 = self.a20
        self.output_port = value | OUTPUT_RESET   # the reset line returns high after the pulse
        if self.a20 != old_a20 and self.on_a20 is not None:
            self.on_a20(self.a20)
        if not value & OUTPUT_RESET:
            self._reset_pulse()

    def _reset_pulse(self) -> None:
        self.resets += 1
        if self.on_reset is not None:
            self.on_reset()

    # -- controller commands ---------------------------------------------------------------
    def _controller_command(self, cmd: int) -> None:
        if cmd == CMD_READ_CCB:
            self._push(self.ccb)
        elif cmd in (CMD_WRITE_CCB, CMD_WRITE_OUTPUT, CMD_WRITE_KBD_OBUF, CMD_WRITE_AUX_OBUF,
                     CMD_WRITE_AUX):
            self.pending_command = cmd
        elif cmd == CMD_DISABLE_AUX:
            self.ccb |= CCB_AUX_DISABLE
        elif cmd == CMD_ENABLE_AUX:
            self.ccb &= ~CCB_AUX_DISABLE
        elif cmd in (CMD_TEST_AUX, CMD_TEST_KBD):
            self._push(0x00)
        elif cmd == CMD_SELF_TEST:
            self.status_flags |= STATUS_SYS
            self._push(SELF_TEST_OK)
        elif cmd == CMD_DISABLE_KBD:
            self.ccb |= CCB_KBD_DISABLE
        elif cmd == CMD_ENABLE_KBD:
            self.ccb &= ~CCB_KBD_DISABLE
            self._flush_keys()
        elif cmd == CMD_READ_INPUT:
            self._push(0x80)                        # bit 7: keyboard not inhibited
        elif cmd == CMD_READ_OUTPUT:
            v = self.output_port & ~0x30
            if self.out:
                v |= 0x20 if self.out[0][1] else 0x10
            self._push(v)
        elif cmd == CMD_DISABLE_A20:
            self._set_output_port(self.output_port & ~OUTPUT_A20)
        elif cmd == CMD_ENABLE_A20:
            self._set_output_port(self.output_port | OUTPUT_A20)
        elif cmd >= CMD_PULSE_BASE:
            if not cmd & OUTPUT_RESET:
                self._reset_pulse()
        # 0x21-0x3F / 0x61-0x7F (controller RAM) and vendor commands: ignored.
        elif 0x21 <= cmd <= 0x3F:
            self._push(0x00)
        self._update_irq()

    def _controller_data(self, cmd: int, value: int) -> None:
        if cmd == CMD_WRITE_CCB:
            self.ccb = value
            self.status_flags = (self.status_flags & ~STATUS_SYS) | (value & CCB_SYS)
            self._flush_keys()
        elif cmd == CMD_WRITE_OUTPUT:
            self._set_output_port(value)
        elif cmd == CMD_WRITE_KBD_OBUF:
            self._push(value)
        elif cmd == CMD_WRITE_AUX_OBUF:
            self._push(value, aux=True)
        elif cmd == CMD_WRITE_AUX:
            self._push(KBD_RESEND, aux=True)         # no auxiliary device answers
        self._update_irq()

    # -- keyboard ------------------------------------------------------------------------
    def _keyboard_data(self, value: int) -> None:
        self.ccb &= ~CCB_KBD_DISABLE                  # writing to the keyboard enables it
        pending, self.kbd_pending_cmd = self.kbd_pending_cmd, None
        if pending == KBD_CMD_SCANCODE_SET:
            self._push(KBD_ACK)
            if value == 0:
                self._push(self.scancode_set)
            elif value in (1, 2, 3):
                self.scancode_set = value
            return
        if pending is not None:                       # LED / typematic parameter
            self._push(KBD_ACK)
            return
        if value == KBD_CMD_RESET:
            self.kbd_pending.clear()
            self._push(KBD_ACK)
            self._push(KBD_BAT_OK)
        elif value == KBD_CMD_IDENTIFY:
            self._push(KBD_ACK)
            for b in KBD_ID:
                self._push(b)
        elif value == KBD_CMD_ECHO:
            self._push(KBD_ECHO)
        elif value in (KBD_CMD_SET_LEDS, KBD_CMD_SCANCODE_SET, KBD_CMD_TYPEMATIC):
            self.kbd_pending_cmd = value
            self._push(KBD_ACK)
        else:
            self._push(KBD_ACK)

    # -- I/O ports ------------------------------------------------------------------------
    def _status(self) -> int:
        v = self.status_flags
        if self.out:
            v |= STATUS_OBF
            if self.out[0][1]:
                v |= STATUS_AUX_OBF
        return v

    def _read_byte(self, port: int) -> int:
        if port == DATA_PORT:
            if self.out:
                self.last = self.out.popleft()[0]
                self._update_irq()
            return self.last
        if port == STATUS_PORT:
            return self._status()
        return 0xFF

    def _write_byte(self, port: int, value: int) -> None:
        if port == COMMAND_PORT:
            self.status_flags |= STATUS_CMD
            self.pending_command = None
            self._controller_command(value)
        elif port == DATA_PORT:
            self.status_flags &= ~STATUS_CMD
            cmd, self.pending_command = self.pending_command, None
            if cmd is not None:
                self._controller_data(cmd, value)
            else:
                self._keyboard_data(value)

    def io_read(self, port: int, size: int) -> int:
        v = self._read_byte(port)
        return v if size == 1 else v | (0xFFFFFF00 & ((1 << (8 * size)) - 1))

    def io_write(self, port: int, size: int, value: int) -> None:
        self._write_byte(port, value & 0xFF)
