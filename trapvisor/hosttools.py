"""The host programs and data files trapvisor uses, each with its Debian package.

trapvisor itself is pure Python, but it builds its guests with the GNU
toolchain and checks its machine against independent ones: qemu-system-i386
(the reference PC of the differential tests) and Bochs (the tie-breaker where
QEMU differs from Intel).  Those machines open firmware images that their
Debian packages often ship only as a link into another package (Bochs's
``VGABIOS-lgpl-latest`` points into ``vgabios``, which ``bochs`` does not
pull in when ``seabios`` already satisfies its dependency), so a program
being on PATH is not enough: every file it opens is listed here too.

This table is the one place that says what the host must have.  The
Makefile's set-up installs every package named here; ``trapvisor doctor``
checks each requirement and names the package of the missing ones; code that
runs an external tool calls :func:`require`, which raises a one-line
:class:`~trapvisor.errors.UserError` instead of letting the tool fail later
with a traceback or a panic.  ``tests/test_hosttools.py`` proves the table is
complete against what the programs' own packages link to.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from .errors import UserError


@dataclass(frozen=True)
class Requirement:
    name: str           # a program looked up on PATH, or a file name
    package: str        # the Debian package that provides it
    purpose: str
    paths: tuple = ()   # a file: where it may be (the first that exists is used)

    @property
    def is_file(self) -> bool:
        return bool(self.paths)

    def locate(self) -> str | None:
        """Where the program or file is on this host, or None."""
        if not self.is_file:
            return shutil.which(self.name)
        for path in self.paths:
            # os.path.exists follows links: a dangling link (the package it points into
            # is missing) counts as missing, which is exactly the Bochs VGA BIOS case.
            if os.path.exists(path):
                return path
        return None

    def problem(self) -> str:
        kind = "file" if self.is_file else "program"
        return (f"{self.name} ({kind}, {self.purpose}) is missing: install the Debian package "
                f"{self.package} (apt-get install {self.package})")


# Where qemu-system-i386 looks for its firmware (`qemu-system-i386 -L help` on Debian).
QEMU_DATA_DIRS = ("/usr/share/qemu", "/usr/share/seabios", "/usr/lib/ipxe/qemu")
BOCHS_BIOS = "/usr/share/bochs/BIOS-bochs-latest"
BOCHS_VGABIOS = "/usr/share/bochs/VGABIOS-lgpl-latest"


def _qemu_file(name: str) -> tuple:
    return tuple(os.path.join(d, name) for d in QEMU_DATA_DIRS)


REQUIREMENTS = (
    Requirement("gcc", "gcc", "compiles the bundled guests"),
    Requirement("as", "binutils", "assembles the bundled guests"),
    Requirement("ld", "binutils", "links the bundled guests"),
    Requirement("objcopy", "binutils", "makes flat guest images"),
    Requirement("qemu-system-i386", "qemu-system-x86", "the reference PC of the differential tests"),
    # The ROMs a `-machine pc -nodefaults -kernel` run opens: the BIOS, the Multiboot and
    # Linux option ROMs that -kernel loads.
    Requirement("bios-256k.bin", "seabios", "QEMU's PC BIOS", _qemu_file("bios-256k.bin")),
    Requirement("multiboot_dma.bin", "qemu-system-data", "QEMU's Multiboot loader ROM",
                _qemu_file("multiboot_dma.bin")),
    Requirement("linuxboot_dma.bin", "qemu-system-data", "QEMU's Linux loader ROM",
                _qemu_file("linuxboot_dma.bin")),
    Requirement("apt-get", "apt", "fetches Debian's kernel and busybox for guest:linux"),
    Requirement("dpkg-deb", "dpkg", "unpacks the kernel and busybox packages of guest:linux"),
    Requirement("bochs", "bochs", "the tie-breaker where QEMU differs from Intel"),
    Requirement("BIOS-bochs-latest", "bochsbios", "Bochs's PC BIOS", (BOCHS_BIOS,)),
    Requirement("VGABIOS-lgpl-latest", "vgabios", "Bochs's VGA BIOS (its bochsrc names it)",
                (BOCHS_VGABIOS,)),
    Requirement("gdb", "gdb", "the debugger the gdb stub is tested with (trapvisor run --gdb)"),
)

BY_NAME = {r.name: r for r in REQUIREMENTS}

# Which requirements each use needs.
GUEST_BUILD = ("gcc", "as", "ld", "objcopy")
QEMU = ("qemu-system-i386", "bios-256k.bin", "multiboot_dma.bin", "linuxboot_dma.bin")
BOCHS = ("bochs", "BIOS-bochs-latest", "VGABIOS-lgpl-latest")
LINUX_GUEST = ("apt-get", "dpkg-deb")


def packages() -> list[str]:
    """Every Debian package the project's tools come from (what the set-up installs)."""
    return sorted({r.package for r in REQUIREMENTS})


def missing(names=None) -> list[Requirement]:
    """The requirements (all, or those named) that this host does not have."""
    reqs = REQUIREMENTS if names is None else [BY_NAME[n] for n in names]
    return [r for r in reqs if r.locate() is None]


def require(*names: str) -> None:
    """Raise a one-line UserError naming the package of the first missing requirement."""
    gone = missing(names)
    if gone:
        raise UserError(gone[0].problem())


def in_ci() -> bool:
    """True under CI (``.ci/run`` sets CI): a missing tool is then a failure, never a skip."""
    return os.environ.get("CI", "") not in ("", "0", "false")


def package_owning(path: str) -> str | None:
    """The installed Debian package that owns ``path`` (links resolved), or None."""
    real = os.path.realpath(path)
    try:
        r = subprocess.run(["dpkg", "-S", real], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0 or ":" not in r.stdout:
        return None
    return r.stdout.split(":", 1)[0].split(",")[0].strip()
