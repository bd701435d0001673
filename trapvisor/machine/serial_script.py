"""A scripted serial console: types lines into COM1 when the guest's output shows a prompt.

The UART polls its input source (``devices/uart16550.py``, ``input_source``)
every millisecond of guest time, so typing is deterministic: it depends only
on what the guest has printed, never on host timing.  Each line of
``lines`` is typed, whole, the first time the output since the previous line
ends in ``prompt`` (a regular expression over bytes).  ``transcript`` is
everything the guest printed; ``done`` turns true when the output after the
last line shows the prompt again (or ``end`` matches).
"""

from __future__ import annotations

import re


class SerialScript:
    def __init__(self, lines, prompt: bytes = rb"# $", end: bytes | None = None, on_done=None):
        self.lines = [line if isinstance(line, bytes) else line.encode() for line in lines]
        self.prompt = re.compile(prompt)
        self.end = re.compile(end) if end else None
        self.on_done = on_done
        self.transcript = bytearray()
        self.mark = 0                 # output from here on is what the next prompt is looked for in
        self.next = 0
        self.pending = b""
        self.done = False

    def out(self, data: bytes) -> None:
        """The guest's console output (the board's serial_out)."""
        self.transcript += data
        tail = bytes(self.transcript[self.mark:])
        if self.done:
            return
        finished = self.end.search(tail) if self.end else (self.next == len(self.lines) and
                                                           self.prompt.search(tail))
        if finished:
            self.done = True
            if self.on_done is not None:
                self.on_done()
            return
        if self.next < len(self.lines) and not self.pending and self.prompt.search(tail):
            self.pending = self.lines[self.next] + b"\n"
            self.next += 1
            self.mark = len(self.transcript)

    def input(self) -> bytes:
        """What the UART receives when it polls (everything typed so far and not yet taken)."""
        data, self.pending = self.pending, b""
        return data

    @property
    def text(self) -> str:
        return self.transcript.decode("utf-8", "replace")
