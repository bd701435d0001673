"""``trapvisor demo`` / ``make demo``: the main job on the bundled default guest.

``trapvisor compare`` on the bundled guest OS, twice:

1. the sensitivity probe under trap-and-emulate on the standard IA-32 CPU:
   the monitor is not equivalent, and the table shows the first line where
   a sensitive-but-unprivileged instruction revealed the host;
2. the default workload (``mixed``) natively, under full emulation and under
   trap-and-emulate on the strict CPU, where every sensitive instruction
   traps: identical output, with the efficiency and the slowdowns measured.
"""

from __future__ import annotations

import sys

DEFAULT_GUEST = "tvos"


def add_parser(sub) -> None:
    sub.add_parser("demo", help="run the main job on the bundled default guest").set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from ..guests import build_guest
    from ..report.compare import compare, print_table
    kernel = str(build_guest(DEFAULT_GUEST))
    err = sys.stderr
    print("trapvisor demo 1/2: the sensitivity probe under trap-and-emulate on the standard x86 CPU",
          file=err)
    rows = compare(kernel, cmdline="workload=probe", techniques=("native", "trap-emulate"),
                   progress=lambda n: print(f"  running {n} ...", file=err))
    print_table(rows, f"guest:{DEFAULT_GUEST}", "workload=probe")
    print("trapvisor demo 2/2: the default workload on the strict (virtualizable) CPU", file=err)
    rows2 = compare(kernel, cmdline="workload=mixed iterations=1",
                    techniques=("native", "emulate", "trap-emulate"), strict=True,
                    progress=lambda n: print(f"  running {n} ...", file=err))
    print_table(rows2, f"guest:{DEFAULT_GUEST}", "workload=mixed iterations=1 (--cpu strict)")
    ok = all(r.identical for r in rows2) and not rows[1].identical
    print("demo: the standard CPU's trap-and-emulate diverged on the probe, the strict CPU's is "
          "equivalent on the default workload" if ok else "demo: unexpected result (see tables)", file=err)
    return 0 if ok else 1
