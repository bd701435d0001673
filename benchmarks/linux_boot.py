"""guest:linux, time to the busybox prompt: the bare simulated PC, trap-emulate, and QEMU TCG.

The same kernel (Debian's linux-image-686:i386), initramfs (trapvisor's, around
busybox-static:i386), memory (128 MiB) and command line on the three, run
alternately in each round so that the machine's load hits all three alike.
Measured: host wall time from the start of the run (trapvisor: loading
included) to the first shell prompt on the serial console, and for trapvisor
the guest instructions executed by then.  QEMU runs ``-cpu pentium3``, its
closest model to the simulated P6 core (it adds MMX, SSE and FXSR).

Usage: python benchmarks/linux_boot.py [--rounds R] [--timeout S] [--only bare,trap-emulate,qemu]
Prints each run, then the medians and the ratios to QEMU.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import select
import statistics
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from trapvisor.guests import linux_guest  # noqa: E402
from trapvisor.vmm.monitor import RunOptions, get  # noqa: E402

CMDLINE = "console=ttyS0 printk.time=0 cryptomgr.notests noisapnp"
MEMORY = 128 << 20
PROMPT = re.compile(rb"# (\x1b\[6n)?$")   # busybox asks for the cursor position after its prompt
LIMIT = 5_000_000_000


class PromptReached(Exception):
    pass


def time_trapvisor(assets, technique: str, timeout: float):
    """(seconds to the prompt or None, guest instructions, why it stopped otherwise)."""
    seen = bytearray()

    def out(data: bytes) -> None:
        seen.extend(data)
        if PROMPT.search(bytes(seen[-64:])):
            raise PromptReached

    t = time.perf_counter()
    opts = RunOptions(str(assets.kernel), cmdline=CMDLINE, initrd=str(assets.initrd), memory_bytes=MEMORY,
                      strict=True, serial_out=out, max_seconds=timeout)
    mon = get(technique)(opts)
    try:
        r = mon.run(LIMIT)
    except PromptReached:
        return time.perf_counter() - t, mon.instructions(), ""
    return None, r.instructions, f"{r.stop_reason} {r.detail}".strip()


def time_qemu(assets, timeout: float):
    cmd = ["qemu-system-i386", "-cpu", "pentium3", "-m", str(MEMORY >> 20), "-kernel", str(assets.kernel),
           "-initrd", str(assets.initrd), "-append", CMDLINE, "-nographic", "-no-reboot", "-nodefaults",
           "-serial", "stdio", "-monitor", "none"]
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    seen = b""
    try:
        while time.perf_counter() - t < timeout:
            r, _, _ = select.select([p.stdout], [], [], 0.5)
            if r:
                chunk = os.read(p.stdout.fileno(), 65536)
                if not chunk:
                    break
                seen += chunk
                if PROMPT.search(seen[-64:]):
                    return time.perf_counter() - t, ""
        return None, f"no prompt after {timeout:.0f} s"
    finally:
        p.kill()
        p.wait()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--only", default="bare,trap-emulate,qemu")
    args = ap.parse_args()
    which = args.only.split(",")
    assets = linux_guest()
    times: dict[str, list[float]] = {w: [] for w in which}
    counts: dict[str, list[int]] = {w: [] for w in which}
    for rnd in range(args.rounds):
        for w in which:
            if w == "qemu":
                dt, why = time_qemu(assets, args.timeout)
                n = None
            else:
                dt, n, why = time_trapvisor(assets, "native" if w == "bare" else w, args.timeout)
            print(f"round {rnd + 1} {w:13} " + (f"{dt:8.1f} s" if dt is not None else f"failed: {why}")
                  + (f"  {n:,} instructions ({n / dt / 1e6:.2f} MIPS)" if n and dt else ""), flush=True)
            if dt is not None:
                times[w].append(dt)
                if n:
                    counts[w].append(n)
    print("\nmedians (time to the busybox prompt):")
    med = {w: statistics.median(v) for w, v in times.items() if v}
    for w, m in med.items():
        extra = f", {int(statistics.median(counts[w])):,} guest instructions" if counts[w] else ""
        ratio = f", {m / med['qemu']:.1f}x QEMU TCG" if "qemu" in med and w != "qemu" else ""
        print(f"  {w:13} {m:8.1f} s over {len(times[w])} run(s){extra}{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
