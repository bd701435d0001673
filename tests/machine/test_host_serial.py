"""The host ends of COM1: a file, a TCP connection, nothing, a file descriptor."""

import os
import socket
import threading

import pytest

from trapvisor.errors import UserError
from trapvisor.machine.host_serial import fd_serial, file_serial, null_serial, socket_serial


def test_null_and_file(tmp_path):
    out, inp = null_serial()
    out(b"dropped")
    assert inp is None
    p = tmp_path / "serial.log"
    be = file_serial(str(p))
    be.out(b"abc")
    be.close()
    assert p.read_bytes() == b"abc"


def test_fd_ends_write_and_read_without_blocking():
    r_out, w_out = os.pipe()
    r_in, w_in = os.pipe()
    try:
        be = fd_serial(w_out, r_in)
        be.out(b"to the terminal")
        assert os.read(r_out, 100) == b"to the terminal"
        assert be.input() == b""
        os.write(w_in, b"typed")
        assert be.input() == b"typed"
    finally:
        for fd in (r_out, w_out, r_in, w_in):
            os.close(fd)


def test_socket_round_trip():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    got = []

    def serve():
        conn, _ = srv.accept()
        got.append(conn.recv(10))
        conn.sendall(b"back")
        conn.close()
    t = threading.Thread(target=serve)
    t.start()
    be = socket_serial("127.0.0.1", port)
    be.out(b"hello")
    t.join(5)
    data = b""
    for _ in range(100):
        data += be.input()
        if data:
            break
        threading.Event().wait(0.01)
    be.close()
    srv.close()
    assert got == [b"hello"] and data == b"back"


def test_unwritable_file(tmp_path):
    with pytest.raises(UserError, match="cannot open"):
        file_serial(f"{tmp_path}/no/such/dir/x.log")


def test_connection_refused():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(UserError, match="cannot connect"):
        socket_serial("127.0.0.1", port)
