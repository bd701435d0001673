"""``trapvisor demo`` / ``make demo``: the main job on the bundled default guest.

Boots the bundled guest OS (tvos) with its default workload on the bare
simulated PC and prints its console output and the run summary.
"""

from __future__ import annotations

import sys

DEFAULT_GUEST = "tvos"
DEFAULT_APPEND = "workload=mixed iterations=20"


def run_demo(args) -> int:
    from .guests import build_guest
    from .machine.pc import PC, report
    kernel = build_guest(DEFAULT_GUEST)
    print(f"trapvisor demo: booting guest:{DEFAULT_GUEST} ({kernel}) with '{DEFAULT_APPEND}' "
          "on the simulated PC", file=sys.stderr)
    pc = PC(serial_out=sys.stdout.buffer)
    pc.load_kernel(str(kernel), cmdline=DEFAULT_APPEND)
    result = pc.run(max_instructions=2_000_000_000)
    sys.stdout.flush()
    status = report(pc, result)
    return 0 if status == 1 else status
