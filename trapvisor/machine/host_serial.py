"""The host ends of COM1: where the guest's serial output goes and its input comes from.

The 16550A model (``devices/uart16550.py``) takes its output as a callable
taking bytes and its input as a callable returning the bytes available now
(polled, never blocking).  This module provides those ends over a host file
descriptor (the user's terminal, which the command line picks), a file, a
TCP connection, or nothing, each as a :class:`SerialBackend` that also knows
how to release what it opened.  Which end a run uses is the command line's
choice (``--serial``, parsed in ``trapvisor/cli/console.py``).
"""

from __future__ import annotations

import os
import select
import socket
from dataclasses import dataclass

from ..errors import UserError


class FdWriter:
    """Unbuffered output to a file descriptor (each guest byte reaches it at once)."""

    def __init__(self, fd: int, close_fd: bool = False):
        self.fd = fd
        self.close_fd = close_fd

    def __call__(self, data: bytes) -> None:
        try:
            while data:
                n = os.write(self.fd, data)
                data = data[n:]
        except OSError:
            pass                              # a closed terminal or pipe loses the output

    def close(self) -> None:
        if self.close_fd:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.close_fd = False


class _Input:
    """Serial input that never blocks: the bytes available now, or b""; after end of file
    or an error, always b"".  ``_receive`` raises BlockingIOError when nothing is ready."""

    eof = False

    def _receive(self) -> bytes:
        raise NotImplementedError

    def receive(self) -> bytes:
        if self.eof:
            return b""
        try:
            data = self._receive()
        except BlockingIOError:
            return b""
        except (OSError, ValueError):
            self.eof = True
            return b""
        if not data:
            self.eof = True
        return data


class FdReader(_Input):
    """Input from a file descriptor, polled with select."""

    def __init__(self, fd: int):
        self.fd = fd

    def _receive(self) -> bytes:
        ready, _, _ = select.select([self.fd], [], [], 0)
        if not ready:
            raise BlockingIOError
        return os.read(self.fd, 4096)

    __call__ = _Input.receive

    def close(self) -> None:
        pass


class SocketEnds(_Input):
    """Both ends over one TCP connection: blocking sends, non-blocking receives."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        sock.setblocking(False)

    def write(self, data: bytes) -> None:
        try:
            self.sock.setblocking(True)
            self.sock.sendall(data)
        except OSError:
            pass
        finally:
            try:
                self.sock.setblocking(False)
            except OSError:
                pass

    def _receive(self) -> bytes:
        return self.sock.recv(4096)

    read = _Input.receive

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _discard(data: bytes) -> None:
    pass


@dataclass
class SerialBackend:
    """Where COM1's output goes and where its input comes from.

    ``out`` is a callable taking bytes; ``input`` a callable returning the
    bytes available now (or None: no input).  Unpacks as ``out, input``.
    """

    out: object
    input: object = None
    closer: object = None

    def __iter__(self):
        yield self.out
        yield self.input

    def close(self) -> None:
        if self.closer is not None:
            self.closer()
            self.closer = None


def fd_serial(out_fd: int, in_fd: int | None) -> SerialBackend:
    """Output to ``out_fd``, input from ``in_fd`` (None: no input); neither is closed."""
    return SerialBackend(FdWriter(out_fd), FdReader(in_fd) if in_fd is not None else None)


def null_serial() -> SerialBackend:
    """Output discarded, no input."""
    return SerialBackend(_discard, None)


def file_serial(path: str) -> SerialBackend:
    """Output to a file, created or truncated; no input."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError as e:
        raise UserError(f"cannot open serial output file {path}: {e.strerror}") from None
    w = FdWriter(fd, close_fd=True)
    return SerialBackend(w, None, w.close)


def socket_serial(host: str, port: int, timeout: float = 5) -> SerialBackend:
    """Connect to a TCP server (e.g. ``nc -l PORT``) and use the connection both ways."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        raise UserError(f"cannot connect serial socket to {host}:{port}: {e.strerror or e}") from None
    ends = SocketEnds(sock)
    return SerialBackend(ends.write, ends.read, ends.close)
