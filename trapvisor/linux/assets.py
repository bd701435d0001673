"""Fetching Debian's stock kernel and busybox, and writing the initramfs around it.

Everything lands in the project's cache directory ``build/linux/`` (never
committed): the .deb files fetched with ``apt-get download`` (the ordinary
Debian client), their contents unpacked with ``dpkg-deb -x``, and
``initramfs.cpio`` written by :mod:`.initramfs`.  A second call finds them
there and fetches nothing.
"""

from __future__ import annotations

import glob
import os
import pathlib
import re
import subprocess
from dataclasses import dataclass

from ..errors import UserError

KERNEL_METAPACKAGE = "linux-image-cloud-amd64"
BUSYBOX_PACKAGE = "busybox-static"
# The simulated PC's guest:linux: Debian's i386 kernel for 686-class CPUs (no PAE: the
# simulated CPU has none) and the i386 busybox; needs `dpkg --add-architecture i386`.
I386_KERNEL_METAPACKAGE = "linux-image-686:i386"
I386_BUSYBOX_PACKAGE = "busybox-static:i386"


@dataclass
class LinuxAssets:
    kernel: pathlib.Path
    initrd: pathlib.Path
    kernel_package: str
    busybox: pathlib.Path


def linux_cache_dir() -> pathlib.Path:
    root = pathlib.Path(os.environ.get("TRAPVISOR_CACHE", pathlib.Path(__file__).resolve().parents[2] / "build"))
    d = root / "linux"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _run(cmd: list[str], cwd: pathlib.Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise UserError(f"{cmd[0]} not found: fetching Debian packages needs a Debian-based host",
                        hint="or give your own --kernel/--initrd") from None


def apt_download(package: str, dest: pathlib.Path) -> pathlib.Path:
    """``apt-get download PACKAGE`` into ``dest`` (once); returns the .deb path."""
    name, _, arch = package.partition(":")
    pattern = str(dest / f"{name}_*{'_' + arch if arch else ''}.deb")
    found = sorted(glob.glob(pattern))
    if found:
        return pathlib.Path(found[-1])
    r = _run(["apt-get", "download", package], dest)
    if r.returncode != 0:
        # An empty or stale package list: refresh it once, as a fresh machine needs.
        _run(["apt-get", "update", "-qq"], dest)
        r = _run(["apt-get", "download", package], dest)
    found = sorted(glob.glob(pattern))
    if r.returncode != 0 or not found:
        last = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        raise UserError(f"apt-get download {package} failed: {last[0]}",
                        hint="this needs network access to Debian's package mirrors")
    return pathlib.Path(found[-1])


def deb_depends(deb: pathlib.Path) -> str:
    r = _run(["dpkg-deb", "-f", str(deb), "Depends"], deb.parent)
    return r.stdout.strip()


def unpack_deb(deb: pathlib.Path, into: pathlib.Path) -> None:
    stamp = into / f".unpacked-{deb.name}"
    if stamp.exists():
        return
    into.mkdir(parents=True, exist_ok=True)
    r = _run(["dpkg-deb", "-x", str(deb), str(into)], deb.parent)
    if r.returncode != 0:
        raise UserError(f"dpkg-deb -x {deb.name} failed: {r.stderr.strip()}")
    stamp.touch()


def debian_kernel(cache: pathlib.Path, metapackage: str = KERNEL_METAPACKAGE) -> tuple[pathlib.Path, str]:
    """The bzImage of the current kernel metapackage (via its versioned dependency)."""
    meta = apt_download(metapackage, cache)
    m = re.search(r"(linux-image-[0-9][^ ,(:]*)", deb_depends(meta))
    if not m:
        raise UserError(f"cannot tell which kernel {meta.name} depends on")
    package = m.group(1)
    arch = metapackage.partition(":")[2]
    deb = apt_download(package + (f":{arch}" if arch else ""), cache)
    unpack_deb(deb, cache / "root")
    images = sorted(glob.glob(str(cache / "root" / "boot" / f"vmlinuz-{package.removeprefix('linux-image-')}")))
    if not images:
        raise UserError(f"{deb.name} holds no /boot/vmlinuz-*")
    return pathlib.Path(images[-1]), package


def debian_busybox(cache: pathlib.Path, package: str = BUSYBOX_PACKAGE) -> pathlib.Path:
    deb = apt_download(package, cache)
    unpack_deb(deb, cache / "root")
    path = cache / "root" / "bin" / "busybox"
    if not path.exists():
        raise UserError(f"{deb.name} holds no /bin/busybox")
    return path


def write_initramfs(busybox: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    from .initramfs import busybox_initramfs
    blob = busybox_initramfs(busybox.read_bytes())
    if not out.exists() or out.read_bytes() != blob:
        tmp = out.with_suffix(".tmp")
        tmp.write_bytes(blob)
        tmp.replace(out)
    return out


def prepare_linux(cache: pathlib.Path | None = None) -> LinuxAssets:
    """Fetch (once) the Debian kernel and busybox; write the initramfs."""
    cache = cache or linux_cache_dir()
    kernel, package = debian_kernel(cache)
    busybox = debian_busybox(cache)
    initrd = write_initramfs(busybox, cache / "initramfs.cpio")
    return LinuxAssets(kernel, initrd, package, busybox)


def prepare_linux_i386(cache: pathlib.Path | None = None) -> LinuxAssets:
    """The same for the simulated PC: Debian's i386 686 kernel and i386 busybox, kept apart
    (``build/linux/i386``) from the 64-bit ones."""
    cache = cache or linux_cache_dir() / "i386"
    cache.mkdir(parents=True, exist_ok=True)
    kernel, package = debian_kernel(cache, I386_KERNEL_METAPACKAGE)
    busybox = debian_busybox(cache, I386_BUSYBOX_PACKAGE)
    initrd = write_initramfs(busybox, cache / "initramfs.cpio")
    return LinuxAssets(kernel, initrd, package, busybox)
