"""The debugging options of `trapvisor run`: each bad use is one line and status 2."""

import subprocess
import sys

import pytest


def tv(*args):
    return subprocess.run([sys.executable, "-m", "trapvisor", *args], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("args,message", [
    (("run", "guest:tvos", "--gdb", "tcp::99999"), "bad --gdb port 99999"),
    (("run", "guest:tvos", "--gdb", "tcp::http"), "bad --gdb port 'http'"),
    (("run", "guest:tvos", "--gdb", "udp::1234"), "expected tcp::PORT or tcp:HOST:PORT"),
    (("run", "guest:tvos", "-S"), "-S: starts the machine stopped for gdb"),
    (("run", "guest:tvos", "-s", "--max-seconds", "5"), "--max-seconds: under --gdb"),
    (("run", "guest:tvos", "--snapshot-at", "100"), "give both --snapshot-at N and --snapshot FILE"),
    (("run", "guest:tvos", "--snapshot-at", "0", "--snapshot", "/tmp/x"), "bad snapshot point"),
    (("run", "guest:tvos", "--snapshot", "/nonexistent/dir/x.snap", "--snapshot-at", "5"), "snapshot file"),
    (("run", "--restore", "/nonexistent.snap"), "not found"),
    (("run", "--replay", "/nonexistent.rec"), "not found"),
    (("run",), "give a kernel"),
    (("run", "guest:tvos", "--accel", "kvm", "--record", "/tmp/x.rec"), "--record: applies to the simulated PC"),
    (("run", "guest:tvos", "--gdb", "tcp:203.0.113.1:1234"), "cannot listen there"),
])
def test_bad_debugging_options_are_one_line(args, message):
    p = tv(*args)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], lines


def test_a_port_in_use_is_one_line():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        p = tv("run", "guest:tvos", "--gdb", f"tcp::{s.getsockname()[1]}")
    finally:
        s.close()
    assert p.returncode == 2 and "cannot listen there" in p.stderr and "Traceback" not in p.stderr
