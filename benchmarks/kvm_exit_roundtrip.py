"""VM-exit round trip under KVM: trapvisor's Python exit loop beside QEMU's.

The guest (a 32-bit Multiboot kernel built here, ring 0) runs
``out %al, $port`` N times to a port no device claims, then leaves through
isa-debug-exit.  Each OUT is one KVM_EXIT_IO handled in user space.  trapvisor's
run loop is timed from inside (set-up excluded): µs per exit = loop time /
exits, and the part spent in Python's exit handling is shown beside it.
QEMU is timed from outside, twice, with N and 2N iterations, so that its
start-up cancels: µs per exit = (t(2N) - t(N)) / N.  QEMU's start-up is
long here (its BIOS runs in KVM's emulator: about 11 s on software KVM), so N
must be large (default 200,000) for the difference to stand above the noise.

Usage: python benchmarks/kvm_exit_roundtrip.py [--exits N] [--rounds R] [--write-docs]
The first output line says whether this host's KVM is hardware-assisted.
``--write-docs`` also writes the figures (medians and the ratio) into
docs/kvm.md's ``figures:exit-roundtrip`` block (``trapvisor/kvm/docs_figures.py``).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from trapvisor.kvm import docs_figures  # noqa: E402
from trapvisor.kvm.hostinfo import probe_kvm  # noqa: E402
from trapvisor.kvm.runner import KvmMachine  # noqa: E402

UNUSED_PORT = 0x510


def out_loop_kernel(n: int) -> bytes:
    """Multiboot (a.out kludge) at 1 MiB: mov ecx,n; mov dx,port; 1: out dx,al; dec ecx; jnz 1b; exit(0)."""
    code = (b"\xb9" + struct.pack("<I", n) + b"\x66\xba" + struct.pack("<H", UNUSED_PORT)
            + b"\xee\x49\x75\xfc" + b"\xb0\x00\xe6\xf4" + b"\xf4\xeb\xfd")
    load, magic, flags = 0x100000, 0x1BADB002, 0x00010000
    header = struct.pack("<8I", magic, flags, (-(magic + flags)) & 0xFFFFFFFF, load, load, 0, 0, load + 0x20)
    image = bytearray(0x80)
    image[:len(header)] = header
    image[0x20:0x20 + len(code)] = code
    return bytes(image)


def time_trapvisor(kernel: str) -> tuple[float, float, int]:
    """(seconds in the run loop, seconds spent handling exits in Python, exits); set-up excluded."""
    m = KvmMachine(16 << 20, serial_out=lambda b: None)
    try:
        m.load(kernel)
        res = m.run(max_seconds=600)
        if res.exit_code != 1:
            raise RuntimeError(f"trapvisor run ended with {res.stop_reason}")
        return res.seconds, m.handler_ns / 1e9, m.exit_count
    finally:
        m.close()


def time_qemu(kernel: str, accel: str) -> tuple[float | None, str]:
    cmd = ["qemu-system-x86_64", "-accel", accel, "-m", "16", "-nodefaults", "-display", "none",
           "-monitor", "none", "-serial", "null", "-no-reboot",
           "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-kernel", kernel]
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except FileNotFoundError:
        return None, "qemu-system-x86_64 not installed (Debian package qemu-system-x86)"
    except subprocess.TimeoutExpired:
        return None, "timed out"
    dt = time.perf_counter() - t
    if p.returncode != 1:          # isa-debug-exit: (0 << 1) | 1
        last = (p.stderr.strip().splitlines() or ["no output"])[0]
        return None, f"exit status {p.returncode}: {last}"
    return dt, ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--exits", type=int, default=200000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--write-docs", action="store_true", help="write the figures into docs/kvm.md")
    args = ap.parse_args()
    host = probe_kvm()
    print(f"host: {host.label}" + (f" ({host.reason})" if host.available else f": {host.message}"))
    if not host.available:
        return 1
    n = args.exits
    with tempfile.TemporaryDirectory() as d:
        k1, k2 = os.path.join(d, "n.bin"), os.path.join(d, "2n.bin")
        pathlib.Path(k1).write_bytes(out_loop_kernel(n))
        pathlib.Path(k2).write_bytes(out_loop_kernel(2 * n))
        tv, tv_py, q_kvm, q_tcg = [], [], [], []
        q_kvm_err = q_tcg_err = ""
        for r in range(args.rounds):
            # Alternate the two VMMs so that drifting host load hits both alike.
            secs, py, exits = time_trapvisor(k2)
            tv.append(secs / exits)
            tv_py.append(py / exits)
            qa, q_kvm_err = time_qemu(k1, "kvm")
            qb, _ = time_qemu(k2, "kvm") if qa is not None else (None, "")
            if qa is not None and qb is not None:
                q_kvm.append((qb - qa) / n)
            ta, q_tcg_err = time_qemu(k1, "tcg")
            tb, _ = time_qemu(k2, "tcg") if ta is not None else (None, "")
            if ta is not None and tb is not None:
                q_tcg.append((tb - ta) / n)
    kind = "hardware-assisted" if host.hardware_assisted else f"{host.kind}, NOT hardware-assisted"
    print(f"guest: {n} and {2 * n} x OUT to unused port {UNUSED_PORT:#x}, ring 0; {args.rounds} alternating rounds")
    med = statistics.median(tv)
    print(f"trapvisor --accel kvm ({kind}): {med * 1e6:.1f} us per exit round trip "
          f"(of which {statistics.median(tv_py) * 1e6:.1f} us handling the exit in Python), "
          f"{1 / med:,.0f} exits/s  (rounds: {', '.join(f'{x * 1e6:.1f}' for x in tv)} us)")
    qemu = statistics.median(q_kvm) if q_kvm else None
    if qemu is not None:
        print(f"qemu-system-x86_64 -accel kvm ({kind}): {qemu * 1e6:.1f} us per exit, {1 / qemu:,.0f} exits/s; "
              f"trapvisor/QEMU = {med / qemu:.2f}x")
    else:
        print(f"qemu-system-x86_64 -accel kvm: FAILED on this host ({q_kvm_err})")
    tcg = statistics.median(q_tcg) if q_tcg else None
    if tcg is not None:
        print(f"qemu-system-x86_64 -accel tcg (no KVM, for scale): {tcg * 1e6:.2f} us per OUT")
    elif q_tcg_err:
        print(f"qemu-system-x86_64 -accel tcg: failed ({q_tcg_err})")
    if args.write_docs:
        docs_figures.write_block("exit-roundtrip", [
            f"Measured by `{docs_figures.COMMANDS['exit-roundtrip']}` on {time.strftime('%Y-%m-%d')}: "
            f"{kind} ({host.reason.split(':')[0]}), {os.cpu_count()} host CPUs, load average "
            f"{os.getloadavg()[0]:.1f}; {n:,} and {2 * n:,} OUT exits, median of {args.rounds} alternating rounds.",
            "",
            "| what | trapvisor `--accel kvm` | `qemu-system-x86_64 -accel kvm` | ratio |",
            "|---|---|---|---|",
            f"| OUT exit round trip | {med * 1e6:.1f} µs/exit ({statistics.median(tv_py) * 1e6:.1f} µs of it in "
            f"Python's exit handling), {1 / med:,.0f} exits/s | "
            + (f"{qemu * 1e6:.1f} µs/exit, {1 / qemu:,.0f} exits/s | {med / qemu:.2f}x |" if qemu is not None
               else f"failed: {q_kvm_err} | n/a |"),
            "",
            "QEMU TCG (no KVM), for scale: " + (f"{tcg * 1e6:.2f} µs per OUT." if tcg is not None
                                                else f"failed ({q_tcg_err or 'not run'})."),
        ])
        print(f"wrote the figures into {docs_figures.DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
