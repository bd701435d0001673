"""Memory saved by content-based page sharing for N identical tvos VMs (docs/memory-reclamation.md).

Waldspurger (OSDI 2002, §4.3, Figure 4) ran 1-10 identical Linux VMs and
reported the share of their memory reclaimed by page sharing: it grows with
N toward (N-1)/N of what the VMs have in common, plus their zero pages.  This
runs N = 1..4 VMs of tvos with the same workload, each given --memory, under
trap-emulate with --host-memory large enough that nothing is swapped, a scan
budget large enough that every page is looked at several times, and prints
pages touched, pages shared, frames saved and the saved share, the paper's
bound (N-1)/N beside them: what sharing could save if every touched page of
one VM had its twin in every other.  (The paper's Figure 4 is a plot, not a
table: its shape, savings growing with N toward that bound, is what to compare.)  The same runs from the command line:

    trapvisor vms 'guest:tvos workload=ctxswitch iterations=20' (N times) \
        -m 8M --host-memory 64M --slice 20000 --share-scan 4096

Usage: python benchmarks/memory_sharing.py [--max-vms 4] [--memory-mib 8]
"""

from __future__ import annotations

import argparse

from trapvisor.guests import build_guest
from trapvisor.vmm.scheduler import Scheduler, VmSpec

CMDLINE = "workload=ctxswitch iterations=20"


def run(n: int, mib: int):
    k = str(build_guest("tvos"))
    sched = Scheduler([VmSpec(k, CMDLINE, mib << 20)] * n, slice_instructions=20_000,
                      host_memory=max(64, 2 * n * mib) << 20,
                      reclamation={"share_budget": 4096, "swap": False})
    r = sched.run(50_000_000)
    assert all(res.exit_code == 1 for res in r.results)
    frames = sched.alloc.frames
    touched = sum(sum(m.touched) for m in frames.vms)
    st = sched.reclaim.statistics()["sharing"]
    return touched, st


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-vms", type=int, default=4)
    ap.add_argument("--memory-mib", type=int, default=8)
    a = ap.parse_args()
    print(f"{'VMs':>3} {'pages touched':>14} {'shared':>8} {'zero':>6} {'frames saved':>13} "
          f"{'saved %':>8} {'(N-1)/N':>8}")
    for n in range(1, a.max_vms + 1):
        touched, st = run(n, a.memory_mib)
        print(f"{n:>3} {touched:>14,} {st['shared']:>8,} {st['zero']:>6,} {st['saved']:>13,} "
              f"{100 * st['saved'] / touched:>7.1f}% {100 * (n - 1) / n:>7.1f}%")


if __name__ == "__main__":
    main()
