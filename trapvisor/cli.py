"""The ``trapvisor`` command line.

Subcommands:
  run KERNEL        boot a kernel (a file, or ``guest:NAME`` for a bundled guest)
  guests            list the bundled guests
  info              what this host offers (KVM: hardware-assisted or software)
  theory ...        the Popek-Goldberg theory as executable code
  demo              the main job on the bundled default guest
  techniques        the registered virtualization techniques
  doctor            are the host programs and files the project uses installed?

Every user error is one line on stderr and a non-zero exit status; a guest's
failure (triple fault, unimplemented instruction) is reported as what the
guest did, with a register dump.
"""

from __future__ import annotations

import argparse
import sys

from .errors import UserError

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """'128M' -> bytes.  A bare number is MiB, as QEMU's -m takes it."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in "KMG" else ""
    num = t[:-1] if unit else t
    try:
        value = int(num)
    except ValueError:
        raise UserError(f"bad memory size {text!r}: expected e.g. 128M, 1G or 64 (MiB)") from None
    size = value * (_UNITS[unit] if unit else 1 << 20)
    if size < (2 << 20) or size > (3 << 30) or size % 4096:
        raise UserError(f"bad memory size {text!r}: must be between 2 MiB and 3 GiB, a multiple of 4 KiB")
    return size


def _at_least_one(what: str):
    """An argparse type: a whole number >= 1, else one line naming ``what``."""
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            n = 0
        if n < 1:
            raise argparse.ArgumentTypeError(f"bad {what} {text!r}: expected a whole number, at least 1")
        return n
    return parse


_shadow_cache = _at_least_one("shadow cache size")


def _add_run(sub):
    p = sub.add_parser("run", help="boot a kernel on the simulated PC (or on KVM)")
    p.add_argument("kernel", help="kernel file (Multiboot ELF/a.out, ELF32, bzImage) or guest:NAME")
    p.add_argument("--memory", "-m", default="128M", help="guest RAM (default 128M)")
    p.add_argument("--append", default="", help="kernel command line")
    p.add_argument("--module", action="append", default=[], help="Multiboot module (repeatable)")
    p.add_argument("--initrd", default=None, help="initial ramdisk (Linux bzImage, --accel kvm)")
    p.add_argument("--disk", default=None, help="disk image for the ATA primary master")
    p.add_argument("--serial", default="stdio", help="stdio | file:PATH | null (default stdio)")
    p.add_argument("--max-instructions", type=int, default=None, help="stop after N guest instructions")
    p.add_argument("--trace", default=None, help="write an event trace (JSON lines) to FILE")
    p.add_argument("--accel", choices=("sim", "kvm"), default="sim", help="sim (default) or kvm")
    p.add_argument("--cpu", choices=("standard", "strict"), default="standard",
                   help="strict: every sensitive instruction traps at CPL>0")
    p.add_argument("--raw-load", default=None, metavar="ADDR",
                   help="load KERNEL as a raw binary at ADDR (hex) and start there")
    p.add_argument("--max-seconds", type=float, default=None, help="stop after this much wall time")
    p.add_argument("--stop-after-output", default=None, metavar="REGEX",
                   help="stop the VM once the console output matches REGEX (--accel kvm)")
    p.add_argument("--technique", default="native",
                   help="native (the bare PC, default) or any technique `trapvisor techniques` lists")
    p.add_argument("--costs", default=None, metavar="TOML", help="override the cost model")
    p.add_argument("--shadow-cache", type=_shadow_cache, default=None, metavar="N",
                   help="trap-emulate: shadow address spaces kept across CR3 loads "
                        "(default 8; 1 rebuilds the shadow on every context switch)")
    p.add_argument("--quiet", "-q", action="store_true", help="no end-of-run summary")
    p.set_defaults(func=cmd_run)


def _add_compare(sub):
    p = sub.add_parser("compare", help="run a kernel natively and under each technique; one table")
    p.add_argument("kernel", help="kernel file or guest:NAME")
    p.add_argument("--append", default="", help="kernel command line")
    p.add_argument("--techniques", default=None,
                   help="comma-separated list (default: native,emulate,trap-emulate, and kvm when "
                        "/dev/kvm is usable)")
    p.add_argument("--cpu", choices=("standard", "strict"), default="standard")
    p.add_argument("--memory", "-m", default="128M")
    p.add_argument("--max-instructions", type=int, default=2_000_000_000)
    p.add_argument("--costs", default=None, metavar="TOML", help="override the cost model")
    p.add_argument("--shadow-cache", type=_shadow_cache, default=None, metavar="N",
                   help="trap-emulate: shadow address spaces kept across CR3 loads (default 8)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--html", default=None, metavar="REPORT", help="also write an HTML report")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args) -> int:
    from .guests import resolve_kernel
    from .report.compare import compare, print_table, to_json
    from .vmm.costmodel import CostModel
    kernel = str(resolve_kernel(args.kernel))
    _check_kernel_file(kernel)
    from .report.compare import default_techniques
    techniques = ([t.strip() for t in args.techniques.split(",") if t.strip()] if args.techniques
                  else list(default_techniques()))
    from .vmm.monitor import get as technique_named
    for t in techniques:
        technique_named(t)          # one line naming an unknown technique
    costs = CostModel.load(args.costs)
    rows = compare(kernel, cmdline=args.append, techniques=techniques, strict=args.cpu == "strict",
                   memory_bytes=parse_size(args.memory), max_instructions=args.max_instructions,
                   costs=costs, keep_events=bool(args.html), shadow_cache=args.shadow_cache,
                   progress=None if args.json else lambda n: print(f"running {n} ...", file=sys.stderr))
    if args.json:
        print(to_json(rows, kernel, args.append))
    else:
        print_table(rows, args.kernel, args.append)
    if args.html:
        from .report.html import render
        try:
            with open(args.html, "w") as f:
                f.write(render(rows, args.kernel, args.append))
        except OSError as e:
            raise UserError(f"{args.html}: cannot write report ({e.strerror})") from None
        print(f"report written to {args.html}", file=sys.stderr)
    return 0 if all(r.identical for r in rows) else 1


def _check_kernel_file(path: str) -> None:
    import os
    if not os.path.exists(path):
        raise UserError(f"{path}: no such file")
    if not os.access(path, os.R_OK):
        raise UserError(f"{path}: not readable")


def cmd_run(args) -> int:
    memory = parse_size(args.memory)
    from .vmm.monitor import get as technique_named
    technique_named(args.technique)     # one line naming an unknown technique
    if args.technique != "native":
        if args.accel == "kvm":
            raise UserError("--technique applies to the simulated PC; --accel kvm is its own technique")
        return run_technique_from_args(args, memory)
    if args.accel == "kvm":
        from .kvm.runner import run_kvm_from_args
        return run_kvm_from_args(args, memory)
    from .machine.pc import run_from_args
    return run_from_args(args, memory)


def run_technique_from_args(args, memory: int) -> int:
    from .guests import resolve_kernel
    from .machine.platform import parse_serial
    from .vmm.costmodel import CostModel
    from .vmm.run import run_technique
    kernel = str(resolve_kernel(args.kernel))
    _check_kernel_file(kernel)
    serial_out, _ = parse_serial(args.serial)
    write = serial_out if callable(serial_out) else getattr(serial_out, "write", None)
    trace = open(args.trace, "w") if args.trace else None
    try:
        r = run_technique(args.technique, kernel, cmdline=args.append, memory_bytes=memory,
                          max_instructions=args.max_instructions or 2_000_000_000,
                          costs=CostModel.load(args.costs), strict=args.cpu == "strict",
                          serial_out=write, trace_file=trace, shadow_cache=args.shadow_cache,
                          modules=tuple(args.module), disk=args.disk, max_seconds=args.max_seconds,
                          strict_options=True)
    finally:
        if trace:
            trace.close()
    flush = getattr(serial_out, "flush", None)
    if flush:
        flush()
    if not args.quiet:
        what = f"exit code {r.exit_code}" if r.exit_code is not None else f"{r.stop_reason}: {r.detail}"
        print(f"trapvisor [{r.technique}, {r.cpu_variant} cpu]: {what}; {r.instructions:,} guest instructions, "
              f"{100 * r.direct_share:.2f}% direct, {r.cycles:,} simulated cycles, {r.seconds:.2f} s",
              file=sys.stderr)
        for reason, n in list(r.traps_by_reason().items())[:12]:
            print(f"  {n:>9,}  {reason}", file=sys.stderr)
        for note in r.notes:
            print(f"  {note}", file=sys.stderr)
    if r.exit_code is not None:
        return r.exit_code
    return 3 if r.stop_reason == "instruction limit" else 4


def cmd_guests(args) -> int:
    from .guests import list_guests
    from rich.console import Console
    from rich.table import Table
    table = Table(title="bundled guests (run with: trapvisor run guest:NAME)")
    table.add_column("name")
    table.add_column("kind")
    table.add_column("what it is")
    table.add_column("workloads")
    for g in list_guests():
        table.add_row(g.name, g.kind, g.description, ", ".join(g.workloads) or "-")
    Console().print(table)
    return 0


def cmd_info(args) -> int:
    from .kvm.hostinfo import probe_kvm
    try:
        from .kvm.hostinfo import format_info
    except ImportError:  # pragma: no cover
        format_info = None
    info = probe_kvm()
    lines = format_info(info) if format_info else [repr(info)]
    print("\n".join(lines))
    return 0


def cmd_techniques(args) -> int:
    """Every registered technique, one line each."""
    from .vmm.monitor import registered
    for name, cls in registered().items():
        print(f"{name:<14} {cls.summary}")
    return 0


def cmd_doctor(args) -> int:
    """Each host program and file trapvisor uses: found, or the package to install."""
    from . import hosttools
    gone = hosttools.missing()
    if not args.quiet:
        for req in hosttools.REQUIREMENTS:
            where = req.locate()
            print(f"{'ok' if where else 'MISSING':>7}  {req.name:<22} {where or req.package:<40} {req.purpose}")
    for req in gone:
        print(f"trapvisor: {req.problem()}", file=sys.stderr)
    return 1 if gone else 0


def cmd_demo(args) -> int:
    from .demo import run_demo
    return run_demo(args)


def _add_vms(sub):
    p = sub.add_parser("vms", help="several VMs time-sliced on one host CPU",
                       description="Run several kernels at once, each in its own VM under one technique (trap-and-emulate by default), "
                                   "on one simulated host CPU: round-robin time slices and world switches "
                                   "(docs/vmm.md). Each VM's console lines are prefixed with [vmN].")
    p.add_argument("vm", nargs="+", metavar="'KERNEL [CMDLINE]'",
                   help="a kernel file or guest:NAME, optionally followed by its command line")
    p.add_argument("--memory", "-m", default="64M", help="RAM of each VM (default 64M)")
    p.add_argument("--cpu", choices=("standard", "strict"), default="strict",
                   help="host CPU variant (default strict: a correct monitor)")
    p.add_argument("--slice", type=_at_least_one("time slice"), default=None, metavar="N",
                   help="guest instructions per time slice (default 100000)")
    p.add_argument("--max-instructions", type=_at_least_one("instruction limit"), default=2_000_000_000,
                   help="stop a VM after N guest instructions")
    p.add_argument("--costs", default=None, metavar="TOML", help="override the cost model")
    p.add_argument("--technique", default="trap-emulate",
                   help="the technique every VM runs under (default trap-emulate)")
    p.add_argument("--quiet", "-q", action="store_true", help="no end-of-run summary")
    p.set_defaults(func=cmd_vms)


def cmd_vms(args) -> int:
    from .guests import resolve_kernel
    from .vmm.costmodel import CostModel
    from .vmm.scheduler import DEFAULT_SLICE, Scheduler, VmSpec
    memory = parse_size(args.memory)
    specs = []
    for text in args.vm:
        kernel, _, cmdline = text.strip().partition(" ")
        kernel = str(resolve_kernel(kernel))
        _check_kernel_file(kernel)
        specs.append(VmSpec(kernel, cmdline.strip(), memory))
    sinks = []

    def serial_out(i):
        pending = bytearray()
        sinks.append(pending)

        def out(data: bytes) -> None:
            pending.extend(data)
            while b"\n" in pending:
                line, _, rest = bytes(pending).partition(b"\n")
                sys.stdout.write(f"[vm{i}] {line.decode('latin-1')}\n")
                pending[:] = rest
            sys.stdout.flush()
        return out

    sched = Scheduler(specs, costs=CostModel.load(args.costs), strict=args.cpu == "strict",
                      slice_instructions=args.slice or DEFAULT_SLICE, serial_out=serial_out,
                      technique=args.technique)
    r = sched.run(args.max_instructions)
    for i, pending in enumerate(sinks):
        if pending:
            sys.stdout.write(f"[vm{i}] {bytes(pending).decode('latin-1')}\n")
    if not args.quiet:
        print(f"trapvisor vms: {len(specs)} VMs under {args.technique} on one host CPU ({args.cpu} cpu), "
              f"slices of {sched.slice:,} instructions, {r.world_switches:,} world switches, "
              f"{r.seconds:.2f} s", file=sys.stderr)
        for i, (spec, res) in enumerate(zip(specs, r.results)):
            end = f"exit code {res.exit_code}" if res.exit_code is not None else \
                f"{res.stop_reason}: {res.detail}"
            print(f"  vm{i}: {end}; {res.instructions:,} instructions, {100 * res.direct_share:.2f}% "
                  f"direct, {r.slices[i]:,} slices, {res.cycles:,} simulated cycles, {res.seconds:.2f} s",
                  file=sys.stderr)
    return 0 if all(res.exit_code is not None for res in r.results) else 4


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trapvisor", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_compare(sub)
    _add_vms(sub)
    sub.add_parser("guests", help="list the bundled guests").set_defaults(func=cmd_guests)
    sub.add_parser("info", help="what this host offers (KVM kind)").set_defaults(func=cmd_info)
    sub.add_parser("techniques", help="list the registered techniques").set_defaults(func=cmd_techniques)
    doc = sub.add_parser("doctor", help="check the host programs and files trapvisor uses")
    doc.add_argument("--quiet", "-q", action="store_true", help="print only what is missing")
    doc.set_defaults(func=cmd_doctor)
    d = sub.add_parser("demo", help="run the main job on the bundled default guest")
    d.set_defaults(func=cmd_demo)
    try:
        from .theory.cli import add_theory_parser
        add_theory_parser(sub)
    except ImportError:
        pass
    return parser


class _Parser(argparse.ArgumentParser):
    pass


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:   # argparse already printed one usage line
        return int(e.code or 0)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"trapvisor: error: {e}", file=sys.stderr)
        if e.hint:
            print(f"trapvisor: hint: {e.hint}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        print("\ntrapvisor: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 141
    except Exception as e:  # the theory package's own user errors, guest build errors
        name = type(e).__name__
        if name in ("TheoryError", "GuestBuildError"):
            print(f"trapvisor: error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
