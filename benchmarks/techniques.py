"""Slowdown of each technique against native, per workload of the bundled guest OS.

Prints, side by side from one run, the host wall-time slowdown and the
simulated-cycle slowdown (cost model: trapvisor/vmm/costs.toml) of
trap-and-emulate (strict CPU, the configuration that is a correct monitor)
and of full emulation, against the bare simulated PC.  Wall times are
medians over --rounds runs; cycles are deterministic.  ``trap-emulate/N``
is trap-and-emulate with a shadow cache of N address spaces (the default
keeps 8; ``trap-emulate/1`` rebuilds the shadow on every CR3 load), so the
cache's effect is measured in the same run.

    .venv/bin/python benchmarks/techniques.py [--rounds 3] [--scale 1.0] [--workloads syscall,compute]
        [--techniques trap-emulate,trap-emulate/1,emulate]

Any registered technique can be listed, e.g. ``--techniques trap-emulate,vtx,vtx-noept``
for hardware assist with and without EPT beside trap-and-emulate (docs/vtx.md);
every technique but trap-emulate runs on the standard CPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trapvisor.guests import build_guest  # noqa: E402
from trapvisor.vmm.costmodel import CostModel  # noqa: E402
from trapvisor.vmm.run import run_technique  # noqa: E402

# Iteration counts chosen so each native run retires a few million instructions.
WORKLOADS = {
    "compute": 4, "syscall": 2000, "ctxswitch": 1000, "pgfault": 400, "ptemod": 400,
    "forkwait": 10, "io": 2000, "divzero": 400, "crwrite": 2000, "mixed": 2,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every iteration count")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--techniques", default="trap-emulate,trap-emulate/1,emulate")
    args = ap.parse_args()
    kernel = str(build_guest("tvos"))
    costs = CostModel.default()
    techniques = args.techniques.split(",")
    print(f"trapvisor technique benchmark: guest tvos, {args.rounds} round(s), "
          f"trap-emulate on the strict CPU; wall = median host seconds")
    header = f"{'workload':10s} {'iters':>6s} {'native s':>9s} {'native MIPS':>11s}"
    for t in techniques:
        header += f" | {t + ' wall':>18s} {t + ' cycles':>20s} {'direct %':>8s}"
    print(header)
    for name in args.workloads.split(","):
        n = max(1, int(WORKLOADS[name] * args.scale))
        cmd = f"workload={name} iterations={n}"
        walls = {t: [] for t in ["native"] + techniques}
        res = {}
        for _ in range(args.rounds):
            for t in ["native"] + techniques:
                name_, _, cache = t.partition("/")
                r = run_technique(name_, kernel, cmdline=cmd, costs=costs, strict=(name_ == "trap-emulate"),
                                  shadow_cache=int(cache) if cache else None)
                if r.exit_code != 1:
                    print(f"{name}: {t} did not finish cleanly ({r.stop_reason}: {r.detail})")
                walls[t].append(r.seconds)
                res[t] = r
        nat = statistics.median(walls["native"])
        line = f"{name:10s} {n:>6d} {nat:>9.2f} {res['native'].instructions / nat / 1e6:>11.2f}"
        for t in techniques:
            w = statistics.median(walls[t])
            line += (f" | {w / nat:>17.2f}x {res[t].cycles / res['native'].cycles:>19.2f}x"
                     f" {100 * res[t].direct_share:>8.2f}")
            if res[t].output != res["native"].output:
                line += " (OUTPUT DIFFERS)"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
