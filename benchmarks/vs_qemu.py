"""trapvisor against QEMU TCG on the same bench kernel, side by side in one run.

The bench kernel (guests/tests/bench) turns paging on and runs six loops,
each between a ``B name`` and an ``E name result`` line on COM1: an ALU
loop, a CALL/RET loop, a read-modify-write sweep over 4 MiB, REP STOSD over
4 MiB, REP MOVSD of 4 MiB, and INT 0x80 round trips from ring 3 (a DPL-3
interrupt gate, a DS reload in the handler, IRET back).  Each loop has a fixed
instruction count per iteration, so its figure is exact work over the time
between the end of the ``B`` line and the first byte of the ``E`` line, as
the host saw them arrive on the guest's serial port (both simulators run as
child processes with COM1 on a pipe, read by this script with a timestamp
per chunk).  Every result is checked against its formula: a simulator that
computes a wrong result posts no figure.

Both simulators run the same guest (same kernel, same memory size, paging on)
alternately, ``--runs`` times each, after one calibration run per simulator
that sizes each loop to take about ``--seconds``; the figures are medians.
Resident memory is the peak RSS of the whole process (``wait4``'s
ru_maxrss): trapvisor's includes the Python interpreter.

    .venv/bin/python benchmarks/vs_qemu.py                    # 3 runs each, 256 MiB guest
    .venv/bin/python benchmarks/vs_qemu.py --runs 5 --seconds 1 --memory 256
    .venv/bin/python benchmarks/vs_qemu.py --only trapvisor --workloads stos,movs
"""

from __future__ import annotations

import argparse
import os
import selectors
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trapvisor.guests import build_guest  # noqa: E402

WORDS = 1 << 20                   # the 4 MiB buffers (main.c)
STRIDE = 1021                     # the sparse checksum's stride (main.c)
STOS_BASE = 0x5A5A0000            # stos_loop's value before the first round (loops.S)
M32 = 0xFFFFFFFF

# name: (unit, instructions or iterations per count, count of the calibration run)
WORKLOADS = {
    "alu": ("MIPS", 8, 200_000),
    "call": ("MIPS", 5, 100_000),
    "sweep": ("MIPS", 7 * WORDS, 1),
    "stos": ("M it/s", WORDS, 1),
    "movs": ("M it/s", WORDS, 1),
    "int": ("us", 1, 2_000),
}
LABELS = {"alu": "ALU loop", "call": "CALL/RET", "sweep": "4 MiB memory sweep",
          "stos": "REP STOSD", "movs": "REP MOVSD", "int": "INT 0x80 round trip"}


def expected(name: str, counts: dict) -> int:
    """The result line the kernel must print for ``name`` (main.c, loops.S)."""
    n = counts[name]
    if name in ("alu", "call"):
        return n * (n + 1) // 2 & M32
    if name == "sweep":
        return WORDS * (n * (n - 1) // 2) & M32
    if name == "int":
        return n
    samples = len(range(0, WORDS, STRIDE))
    if name == "stos":
        return samples * (STOS_BASE + n) & M32
    # movs copies buffer A, which holds what the stos, else the sweep, else the fill left.
    if counts.get("stos"):
        a = STOS_BASE + counts["stos"]
    elif counts.get("sweep"):
        a = counts["sweep"]
    else:
        a = STOS_BASE + 1
    return samples * a & M32


def command(sim: str, kernel: Path, append: str, memory_mib: int) -> list[str]:
    if sim == "trapvisor":
        return [sys.executable, "-m", "trapvisor", "run", str(kernel), "--append", append,
                "--memory", f"{memory_mib}M", "--serial", "stdio", "--quiet"]
    return [shutil.which("qemu-system-i386") or "qemu-system-i386",
            "-machine", "pc", "-accel", "tcg", "-m", str(memory_mib),
            "-nodefaults", "-display", "none", "-monitor", "none", "-serial", "stdio",
            "-no-reboot", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-kernel", str(kernel), "-append", append]


def run_once(sim: str, kernel: Path, counts: dict, memory_mib: int, timeout: float):
    """One boot of the bench kernel: ({workload: seconds}, peak RSS in MiB)."""
    append = " ".join(f"{k}={counts.get(k, 0)}" for k in WORKLOADS)
    proc = subprocess.Popen(command(sim, kernel, append, memory_mib), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    fd = proc.stdout.fileno()
    lines = []                    # (first byte time, newline time, text)
    cur, t_first = b"", None
    deadline = time.monotonic() + timeout
    while True:
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise SystemExit(f"{sim}: no end of the bench kernel within {timeout:.0f} s")
        if not sel.select(timeout=1.0):
            continue
        chunk = os.read(fd, 65536)
        now = time.perf_counter()
        if not chunk:
            break
        for i in range(len(chunk)):
            if t_first is None:
                t_first = now
            if chunk[i] == 10:
                lines.append((t_first, now, cur.decode(errors="replace")))
                cur, t_first = b"", None
            else:
                cur += chunk[i:i + 1]
    sel.close()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    texts = [t for _, _, t in lines]
    if "bench: done" not in texts:
        raise SystemExit(f"{sim}: the bench kernel did not finish (exit {proc.returncode}):\n"
                         + "\n".join(texts[-10:]) + "\n" + err[-2000:])
    times = {}
    for name in WORKLOADS:
        if not counts.get(name):
            continue
        b = next(ln for ln in lines if ln[2] == f"B {name}")
        e = next(ln for ln in lines if ln[2].startswith(f"E {name} "))
        got = int(e[2].split()[2])
        want = expected(name, counts)
        if got != want:
            raise SystemExit(f"{sim}: WRONG RESULT for {name}: {got}, expected {want}")
        times[name] = e[0] - b[1]
    return times, usage.ru_maxrss / 1024


def figure(name: str, count: int, seconds: float) -> float:
    unit, per, _ = WORKLOADS[name]
    if unit == "us":
        return seconds / (count * per) * 1e6
    return count * per / seconds / 1e6


def calibrate(sim, kernel, names, memory_mib, target, timeout):
    """Counts that make each loop take about ``target`` seconds on ``sim``."""
    counts = {n: WORKLOADS[n][2] for n in names}
    times, _ = run_once(sim, kernel, counts, memory_mib, timeout)
    out = {}
    for n in names:
        scale = target / max(times[n], 1e-4)
        out[n] = max(1, min(int(counts[n] * scale), 4_000_000_000 // WORKLOADS[n][1]))
    if "sweep" in out:             # the sweep's formula needs the count small
        out["sweep"] = min(out["sweep"], 4000)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="runs per simulator (medians reported)")
    ap.add_argument("--seconds", type=float, default=0.5, help="target time of each timed loop")
    ap.add_argument("--memory", type=int, default=256, help="guest RAM in MiB (both simulators)")
    ap.add_argument("--workloads", default=",".join(WORKLOADS),
                    help="comma-separated subset of " + ",".join(WORKLOADS))
    ap.add_argument("--only", choices=["trapvisor", "qemu"], help="run one simulator")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per boot before giving up")
    args = ap.parse_args(argv)
    names = [n for n in args.workloads.split(",") if n]
    bad = [n for n in names if n not in WORKLOADS]
    if bad or not names:
        print(f"vs_qemu: unknown workload(s) {','.join(bad) or '(none)'}; choose from "
              f"{','.join(WORKLOADS)}", file=sys.stderr)
        return 2
    if args.runs < 1 or args.seconds <= 0 or args.memory < 64:
        print("vs_qemu: --runs >= 1, --seconds > 0 and --memory >= 64 (MiB) please", file=sys.stderr)
        return 2
    sims = [args.only] if args.only else ["trapvisor", "qemu"]
    if "qemu" in sims and shutil.which("qemu-system-i386") is None:
        print("vs_qemu: qemu-system-i386 not found (make setup installs it); running trapvisor only",
              file=sys.stderr)
        sims = ["trapvisor"]

    print("$ " + " ".join(["python", "benchmarks/vs_qemu.py", *(argv if argv is not None else sys.argv[1:])]))
    kernel = build_guest("bench")
    counts = {s: calibrate(s, kernel, names, args.memory, args.seconds, args.timeout) for s in sims}
    res = {s: {n: [] for n in names} for s in sims}
    rss = {s: [] for s in sims}
    for _ in range(args.runs):
        for s in sims:
            times, peak = run_once(s, kernel, counts[s], args.memory, args.timeout)
            for n in names:
                res[s][n].append(figure(n, counts[s][n], times[n]))
            rss[s].append(peak)
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                         text=True).stdout.strip()
    print(f"bench kernel {kernel.name}, {args.memory} MiB guest, paging on; medians of {args.runs} "
          f"runs each, alternating; commit {git}; Python {sys.version.split()[0]}")
    print()
    head = "| workload | " + " | ".join(sims) + (" | ratio |" if len(sims) == 2 else " |")
    print(head)
    print("|---" * (len(sims) + 1 + (len(sims) == 2)) + "|")
    for n in names:
        unit = WORKLOADS[n][0]
        med = {s: statistics.median(res[s][n]) for s in sims}
        row = f"| {LABELS[n]} | " + " | ".join(f"{_fmt(med[s])} {unit}" for s in sims)
        if len(sims) == 2:
            # How many times slower trapvisor is (for a time per event: ours over QEMU's).
            ratio = med["trapvisor"] / med["qemu"] if unit == "us" else med["qemu"] / med["trapvisor"]
            row += f" | {ratio:.3g}x"
        print(row + " |")
    row = "| peak resident memory | " + " | ".join(f"{statistics.median(rss[s]):.0f} MiB" for s in sims)
    if len(sims) == 2:
        row += f" | {statistics.median(rss['trapvisor']) / statistics.median(rss['qemu']):.3g}x"
    print(row + " |")
    print()
    print("counts per loop: " + "; ".join(
        f"{s}: " + " ".join(f"{n}={counts[s][n]}" for n in names) for s in sims))
    return 0


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


if __name__ == "__main__":
    sys.exit(main())
