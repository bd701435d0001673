"""Run ``trapvisor run ... --gdb tcp::0 -S`` and a real gdb in batch mode against it."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from trapvisor.guests import build_guest

WORKLOAD = "workload=syscall iterations=300"


@dataclass
class Session:
    gdb: str            # gdb's output
    rc: int             # trapvisor's exit status
    stdout: str         # the guest's console
    stderr: str         # trapvisor's messages


def gdb_session(run_args, commands, *, timeout=240, start_stopped=True, workload=WORKLOAD,
                interrupt_after: float | None = None) -> Session:
    """``interrupt_after``: send gdb SIGINT (Ctrl-C at its terminal) after that many seconds."""
    elf = str(build_guest("tvos"))
    cmd = [sys.executable, "-m", "trapvisor", "run", "guest:tvos", "--append", workload,
           "--gdb", "tcp::0", *(["-S"] if start_stopped else []), *run_args]
    tv = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = tv.stderr.readline()
        m = re.search(r"gdb stub on tcp::(\d+)", first)
        assert m, f"no stub announced: {first!r} {tv.stderr.read() if tv.poll() is not None else ''}"
        args = ["gdb", "-batch", "-nx", "-ex", "set pagination off", "-ex", "set confirm off",
                "-ex", f"target remote :{m.group(1)}"]
        for c in commands:
            args += ["-ex", c]
        g = subprocess.Popen(args + [elf], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if interrupt_after is not None:
            time.sleep(interrupt_after)
            g.send_signal(signal.SIGINT)
        gout, _ = g.communicate(timeout=timeout)
        out, err = tv.communicate(timeout=timeout)
    finally:
        if tv.poll() is None:
            tv.kill()
            tv.wait()
    return Session(gout, tv.returncode, out, first + err)
