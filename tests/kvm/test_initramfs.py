"""The newc cpio writer."""
import stat

from trapvisor.linux.initramfs import CpioEntry, busybox_initramfs, newc_archive, newc_entry, parse_newc


def test_newc_header_layout():
    e = newc_entry(1, CpioEntry("init", stat.S_IFREG | 0o755, b"#!/bin/sh\n"))
    assert e.startswith(b"070701")
    assert int(e[6:14], 16) == 1                       # ino
    assert int(e[14:22], 16) == stat.S_IFREG | 0o755   # mode
    assert int(e[54:62], 16) == 10                     # filesize
    assert int(e[94:102], 16) == 5                     # namesize incl. NUL
    assert e[110:115] == b"init\0" and len(e) % 4 == 0


def test_archive_round_trip_and_trailer():
    blob = newc_archive([CpioEntry("a", stat.S_IFREG | 0o644, b"xyz"),
                         CpioEntry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))])
    assert b"TRAILER!!!" in blob and len(blob) % 512 == 0
    entries = parse_newc(blob)
    assert [e.name for e in entries] == ["a", "dev/console"]
    assert entries[0].data == b"xyz" and entries[1].rdev == (5, 1)


def test_busybox_initramfs_contents():
    entries = {e.name: e for e in parse_newc(busybox_initramfs(b"\x7fELF fake busybox"))}
    assert entries["bin/busybox"].data == b"\x7fELF fake busybox"
    assert entries["init"].mode & 0o111 and entries["init"].data.startswith(b"#!/bin/busybox sh")
    assert stat.S_ISCHR(entries["dev/console"].mode) and entries["dev/console"].rdev == (5, 1)
    assert stat.S_ISLNK(entries["bin/sh"].mode)
