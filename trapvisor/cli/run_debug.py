"""``trapvisor run ... --gdb tcp::PORT`` (``-s``, ``-S``), ``--snapshot-at N --snapshot FILE``,
``--restore FILE``: the runs of the debugging tools (docs/debugging.md).

The options of QEMU: ``--gdb tcp::PORT`` (or ``tcp:HOST:PORT``; the host
defaults to 127.0.0.1, port 0 picks a free one and says which), ``-s`` for
``--gdb tcp::1234``, ``-S`` to start the machine stopped until gdb says
``continue``.  The bare PC and every technique run through the monitor
interface (``debug/sim_target.py``); ``--accel kvm`` through
``debug/kvm_target.py``.  The end-of-run summary is the technique's, or KVM's.

Snapshots (``debug/snapshot.py``) are of the simulated PC and every technique:
``--snapshot-at N --snapshot FILE`` saves the machine once it has taken N
steps (instructions and delivered events) and runs on; ``--restore FILE``
(no kernel argument: the snapshot names it) builds the machine the snapshot
was taken of and continues from there; gdb's ``monitor snapshot FILE`` saves
one at a stop.
"""

from __future__ import annotations

import os
import sys

from ..errors import UserError
from . import options as o

DEFAULT_GDB = "tcp::1234"


def gdb_address(text: str) -> tuple[str, int]:
    """--gdb: tcp::PORT or tcp:HOST:PORT."""
    kind, _, rest = text.partition(":")
    host, _, port = rest.rpartition(":")
    if kind != "tcp" or not rest or not port:
        raise o.OptionError(f"bad --gdb {text!r}: expected tcp::PORT or tcp:HOST:PORT")
    try:
        n = int(port)
    except ValueError:
        raise o.OptionError(f"bad --gdb port {port!r}: expected a number 0-65535") from None
    if not 0 <= n <= 65535:
        raise o.OptionError(f"bad --gdb port {n}: expected 0-65535 (0: any free port)")
    return host or "127.0.0.1", n


def add_options(p) -> None:
    p.add_argument("--gdb", type=gdb_address, default=None, metavar="tcp::PORT",
                   help="wait for gdb on this TCP port (target remote :PORT); tcp:HOST:PORT to choose "
                        "the address (default 127.0.0.1)")
    p.add_argument("-s", dest="gdb_default", action="store_true", help="shorthand for --gdb tcp::1234")
    p.add_argument("-S", dest="start_stopped", action="store_true",
                   help="with --gdb or -s: start stopped, until gdb continues")
    p.add_argument("--snapshot-at", type=o.at_least_one("snapshot point"), default=None, metavar="N",
                   help="save a snapshot (--snapshot FILE) after N guest steps, then run on")
    p.add_argument("--snapshot", type=o.writable_file("snapshot file"), default=None, metavar="FILE",
                   help="where --snapshot-at writes the snapshot")
    p.add_argument("--restore", type=o.readable_file("snapshot"), default=None, metavar="FILE",
                   help="continue the machine saved in FILE (give no kernel: the snapshot names it)")


def debug_path(args) -> bool:
    """Does this run use the debugging tools (gdb, snapshots)?"""
    return bool(gdb_requested(args) or args.snapshot_at or args.snapshot or args.restore)


def check_debug_run(args) -> None:
    """The combinations the debugging tools refuse, by name (one line each)."""
    if (args.snapshot_at is None) != (args.snapshot is None):
        o.refuse("--snapshot-at" if args.snapshot_at is None else "--snapshot",
                 "give both --snapshot-at N and --snapshot FILE")
    if args.restore is not None and args.kernel is not None:
        o.refuse("--restore", "takes the kernel and options from the snapshot; give no kernel")
    if (args.snapshot or args.restore) and args.accel == "kvm":
        o.refuse("--snapshot" if args.snapshot else "--restore", "snapshots are of the simulated PC "
                 "(and its techniques), not of --accel kvm")
    if args.gdb is not None:
        check_gdb_run(args)


def gdb_requested(args) -> tuple[str, int] | None:
    if args.gdb is None and args.gdb_default:
        args.gdb = gdb_address(DEFAULT_GDB)
    if args.start_stopped and args.gdb is None:
        o.refuse("-S", "starts the machine stopped for gdb: give --gdb tcp::PORT or -s")
    return args.gdb


def check_gdb_run(args) -> None:
    if args.max_seconds is not None:
        o.refuse("--max-seconds", "under --gdb the machine is stopped as long as gdb wants; use "
                                  "--max-instructions (the simulated PC)")


def _listen(address):
    from ..debug.gdbstub import Listener
    host, port = address
    try:
        return Listener(host, port)
    except OSError as e:
        raise UserError(f"--gdb tcp:{host}:{port}: cannot listen there: {e.strerror or e}") from None


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def snapshot_options(args, kernel: str) -> dict:
    """What a snapshot records of the run, to build the same machine again."""
    from ..debug.snapshot import file_digest
    return {"technique": args.technique, "kernel": os.path.abspath(kernel), "kernel_sha256": file_digest(kernel),
            "cmdline": args.append, "memory": args.memory, "strict": args.cpu == "strict",
            "modules": [os.path.abspath(m) for m in args.module], "disk": args.disk,
            "shadow_cache": args.shadow_cache}


def build_monitor(args, kernel: str | None, serial_out, trace):
    """The technique's monitor for this run: built from the options, or from a snapshot."""
    from .run import technique_options
    from ..debug import snapshot
    from ..vmm.costmodel import CostModel
    from ..vmm.monitor import get
    if args.restore is None:
        opts = technique_options(args, kernel, serial_out=serial_out, trace_file=trace,
                                 costs=args.costs or CostModel.default())
        return get(args.technique)(opts), snapshot_options(args, kernel)
    saved = snapshot.load(args.restore)
    o_ = saved["options"]
    snapshot.check_kernel(o_)
    args.technique = o_["technique"]
    from ..vmm.monitor import RunOptions
    opts = RunOptions(o_["kernel"], cmdline=o_["cmdline"], memory_bytes=o_["memory"], strict=o_["strict"],
                      shadow_cache=o_["shadow_cache"], modules=tuple(o_["modules"]), disk=o_["disk"],
                      serial_out=serial_out, trace_file=trace, costs=args.costs or CostModel.default())
    monitor = get(o_["technique"])(opts)
    snapshot.apply(saved["state"], monitor)
    return monitor, o_


def run_debugged(args, kernel: str | None) -> int:
    """The simulated PC or a technique with gdb and/or snapshots (``--accel kvm``: gdb only)."""
    from .console import open_serial
    from .run import DEFAULT_TECHNIQUE_LIMIT
    from .summaries import report_technique_run
    if args.accel == "kvm":
        return run_kvm_under_gdb(args, kernel)
    listener = _listen(args.gdb) if args.gdb is not None else None
    serial = open_serial(args.serial)
    limit = args.max_instructions or DEFAULT_TECHNIQUE_LIMIT
    try:
        with o.optional_output(args.trace, "trace file") as trace:
            monitor, options = build_monitor(args, kernel, serial.out, trace)
            if args.restore is not None and not args.quiet:
                _say(f"trapvisor: restored {args.restore} ({monitor.steps():,} guest steps, "
                     f"technique {monitor.name})")
            try:
                if args.snapshot_at is not None:
                    _snapshot_at(monitor, options, args, limit)
                if listener is not None:
                    final = _serve(monitor, options, listener, args, limit)
                else:
                    monitor.start_clock()
                    monitor.run_slice(limit, limit)
                    final = None
            except KeyboardInterrupt:
                _say("trapvisor: interrupted")
                return 130
            result = monitor.result()
            if final is not None and final.kind == "ended" and final.detail == "killed from gdb":
                result.stop_reason, result.detail = "killed", "from gdb"
    finally:
        serial.close()
        if listener is not None:
            listener.close()
    return report_technique_run(result, quiet=args.quiet)


def _snapshot_at(monitor, options, args, limit) -> None:
    from ..debug import snapshot
    monitor.start_clock()
    ended = monitor.run_slice(min(args.snapshot_at, limit), limit)
    if ended and monitor.steps() < args.snapshot_at:
        _say(f"trapvisor: no snapshot: the machine ended after {monitor.steps():,} steps, "
             f"before --snapshot-at {args.snapshot_at:,}")
        return
    size = snapshot.save(args.snapshot, monitor, options)
    if not args.quiet:
        _say(f"trapvisor: snapshot after {monitor.steps():,} guest steps written to {args.snapshot} "
             f"({size:,} bytes)")


def _serve(monitor, options, listener, args, limit):
    from ..debug.session import debug_session
    from ..debug.sim_target import SimTarget
    target = SimTarget(monitor, limit, snapshot_options=options)
    _announce(listener, args)
    return debug_session(target, listener, start_stopped=args.start_stopped,
                         on_connect=lambda: _say("trapvisor: gdb connected"))


def _announce(listener, args) -> None:
    state = "stopped" if args.start_stopped else "running"
    _say(f"trapvisor: gdb stub on tcp::{listener.port} (gdb: target remote :{listener.port}); "
         f"the machine is {state}")


def run_kvm_under_gdb(args, kernel: str) -> int:
    from .console import open_serial
    from .summaries import report_run
    from ..debug.kvm_target import run_kvm_debugged
    listener = _listen(args.gdb)
    ends = open_serial(args.serial)
    try:
        with o.optional_output(args.trace, "trace file") as trace:
            res = run_kvm_debugged(
                kernel, listener, start_stopped=args.start_stopped, trace_file=trace,
                serial_out=ends.out, serial_in=ends.input, memory_bytes=args.memory, cmdline=args.append,
                modules=args.module, initrd=args.initrd, disk=args.disk, smp=args.smp or 1,
                cpu="host" if args.cpu == "host" else "model", linux_entry=args.linux_entry or "auto",
                on_listen=lambda: _announce(listener, args),
                on_connect=lambda: _say("trapvisor: gdb connected"))
    finally:
        ends.close()
        listener.close()
    return report_run(res, quiet=args.quiet)
