"""The POST diagnostic port 0x80.

BIOSes write power-on self-test progress codes to port 0x80 (a POST card
shows them); operating systems write to it as a short I/O delay
(``outb %al, $0x80``).  Behaviour as QEMU's ``ioport80`` (hw/i386/pc.c):
writes are accepted and have no effect, reads return 0xFF.  The last code
and the number of writes are kept for reports.
"""

from __future__ import annotations

POST_PORT = 0x80


class PostCodePort:
    def __init__(self) -> None:
        self.last_code: int | None = None
        self.writes = 0

    def io_read(self, port: int, size: int) -> int:
        return (1 << (8 * size)) - 1

    def io_write(self, port: int, size: int, value: int) -> None:
        self.last_code = value & 0xFF
        self.writes += 1
