"""What overcommit costs: the same VMs on fixed partitions and under --host-memory.

Three tvos VMs of 8 MiB (workload=ctxswitch iterations=20) run four ways:

1. fixed partitions (the default, no pmap);
2. --host-memory 64M, no sharing, no balloon: the pmap and demand allocation only;
3. --host-memory 64M with sharing (4096 pages per slice);
4. --host-memory 12M (half the guests' 24 MiB) with sharing and swapping.

It prints simulated cycles (deterministic: the cost model's charge for every
trap, fill and instruction), the host wall time (median of --rounds runs; the
machine's load shows in it), and the ratio of each to the fixed-partition
run, with page-outs and frames saved.  The command line of each row:

    trapvisor vms 'guest:tvos workload=ctxswitch iterations=20' (3 times) -m 8M --slice 20000 \\
        [--host-memory 64M --share-scan 0 --balloon off --no-swap | --host-memory 64M --share-scan 4096
         | --host-memory 12M --share-scan 4096]

Usage: python benchmarks/memory_overcommit.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

from trapvisor.guests import build_guest
from trapvisor.vmm.scheduler import Scheduler, VmSpec

MIB = 1 << 20
CASES = [
    ("fixed partitions", None, None),
    ("pmap, demand allocation", 64, {"share_budget": 0, "swap": False}),
    ("pmap + sharing", 64, {"share_budget": 4096, "swap": False}),
    ("12 MiB host: sharing + swap", 12, {"share_budget": 4096, "swap": True}),
]


def run(host_mib, reclamation):
    k = str(build_guest("tvos"))
    specs = [VmSpec(k, "workload=ctxswitch iterations=20", 8 * MIB)] * 3
    sched = Scheduler(specs, slice_instructions=20_000,
                      host_memory=None if host_mib is None else host_mib * MIB, reclamation=reclamation)
    t0 = time.perf_counter()
    r = sched.run(50_000_000)
    wall = time.perf_counter() - t0
    assert all(res.exit_code == 1 for res in r.results)
    cycles = sum(res.cycles for res in r.results)
    st = sched.reclaim.statistics() if sched.reclaim else {}
    return cycles, wall, sum(st.get("swapped_out", [0])), st.get("sharing", {}).get("saved", 0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    print(f"{'configuration':<30} {'sim. cycles':>13} {'ratio':>6} {'wall s':>7} {'ratio':>6} "
          f"{'page-outs':>9} {'saved':>6}")
    base = None
    for name, host, rec in CASES:
        runs = [run(host, rec) for _ in range(a.rounds)]
        cycles, wall = runs[0][0], statistics.median(x[1] for x in runs)
        base = base or (cycles, wall)
        print(f"{name:<30} {cycles:>13,} {cycles / base[0]:>6.2f} {wall:>7.2f} {wall / base[1]:>6.2f} "
              f"{runs[0][2]:>9,} {runs[0][3]:>6,}")


if __name__ == "__main__":
    main()
