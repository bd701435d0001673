"""The GDB Remote Serial Protocol's framing: packets, checksums, escapes, acks.

A packet is ``$data#cc``: ``cc`` is the modulo-256 sum of the data bytes in two
hex digits; ``}`` escapes ``# $ } *`` in the data (the byte that follows is
XORed with 0x20); a run-length ``*`` may appear in what gdb sends.  The
receiver answers ``+`` (good) or ``-`` (bad checksum: send it again) until
``QStartNoAckMode`` turns acknowledgements off.  A lone 0x03 byte outside a
packet is an interrupt request (Ctrl-C).  Source: the GDB manual, appendix E
"GDB Remote Serial Protocol", sections E.1 Overview and E.11 Interrupts.

:class:`Connection` reads and writes these on a socket; the command layer
(``gdbstub.py``) never sees framing.
"""

from __future__ import annotations

import select
import socket

INTERRUPT = 0x03
ESCAPED = frozenset(b"#$}*")
MAX_PACKET = 0x4000          # what qSupported offers gdb as PacketSize


class ProtocolError(Exception):
    """The peer broke the framing (or went away)."""


def checksum(data: bytes) -> int:
    return sum(data) & 0xFF


def escape(data: bytes) -> bytes:
    out = bytearray()
    for b in data:
        if b in ESCAPED:
            out += bytes((0x7D, b ^ 0x20))
        else:
            out.append(b)
    return bytes(out)


def unescape(data: bytes) -> bytes:
    """Undo ``}`` escapes and expand run-length encoding (``X*n``: X repeated n-29 more times)."""
    out = bytearray()
    i = 0
    while i < len(data):
        b = data[i]
        if b == 0x7D:
            if i + 1 >= len(data):
                raise ProtocolError("packet ends inside an escape")
            out.append(data[i + 1] ^ 0x20)
            i += 2
        elif b == 0x2A and out:
            if i + 1 >= len(data):
                raise ProtocolError("packet ends inside a run length")
            out += bytes((out[-1],)) * (data[i + 1] - 29)
            i += 2
        else:
            out.append(b)
            i += 1
    return bytes(out)


def frame(data: bytes) -> bytes:
    body = escape(data)
    return b"$" + body + b"#" + b"%02x" % checksum(body)


class Connection:
    """One gdb connection: packets in and out, acks, and Ctrl-C noticed at any time."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = bytearray()
        self.ack = True
        self.interrupted = False     # a 0x03 arrived (outside a packet)
        self.closed = False

    # -- bytes -------------------------------------------------------------------------
    def _fill(self, timeout: float | None) -> bool:
        """Read what is there (waiting up to ``timeout``; None: until something comes)."""
        if self.closed:
            raise ProtocolError("connection closed")
        if timeout is not None:
            ready, _, _ = select.select([self.sock], [], [], timeout)
            if not ready:
                return False
        try:
            data = self.sock.recv(65536)
        except OSError as e:
            self.closed = True
            raise ProtocolError(f"connection lost: {e}") from None
        if not data:
            self.closed = True
            raise ProtocolError("gdb closed the connection")
        self.buf += data
        return True

    def _take_interrupts(self) -> None:
        """0x03 bytes between packets are interrupt requests; stray acks are dropped."""
        while self.buf and self.buf[0] != ord("$"):
            b = self.buf.pop(0)
            if b == INTERRUPT:
                self.interrupted = True

    def poll_interrupt(self) -> bool:
        """Has gdb asked to stop the target (Ctrl-C)?  Does not block."""
        if not self.interrupted:
            while self._fill(0):
                pass
            self._take_interrupts()
        hit, self.interrupted = self.interrupted, False
        return hit

    def write(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as e:
            self.closed = True
            raise ProtocolError(f"connection lost: {e}") from None

    # -- packets -----------------------------------------------------------------------
    def receive(self, timeout: float | None = None) -> bytes | None:
        """The next packet's data (acknowledged), or None on timeout."""
        while True:
            self._take_interrupts()
            start = self.buf.find(b"$")
            end = self.buf.find(b"#", start + 1) if start >= 0 else -1
            if start >= 0 and end >= 0 and len(self.buf) >= end + 3:
                body = bytes(self.buf[start + 1:end])
                sent = bytes(self.buf[end + 1:end + 3])
                del self.buf[:end + 3]
                try:
                    good = int(sent, 16) == checksum(body)
                except ValueError:
                    good = False
                if not self.ack:
                    return unescape(body)
                if good:
                    self.write(b"+")
                    return unescape(body)
                self.write(b"-")
                continue
            if len(self.buf) > 4 * MAX_PACKET:
                raise ProtocolError("packet too long")
            if not self._fill(timeout):
                return None

    def send(self, data: bytes | str, retries: int = 3) -> None:
        """Send a packet; with acks on, until gdb acknowledges it (or ``retries`` run out)."""
        if isinstance(data, str):
            data = data.encode()
        packet = frame(data)
        for _ in range(retries + 1):
            self.write(packet)
            if not self.ack:
                return
            while True:
                if not self.buf and not self._fill(5.0):
                    raise ProtocolError("gdb did not acknowledge a packet in 5 s")
                b = self.buf[0]
                if b == ord("+"):
                    del self.buf[0]
                    return
                if b == ord("-"):
                    del self.buf[0]
                    break
                if b == INTERRUPT:
                    del self.buf[0]
                    self.interrupted = True
                    continue
                # A packet from gdb before the ack: gdb took ours (acks can be lost).
                return
        raise ProtocolError("gdb refused a packet repeatedly")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass


def hex_bytes(data: bytes) -> str:
    return data.hex()


def from_hex(text: bytes | str) -> bytes:
    try:
        return bytes.fromhex(text.decode() if isinstance(text, bytes) else text)
    except ValueError:
        raise ProtocolError(f"bad hex data {text[:40]!r}") from None


def le_hex(value: int, size: int) -> str:
    """A register value as gdb wants it: target (little-endian) byte order, in hex."""
    return (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little").hex()
