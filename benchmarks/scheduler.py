"""Several VMs on one host CPU: what time slicing and world switches cost.

Runs the same set of VMs (tvos workloads under trap-and-emulate, strict CPU)
one after the other, each alone on its own host, and then interleaved on one
host CPU by the scheduler (vmm/scheduler.py) at several slice lengths, in one
run, and prints the wall time of each, the number of world switches and the
host time per world switch (measured around each switch: leave, enter).  Each VM's
guest instruction count is checked to be the same in every configuration.
Wall times are medians over --rounds.

    .venv/bin/python benchmarks/scheduler.py [--rounds 3] [--slices 10000,100000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trapvisor.guests import build_guest  # noqa: E402
from trapvisor.vmm.costmodel import CostModel  # noqa: E402
from trapvisor.vmm.scheduler import Scheduler, VmSpec  # noqa: E402
from trapvisor.vmm.techniques.trap_emulate import TrapEmulate  # noqa: E402

WORKLOADS = ["syscall iterations=400", "ctxswitch iterations=200", "compute iterations=1", "pgfault iterations=100"]
LIMIT = 200_000_000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--slices", default="10000,100000")
    args = ap.parse_args()
    kernel = str(build_guest("tvos"))
    specs = [VmSpec(kernel, f"workload={w}", 64 << 20) for w in WORKLOADS]
    costs = CostModel.default()
    print(f"trapvisor scheduler benchmark: {len(specs)} tvos VMs under trap-emulate (strict CPU), "
          f"{args.rounds} round(s), wall = median host seconds")
    counts = None
    alone = []
    for _ in range(args.rounds):
        n, wall = [], 0.0
        for s in specs:
            # Run time only, set-up excluded (the scheduler's figure excludes it too).
            r = TrapEmulate.build(s.kernel, cmdline=s.cmdline, memory_bytes=s.memory_bytes, costs=costs,
                            strict=True).run(LIMIT)
            n.append(r.instructions)
            wall += r.seconds
        alone.append(wall)
        counts = n
    base = statistics.median(alone)
    print(f"{'configuration':28s} {'wall s':>8s} {'ratio':>7s} {'switches':>9s} {'us/switch':>10s}")
    print(f"{'one after the other, alone':28s} {base:>8.2f} {1.0:>7.2f} {0:>9d} {'-':>10s}")
    for sl in (int(x) for x in args.slices.split(",")):
        walls, switches, per_switch = [], 0, []
        for _ in range(args.rounds):
            sched = Scheduler(specs, costs=costs, strict=True, slice_instructions=sl)
            r = sched.run(LIMIT)
            walls.append(r.seconds)
            switches = r.world_switches
            per_switch.append(r.switch_seconds / max(1, switches))
            got = [x.instructions for x in r.results]
            if got != counts:
                print(f"  slice {sl}: guest instruction counts differ from alone: {got} vs {counts}")
        w = statistics.median(walls)
        per = statistics.median(per_switch) * 1e6
        print(f"{'interleaved, slice ' + format(sl, ','):28s} {w:>8.2f} {w / base:>7.2f} {switches:>9,d} {per:>10.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
