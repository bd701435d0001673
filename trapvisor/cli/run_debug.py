"""``trapvisor run ... --gdb tcp::PORT`` (``-s``, ``-S``): the run under the gdb stub.

The options of QEMU: ``--gdb tcp::PORT`` (or ``tcp:HOST:PORT``; the host
defaults to 127.0.0.1, port 0 picks a free one and says which), ``-s`` for
``--gdb tcp::1234``, ``-S`` to start the machine stopped until gdb says
``continue``.  The bare PC and every technique run through the monitor
interface (``debug/sim_target.py``); ``--accel kvm`` through
``debug/kvm_target.py``.  The end-of-run summary is the technique's, or KVM's.
"""

from __future__ import annotations

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


def run_under_gdb(args, kernel: str) -> int:
    from .console import open_serial
    from .run import DEFAULT_TECHNIQUE_LIMIT, technique_options
    from .summaries import report_technique_run
    from ..debug.session import debug_session
    from ..debug.sim_target import SimTarget
    from ..vmm.costmodel import CostModel
    from ..vmm.monitor import get
    if args.accel == "kvm":
        return run_kvm_under_gdb(args, kernel)
    listener = _listen(args.gdb)
    serial = open_serial(args.serial)
    try:
        with o.optional_output(args.trace, "trace file") as trace:
            opts = technique_options(args, kernel, serial_out=serial.out, trace_file=trace,
                                     costs=args.costs or CostModel.default())
            monitor = get(args.technique)(opts)
            target = SimTarget(monitor, args.max_instructions or DEFAULT_TECHNIQUE_LIMIT)
            _announce(listener, args)
            try:
                final = debug_session(target, listener, start_stopped=args.start_stopped,
                                      on_connect=lambda: _say("trapvisor: gdb connected"))
            except KeyboardInterrupt:
                _say("trapvisor: interrupted")
                return 130
            result = monitor.result()
            if final.kind == "ended" and final.detail == "killed from gdb":
                result.stop_reason, result.detail = "killed", "from gdb"
    finally:
        serial.close()
        listener.close()
    return report_technique_run(result, quiet=args.quiet)


def _announce(listener, args) -> None:
    state = "stopped" if args.start_stopped else "running"
    _say(f"trapvisor: gdb stub on tcp::{listener.port} (gdb: target remote :{listener.port}); "
         f"the machine is {state}")


def run_kvm_under_gdb(args, kernel: str) -> int:
    from .console import open_serial
    from .summaries import report_kvm_run
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
    return report_kvm_run(res, quiet=args.quiet)
