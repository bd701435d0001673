"""The guest's console on the user's side: ``--serial`` and the terminal in raw mode.

``--serial stdio|file:PATH|socket:HOST:PORT|null`` is checked when the
command line is parsed (:func:`serial_spec`) and opened just before the
machine is built (:func:`open_serial`) as one of the host ends in
``machine/host_serial.py``:

* ``stdio``: output to standard output, input from standard input (the
  terminal is left as it is, line-buffered, unless :class:`RawTerminal`
  puts it in raw mode for a KVM guest);
* ``file:PATH``: output to a file (created or truncated), no input;
* ``socket:HOST:PORT``: connect to a TCP server (e.g. ``nc -l PORT``) and
  use the connection both ways;
* ``null``: output discarded, no input.
"""

from __future__ import annotations

import os
import sys
import termios
import tty
from dataclasses import dataclass

from ..machine import host_serial
from .options import OptionError, output_file_problem

SERIAL_SPECS = "stdio, file:PATH, socket:HOST:PORT or null"


@dataclass(frozen=True)
class SerialSpec:
    kind: str                  # "stdio", "null", "file" or "socket"
    path: str = ""
    host: str = ""
    port: int = 0


def serial_spec(text: str) -> SerialSpec:
    """The argparse type of ``--serial``."""
    if text in ("stdio", "null"):
        return SerialSpec(text)
    kind, sep, arg = text.partition(":")
    if sep and kind == "file":
        if not arg:
            raise OptionError("file: needs a path, as in file:serial.log")
        problem = output_file_problem(arg, "serial output file")
        if problem:
            raise OptionError(problem)
        return SerialSpec("file", path=arg)
    if sep and kind == "socket":
        host, sep2, port = arg.rpartition(":")
        host = host.strip("[]")
        if not sep2 or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise OptionError(f"bad --serial socket spec {text!r}: expected socket:HOST:PORT, "
                              "PORT from 1 to 65535")
        return SerialSpec("socket", host=host, port=int(port))
    raise OptionError(f"bad --serial spec {text!r}: expected {SERIAL_SPECS}")


def _fileno(stream) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def open_serial(spec: SerialSpec) -> host_serial.SerialBackend:
    """The host end ``spec`` names; a one-line UserError if it cannot be opened."""
    if spec.kind == "stdio":
        out = _fileno(sys.stdout)
        return host_serial.fd_serial(1 if out is None else out, _fileno(sys.stdin))
    if spec.kind == "file":
        return host_serial.file_serial(spec.path)
    if spec.kind == "socket":
        return host_serial.socket_serial(spec.host, spec.port)
    return host_serial.null_serial()


class RawTerminal:
    """The terminal in raw mode while a KVM guest owns the console; always restored.

    Raw mode hands every key to the guest (Ctrl-C included), so the KVM
    machine watches for Ctrl-A x to quit, as QEMU's -nographic console does.
    """

    def __init__(self, wanted: bool):
        self.fd = None
        self.saved = None
        self.enabled = False
        if wanted:
            fd = _fileno(sys.stdin)
            if fd is not None and os.isatty(fd):
                self.fd, self.enabled = fd, True

    def enter(self) -> None:
        if self.enabled and self.saved is None:
            self.saved = termios.tcgetattr(self.fd)
            tty.setraw(self.fd, termios.TCSANOW)
            sys.stderr.write("trapvisor: console in raw mode; Ctrl-A x quits\r\n")

    def restore(self) -> None:
        if self.saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
            self.saved = None
