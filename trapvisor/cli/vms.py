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
    p.add_argument("--host-memory", type=o.memory_size, default=None, metavar="SIZE",
                   help="overcommit: the VMs' guest memory comes on demand from a host pool of SIZE "
                        "(beside the monitor's 4 MiB); their --memory may add up to more "
                        "(docs/memory-reclamation.md). Default: one fixed partition per VM")
    p.add_argument("--share-scan", type=pages_per_slice,
                   default=None, metavar="PAGES",
                   help="content-based page sharing: guest pages hashed per time slice "
                        f"(default {DEFAULT_SHARE_SCAN} with --host-memory; 0: no sharing)")
    p.add_argument("--balloon", type=balloon_mode, default=None, metavar="auto|off|PAGES",
                   help="the balloon device each VM gets (guests/os: workload=balloon): targets from "
                        "the host's memory pressure (auto, the default with --host-memory), none, "
                        "or a fixed target in pages")
    p.add_argument("--memory-table", action="store_true",
                   help="with --host-memory: print the allocation every 10 slices (pages resident, "
                        "ballooned, sampled active fraction of each VM) at the end")
    p.add_argument("--no-swap", action="store_true",
                   help="no hypervisor swapping: a VM that needs a frame when none is free stops")
    p.add_argument("--shares", type=shares_list, default=None, metavar="S1,S2,...",
                   help="memory shares of each VM, in order (default 1000 each)")
    p.add_argument("--idle-tax", type=idle_tax, default=None, metavar="PERCENT",
                   help="idle-memory tax in percent, 0-99 (default 75, as ESX Server)")
    p.add_argument("--quiet", "-q", action="store_true", help="no end-of-run summary")
    p.set_defaults(func=cmd_vms)


DEFAULT_SHARE_SCAN = 512


def pages_per_slice(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise o.OptionError(f"bad page count {text!r}: expected a whole number of pages") from None
    if value < 0:
        raise o.OptionError(f"bad page count {text!r}: expected 0 or more")
    return value


def balloon_mode(text: str):
    t = text.strip().lower()
    if t in ("auto", "off"):
        return t
    try:
        value = int(t)
    except ValueError:
        raise o.OptionError(f"bad --balloon {text!r}: expected auto, off or a number of pages") from None
    if value < 0:
        raise o.OptionError(f"bad --balloon {text!r}: a target is 0 pages or more")
    return value


def shares_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise o.OptionError(f"bad --shares {text!r}: expected positive integers separated by commas") from None
    if not values or min(values) < 1:
        raise o.OptionError(f"bad --shares {text!r}: every VM's shares are at least 1")
    return values


def idle_tax(text: str) -> float:
    try:
        value = int(text.strip().removesuffix("%"))
    except ValueError:
        raise o.OptionError(f"bad --idle-tax {text!r}: expected a percentage from 0 to 99") from None
    if not 0 <= value <= 99:
        raise o.OptionError(f"bad --idle-tax {text!r}: expected a percentage from 0 to 99")
    return value / 100


def reclamation_options(args) -> dict | None:
    """What --host-memory and the reclamation options ask of the monitor."""
    wanted = {"--share-scan": args.share_scan is not None, "--no-swap": args.no_swap,
              "--shares": args.shares is not None, "--balloon": args.balloon is not None,
              "--memory-table": args.memory_table, "--idle-tax": args.idle_tax is not None}
    if args.host_memory is None:
        for name, given in wanted.items():
            if given:
                o.refuse(name, "applies to overcommitted host memory only: give --host-memory too")
        return None
    if args.shares is not None and len(args.shares) != len(args.vm):
        o.refuse("--shares", f"{len(args.shares)} values for {len(args.vm)} VMs")
    r = {"share_budget": DEFAULT_SHARE_SCAN if args.share_scan is None else args.share_scan,
         "swap": not args.no_swap,
         "balloon": None if args.balloon == "off" else ("auto" if args.balloon is None else args.balloon)}
    if args.shares is not None:
        r["shares"] = args.shares
    if args.idle_tax is not None:
        r["tax"] = args.idle_tax
    return r


def check_vms(args) -> None:
    """The VMs share one simulated host's RAM, which stays below the 3 GiB a single PC may have."""
    total = args.memory * len(args.vm)
    if total > o.MAX_MEMORY and args.host_memory is None:
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
                      technique=args.technique, max_seconds=args.max_seconds,
                      host_memory=args.host_memory, reclamation=reclamation_options(args))
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
        if sched.reclaim is not None:
            report_reclamation(sched.reclaim.statistics(), args)
            if args.memory_table:
                report_allocation_table(sched.reclaim.table)
    return 0 if all(res.exit_code is not None for res in r.results) else 4


def report_allocation_table(rows) -> None:
    """One line per sampling period: each VM's resident and ballooned pages and active fraction."""
    if not rows:
        print("  allocation: the run ended before the first sampling period", file=sys.stderr)
        return
    n = len(rows[0]) - 1
    head = "".join(f"  {'vm' + str(i) + ' resident/balloon/active':>30}" for i in range(n))
    print(f"  {'slice':>7}{head}", file=sys.stderr)
    for row in rows:
        cells = "".join(f"  {f'{res:,} / {bal:,} / {act:.2f}':>30}" for res, bal, act in row[1:])
        print(f"  {row[0]:>7,}{cells}", file=sys.stderr)


def report_reclamation(st: dict, args) -> None:
    """The host memory's end state: who holds what, and what each mechanism reclaimed."""
    mib = lambda pages: pages * 4096 / (1 << 20)   # noqa: E731
    n = len(st["resident"])
    print(f"  host memory: {st['host_frames']:,} frames ({mib(st['host_frames']):.1f} MiB) for {n} VMs of "
          f"{args.memory >> 20} MiB ({n * args.memory >> 20} MiB of guest memory); {st['used']:,} in use at "
          f"the end, {st['peak_used']:,} at the peak", file=sys.stderr)
    for i in range(n):
        target = f" (target {st['balloon_targets'][i]:,})" if st["balloon_targets"] else ""
        print(f"  vm{i} memory: {st['resident'][i]:,} pages resident, {st['ballooned'][i]:,} ballooned{target}, "
              f"{st['swapped_now'][i]:,} swapped out ({st['swapped_out'][i]:,} page-outs, "
              f"{st['swapped_in'][i]:,} page-ins), active fraction {st['active'][i]:.2f}", file=sys.stderr)
    sh = st.get("sharing")
    if sh is not None:
        print(f"  page sharing: {sh['scanned']:,} pages scanned, {sh['shared']:,} shared "
              f"({sh['zero']:,} of them zero pages) on {sh['shared_frames']:,} frames, {sh['saved']:,} "
              f"saved ({mib(sh['saved']):.1f} MiB), {sh['cow_breaks']:,} copy-on-write breaks",
              file=sys.stderr)
