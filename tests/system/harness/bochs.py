"""Run a snippet kernel on Bochs, the tie-breaker where QEMU differs from Intel.

Bochs 2.7 (Debian package ``bochs``) has no Multiboot loader and, as
packaged, neither the ``nogui`` display nor a debugger-free binary.  So:

* the kernel's loadable ELF segments go onto a 1.44 MB floppy image behind a
  small boot sector (``bochs_boot.S``) that loads them, enters protected
  mode and jumps to the entry point with the Multiboot register state;
* the display is the ``rfb`` (VNC) library with ``timeout=0`` (it does not
  wait for a viewer; Bochs picks a free port in 5900-5949);
* the built-in debugger is told to continue (``-rc`` file with ``c``);
* COM1 goes to a file, which is polled for the end of the dump; Bochs has
  no isa-debug-exit device, so the harness's exit write to port 0xf4 does
  nothing and the process is killed once the dump is complete;
* ``reset_on_triple_fault=0`` turns a triple fault into a Bochs panic
  (process exit), reported as a "reset" outcome like QEMU's.

CPU model: ``p3_katmai`` (Pentium III), the closest Bochs has to the
Pentium II-class CPU trapvisor and QEMU (``-cpu pentium2``) present.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import struct
import subprocess
import tempfile
import time

from trapvisor import hosttools

from . import runner

BOOT_SRC = runner.HARNESS / "bochs_boot.S"
BIOS, VGABIOS = hosttools.BOCHS_BIOS, hosttools.BOCHS_VGABIOS
PAYLOAD_BASE = 0x10000
FLOPPY_BYTES = 1474560


def boot_sector() -> bytes:
    key = hashlib.sha256(BOOT_SRC.read_bytes()).hexdigest()[:16]
    out = runner.BUILD / f"bochs-boot-{key}.bin"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=runner.BUILD) as tmp:
            t = pathlib.Path(tmp)
            runner._run(["gcc", "-m32", "-c", str(BOOT_SRC), "-o", str(t / "b.o")])
            runner._run(["ld", "-m", "elf_i386", "-Ttext", "0x7c00", "--oformat", "binary",
                         "-e", "_start", str(t / "b.o"), "-o", str(t / "b.bin")])
            data = (t / "b.bin").read_bytes()
            if len(data) != 512:
                raise RuntimeError(f"bochs boot sector is {len(data)} bytes, not 512")
            os.replace(t / "b.bin", out)
    return out.read_bytes()


def _segments(elf: bytes) -> tuple[int, list[tuple[int, bytes]]]:
    """(entry, [(physical address, bytes)]) of an ELF32 executable's PT_LOAD segments."""
    if elf[:4] != b"\x7fELF" or elf[4] != 1:
        raise ValueError("not an ELF32 file")
    entry, phoff = struct.unpack_from("<II", elf, 24)
    phentsize, phnum = struct.unpack_from("<HH", elf, 42)
    out = []
    for i in range(phnum):
        p_type, p_offset, _vaddr, p_paddr, p_filesz, _memsz, _flags, _align = \
            struct.unpack_from("<8I", elf, phoff + i * phentsize)
        if p_type == 1 and p_filesz:
            out.append((p_paddr, elf[p_offset:p_offset + p_filesz]))
    return entry, out


def floppy_image(elf_path: pathlib.Path) -> bytes:
    """The boot floppy for a kernel: boot sector, then its segments."""
    entry, segs = _segments(elf_path.read_bytes())
    if len(segs) > 8:
        raise ValueError("too many ELF segments for the boot sector's table")
    payload = b""
    chunks = []
    for addr, data in segs:
        chunks.append((PAYLOAD_BASE + len(payload), addr, len(data)))
        payload += data
        payload += b"\0" * (-len(payload) % 16)
    nsectors = (len(payload) + 511) // 512
    if PAYLOAD_BASE + nsectors * 512 > 0x9F000:
        raise ValueError("kernel too large for the Bochs boot sector")
    boot = bytearray(boot_sector())
    struct.pack_into("<HHI", boot, 0x180, nsectors, 0, entry)
    for i, (src, dst, n) in enumerate(chunks):
        struct.pack_into("<III", boot, 0x188 + 12 * i, src, dst, n)
    img = bytes(boot) + payload + b"\0" * (-len(payload) % 512)
    return img + b"\0" * (FLOPPY_BYTES - len(img))


def bochsrc(floppy: pathlib.Path, serial: pathlib.Path, log: pathlib.Path) -> str:
    return f"""\
megs: {runner.MEMORY_MIB}
romimage: file={BIOS}
vgaromimage: file={VGABIOS}
display_library: rfb, options="timeout=0"
boot: floppy
floppy_bootsig_check: disabled=1
floppya: 1_44={floppy}, status=inserted
com1: enabled=1, mode=file, dev={serial}
cpu: model={runner.BOCHS_CPU}, count=1, ips=50000000, reset_on_triple_fault=0
clock: sync=none
speaker: enabled=0
sound: driver=dummy
log: {log}
panic: action=fatal
error: action=report
info: action=report
debug: action=ignore
"""


def run_bochs(elf: pathlib.Path, timeout: float = 60.0) -> "runner.Outcome":
    gone = hosttools.missing(hosttools.BOCHS)
    if gone:   # one line naming the package, never a Bochs panic about a ROM image
        return runner.Outcome("bochs", "error", "", detail=gone[0].problem())
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tvsys-bochs-") as tmp:
        t = pathlib.Path(tmp)
        floppy, serial, log = t / "floppy.img", t / "com1.txt", t / "bochs.log"
        floppy.write_bytes(floppy_image(elf))
        (t / "bochsrc").write_text(bochsrc(floppy, serial, log))
        (t / "cmds").write_text("c\n")
        proc = subprocess.Popen(["bochs", "-q", "-f", str(t / "bochsrc"), "-rc", str(t / "cmds")],
                                cwd=t, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        text, hang, exited = "", False, False
        try:
            while True:
                if serial.exists():
                    text = serial.read_bytes().decode("latin-1")
                    if "=== END ===" in text or "=== HARNESS ERROR" in text:
                        break
                if proc.poll() is not None:
                    exited = True
                    if serial.exists():
                        text = serial.read_bytes().decode("latin-1")
                    break
                if time.monotonic() - t0 > timeout:
                    hang = True
                    break
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        logtext = log.read_text(errors="replace") if log.exists() else ""
    reset = exited and ("triple fault" in logtext.lower() or "shutdown" in logtext.lower())
    detail = ""
    if exited and not reset:
        tail = [ln for ln in logtext.splitlines() if "PANIC" in ln or ">>" in ln][-3:]
        detail = "bochs exited: " + " | ".join(tail)
    exit_value = runner.EXIT_VALUE if "=== END ===" in text else None
    return runner._outcome_from_serial("bochs", text, exit_value, reset, hang, detail,
                                       time.monotonic() - t0)
