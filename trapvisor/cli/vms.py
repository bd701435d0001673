"""``trapvisor vms 'KERNEL [CMDLINE]' ...``: several VMs time-sliced on one simulated host CPU.

Each VM runs under the technique --technique names (trap-and-emulate by
default; ``vmm/scheduler.py``); its console
lines reach standard output prefixed with ``[vmN]``, whole lines only, so
the VMs' output interleaves line by line however their slices fall.
"""

from __future__ import annotations

import sys

from . import options as o


def vm_argument(text: str) -> tuple[str, str]:
    """``'KERNEL [CMDLINE]'`` -> (checked kernel, command line)."""
    kernel, _, cmdline = text.strip().partition(" ")
    return o.kernel(kernel), cmdline.strip()


def add_parser(sub) -> None:
    p = sub.add_parser("vms", help="several VMs time-sliced on one host CPU",
                       description="Run several kernels at once, each in its own VM under one technique "
                                   "(trap-and-emulate by default), "
                                   "on one simulated host CPU: round-robin time slices and world switches "
                                   "(docs/vmm.md). Each VM's console lines are prefixed with [vmN].")
    p.add_argument("vm", nargs="+", type=vm_argument, metavar="'KERNEL [CMDLINE]'",
                   help="a kernel file or guest:NAME, optionally followed by its command line")
    p.add_argument("--memory", "-m", type=o.memory_size, default="64M", help="RAM of each VM (default 64M)")
    p.add_argument("--cpu", choices=("standard", "strict"), default="strict",
                   help="host CPU variant (default strict: a correct monitor)")
    p.add_argument("--slice", type=o.at_least_one("time slice"), default=None, metavar="N",
                   help="guest instructions per time slice (default 100000)")
    p.add_argument("--max-instructions", type=o.at_least_one("instruction limit"), default=2_000_000_000,
                   help="stop a VM after N guest instructions")
    p.add_argument("--costs", type=o.cost_model, default=None, metavar="TOML", help="override the cost model")
    p.add_argument("--technique", type=o.technique, default="trap-emulate",
                   help="the technique every VM runs under (default trap-emulate)")
    p.add_argument("--max-seconds", type=o.seconds, default=None, help="stop each VM after this much wall time")
    p.add_argument("--quiet", "-q", action="store_true", help="no end-of-run summary")
    p.set_defaults(func=cmd_vms)


def check_vms(args) -> None:
    """The VMs share one simulated host's RAM, which stays below the 3 GiB a single PC may have."""
    total = args.memory * len(args.vm)
    if total > o.MAX_MEMORY:
        o.refuse("--memory", f"{len(args.vm)} VMs of {args.memory >> 20} MiB need {total >> 20} MiB of "
                             f"host memory; the simulated host has at most {o.MAX_MEMORY >> 20} MiB")


class LinePrefixer:
    """A VM's console output as whole lines on stdout, each prefixed with ``[vmN]``."""

    def __init__(self, index: int):
        self.prefix = f"[vm{index}] "
        self.pending = bytearray()

    def __call__(self, data: bytes) -> None:
        self.pending.extend(data)
        while b"\n" in self.pending:
            line, _, rest = bytes(self.pending).partition(b"\n")
            sys.stdout.write(f"{self.prefix}{line.decode('latin-1')}\n")
            self.pending[:] = rest
        sys.stdout.flush()

    def finish(self) -> None:
        """The last line, if the VM ended without a newline."""
        if self.pending:
            sys.stdout.write(f"{self.prefix}{bytes(self.pending).decode('latin-1')}\n")


def cmd_vms(args) -> int:
    from ..vmm.scheduler import DEFAULT_SLICE, Scheduler, VmSpec
    from .summaries import technique_outcome
    check_vms(args)
    specs = [VmSpec(o.resolve_kernel(kernel), cmdline, args.memory) for kernel, cmdline in args.vm]
    consoles: list[LinePrefixer] = []

    def serial_out(i):
        consoles.append(LinePrefixer(i))
        return consoles[-1]

    sched = Scheduler(specs, costs=args.costs, strict=args.cpu == "strict",
                      slice_instructions=args.slice or DEFAULT_SLICE, serial_out=serial_out,
                      technique=args.technique, max_seconds=args.max_seconds)
    r = sched.run(args.max_instructions)
    for console in consoles:
        console.finish()
    if not args.quiet:
        print(f"trapvisor vms: {len(specs)} VMs under {args.technique} on one host CPU ({args.cpu} cpu), "
              f"slices of {sched.slice:,} instructions, {r.world_switches:,} world switches, "
              f"{r.seconds:.2f} s", file=sys.stderr)
        for i, res in enumerate(r.results):
            print(f"  vm{i}: {technique_outcome(res)}; {res.instructions:,} instructions, "
                  f"{100 * res.direct_share:.2f}% direct, {r.slices[i]:,} slices, {res.cycles:,} simulated "
                  f"cycles, {res.seconds:.2f} s", file=sys.stderr)
    return 0 if all(res.exit_code is not None for res in r.results) else 4
