"""Run a multiboot kernel on qemu-system-i386 and collect what it printed.

``run_kernel(path, append)`` boots the kernel with QEMU's multiboot loader
(``-kernel``), COM1 on a pipe, no display, and the ``isa-debug-exit``
device at port 0xf4.  It returns a :class:`QemuRun` with the serial output
and QEMU's exit code, which for a guest that wrote value v to port 0xf4 is
``(v << 1) | 1`` (so a clean exit with 0 gives 1).
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
import subprocess

from tests.hosttools_gate import need
from trapvisor import hosttools

QEMU = shutil.which("qemu-system-i386")


class QemuTimeout(AssertionError):
    """The guest did not end the run in time (output is in the message)."""


@dataclasses.dataclass
class QemuRun:
    output: str
    exit_code: int

    @property
    def lines(self) -> list[str]:
        return self.output.splitlines()

    @property
    def exit_value(self) -> int | None:
        """The value written to the debug-exit port, if the guest wrote one."""
        return self.exit_code >> 1 if self.exit_code & 1 else None

    def __iter__(self):  # allows: output, code = run_kernel(...)
        return iter((self.output, self.exit_code))


def require_qemu() -> str:
    need(*hosttools.QEMU)
    return QEMU


def qemu_command(kernel: pathlib.Path, append: str | None = None,
                 memory_mib: int = 128) -> list[str]:
    cmd = [
        require_qemu(),
        "-machine", "pc", "-accel", "tcg", "-m", str(memory_mib),
        "-nodefaults", "-display", "none", "-monitor", "none",
        "-serial", "stdio", "-no-reboot",
        "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-kernel", str(kernel),
    ]
    if append is not None:
        cmd += ["-append", append]
    return cmd


def run_kernel(kernel: pathlib.Path, append: str | None = None, timeout: float = 30,
               memory_mib: int = 128) -> QemuRun:
    """Boot *kernel*; return its serial output and QEMU's exit code."""
    cmd = qemu_command(kernel, append, memory_mib)
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode("latin-1")
        raise QemuTimeout(f"{kernel.name} {append or ''}: no exit within {timeout}s; "
                          f"output so far:\n{out}") from None
    return QemuRun(proc.stdout.decode("latin-1"), proc.returncode)
