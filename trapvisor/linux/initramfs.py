"""An initramfs written in Python: a newc cpio archive around busybox.

Format: the "new ASCII" (newc) cpio format the kernel unpacks
(Documentation/driver-api/early-userspace/buffer-format.rst): for each entry
a 110-byte header of "070701" and thirteen 8-digit hex fields (ino, mode,
uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor,
namesize, check), the NUL-terminated name padded to 4 bytes, then the data
padded to 4 bytes; the archive ends with an entry named "TRAILER!!!".
Device nodes go in the archive itself (no root needed), so /dev/console
exists before the kernel opens the initial console.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass

NEWC_MAGIC = b"070701"
TRAILER = "TRAILER!!!"


@dataclass
class CpioEntry:
    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


def newc_entry(ino: int, entry: CpioEntry, mtime: int = 0) -> bytes:
    name = entry.name.encode() + b"\0"
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    fields = (ino, entry.mode, 0, 0, nlink, mtime, len(entry.data), 0, 0,
              entry.rdev[0], entry.rdev[1], len(name), 0)
    header = NEWC_MAGIC + b"".join(b"%08X" % f for f in fields)
    head = header + name
    return head + _pad4(len(head)) + entry.data + _pad4(len(entry.data))


def newc_archive(entries: list[CpioEntry]) -> bytes:
    out = [newc_entry(i + 1, e) for i, e in enumerate(entries)]
    out.append(newc_entry(0, CpioEntry(TRAILER, 0)))
    blob = b"".join(out)
    return blob + b"\0" * (-len(blob) % 512)


def directory(name: str) -> CpioEntry:
    return CpioEntry(name, stat.S_IFDIR | 0o755)


def regular(name: str, data: bytes, perm: int = 0o644) -> CpioEntry:
    return CpioEntry(name, stat.S_IFREG | perm, data)


def symlink(name: str, target: str) -> CpioEntry:
    return CpioEntry(name, stat.S_IFLNK | 0o777, target.encode())


def chardev(name: str, major: int, minor: int, perm: int = 0o600) -> CpioEntry:
    return CpioEntry(name, stat.S_IFCHR | perm, rdev=(major, minor))


INIT_SCRIPT = """#!/bin/busybox sh
# trapvisor's /init: a busybox shell on the serial console.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "trapvisor initramfs: /init is running on $(uname -r)"
echo "type 'poweroff -f' or 'reboot -f' to end the VM"
exec setsid cttyhack /bin/sh
"""


def busybox_initramfs(busybox: bytes, init_script: str = INIT_SCRIPT) -> bytes:
    """The archive: /bin/busybox, /init, the mount points and the console device nodes."""
    entries = [directory(d) for d in ("bin", "sbin", "dev", "proc", "sys", "tmp", "etc", "root")]
    entries += [
        regular("bin/busybox", busybox, 0o755),
        symlink("bin/sh", "busybox"),
        regular("init", init_script.encode(), 0o755),
        chardev("dev/console", 5, 1),       # Documentation/admin-guide/devices.txt
        chardev("dev/ttyS0", 4, 64),
        chardev("dev/null", 1, 3, 0o666),
        regular("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
    ]
    return newc_archive(entries)


def parse_newc(blob: bytes) -> list[CpioEntry]:
    """Read a newc archive back (for tests and for checking what was written)."""
    entries, off = [], 0
    while off + 110 <= len(blob):
        if blob[off:off + 6] != NEWC_MAGIC:
            raise ValueError(f"bad cpio magic at {off}")
        f = [int(blob[off + 6 + 8 * i: off + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = f[11], f[6]
        name = blob[off + 110: off + 110 + namesize - 1].decode()
        off += 110 + namesize
        off += -off % 4
        data = blob[off: off + filesize]
        off += filesize
        off += -off % 4
        if name == TRAILER:
            break
        entries.append(CpioEntry(name, f[1], data, (f[9], f[10])))
    return entries
