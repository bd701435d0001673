"""``trapvisor run KERNEL``: boot one kernel on the simulated PC, under a technique, or on KVM.

Three paths, chosen by ``--accel`` and ``--technique``: the bare simulated PC
(``machine.pc.PC``, the default), a technique of the monitor
(``vmm.run.run_technique``) or the host's /dev/kvm (``kvm.runner.run_kvm``).
Every option is checked when parsed (``options.py``); :func:`check_run`
then refuses, by name, any option the chosen path cannot honour, before a
guest is built or a machine exists.
"""

from __future__ import annotations

from . import options as o
from . import run_debug
from .console import RawTerminal, SerialSpec, open_serial, serial_spec
from .summaries import report_run, report_technique_run

DEFAULT_TECHNIQUE_LIMIT = 2_000_000_000     # guest instructions, when --max-instructions is not given
MAX_SMP = 254                               # xAPIC IDs 0-254 (kvm.runner.MAX_SMP)


def smp_count(text: str) -> int:
    """--smp: a number of CPUs, 1 to MAX_SMP."""
    n = o.at_least_one("CPU count")(text)
    if n > MAX_SMP:
        raise o.OptionError(f"bad CPU count {text!r}: at most {MAX_SMP} (one xAPIC ID each)")
    return n


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="boot a kernel on the simulated PC (or on KVM)")
    p.add_argument("kernel", type=o.kernel, nargs="?", default=None,
                   help="kernel file (Multiboot ELF/a.out, ELF32, bzImage) or guest:NAME (none with --restore)")
    p.add_argument("--memory", "-m", type=o.memory_size, default="128M", help="guest RAM (default 128M)")
    p.add_argument("--append", default="", help="kernel command line")
    p.add_argument("--module", action="append", default=[], type=o.readable_file("module"),
                   help="Multiboot module (repeatable)")
    p.add_argument("--initrd", type=o.readable_file("initrd"), default=None,
                   help="initial ramdisk (Linux bzImage, --accel kvm)")
    p.add_argument("--disk", type=o.readable_file("disk image"), default=None,
                   help="disk image for the ATA primary master")
    p.add_argument("--serial", type=serial_spec, default="stdio",
                   help="stdio | file:PATH | socket:HOST:PORT | null (default stdio)")
    p.add_argument("--max-instructions", type=o.at_least_one("instruction limit"), default=None,
                   help="stop after N guest instructions")
    p.add_argument("--trace", type=o.writable_file("trace file"), default=None,
                   help="write an event trace (JSON lines) to FILE")
    p.add_argument("--accel", choices=("sim", "kvm"), default="sim", help="sim (default) or kvm")
    p.add_argument("--cpu", choices=("standard", "strict", "host"), default="standard",
                   help="strict: every sensitive instruction traps at CPL>0; host (--accel kvm): the host's "
                        "CPUID, as QEMU's -cpu host (standard: trapvisor's CPU model)")
    p.add_argument("--smp", type=smp_count, default=None, metavar="N",
                   help="--accel kvm: N vCPUs, one thread each (default 1)")
    p.add_argument("--raw-load", type=o.hex_address, default=None, metavar="ADDR",
                   help="load KERNEL as a raw binary at ADDR (hex) and start there")
    p.add_argument("--max-seconds", type=o.seconds, default=None, help="stop after this much wall time")
    p.add_argument("--stop-after-output", type=o.output_regex, default=None, metavar="REGEX",
                   help="stop the VM once the console output matches REGEX (--accel kvm)")
    p.add_argument("--technique", type=o.technique, default="native",
                   help="native (the bare PC, default) or any technique `trapvisor techniques` lists")
    p.add_argument("--costs", type=o.cost_model, default=None, metavar="TOML",
                   help="override the cost model (emulate, trap-emulate)")
    p.add_argument("--shadow-cache", type=o.at_least_one("shadow cache size"), default=None, metavar="N",
                   help="trap-emulate: shadow address spaces kept across CR3 loads "
                        "(default 8; 1 rebuilds the shadow on every context switch)")
    p.add_argument("--linux-entry", choices=("auto", "bzimage", "vmlinux"), default=None,
                   help="Linux: enter the bzImage (it decompresses itself) or a vmlinux trapvisor "
                        "decompressed on the host; auto (default) = vmlinux on the simulated PC and "
                        "software KVM")
    p.add_argument("--quiet", "-q", action="store_true", help="no end-of-run summary")
    run_debug.add_options(p)
    p.set_defaults(func=cmd_run)


# -- what each path can honour --------------------------------------------------------------

def _given(args) -> dict:
    """The options whose use depends on the path, by name, and whether each was given."""
    return {"--max-instructions": args.max_instructions is not None, "--raw-load": args.raw_load is not None,
            "--costs": args.costs is not None, "--shadow-cache": args.shadow_cache is not None,
            "--initrd": args.initrd is not None, "--stop-after-output": args.stop_after_output is not None,
            "--linux-entry": args.linux_entry is not None, "--disk": args.disk is not None,
            "--module": bool(args.module), "--max-seconds": args.max_seconds is not None,
            "--trace": args.trace is not None, "--smp": args.smp is not None and args.smp > 1,
            "--cpu host": args.cpu == "host"}


def _refuse_any(given: dict, names, why: str) -> None:
    for name in names:
        if given[name]:
            o.refuse(name, why)


def check_kvm_run(args, given: dict) -> None:
    if args.technique != "native":
        o.refuse("--technique", "applies to the simulated PC; --accel kvm is its own technique")
    _refuse_any(given, ("--max-instructions",), "KVM does not count guest instructions; use --max-seconds")
    _refuse_any(given, ("--raw-load",), "--accel kvm loads Multiboot kernels and bzImages only")
    _refuse_any(given, ("--costs", "--shadow-cache"), "applies to --technique emulate or trap-emulate, "
                                                     "not to --accel kvm")
    if args.cpu == "strict":
        o.refuse("--cpu strict", "under --accel kvm the guest runs on the host's own CPU")


def technique_options(args, kernel: str, **extra):
    """The run options of ``args`` for a technique (``vmm.monitor.RunOptions``)."""
    from ..vmm.monitor import RunOptions
    return RunOptions(kernel, cmdline=args.append, memory_bytes=args.memory, strict=args.cpu == "strict",
                      shadow_cache=args.shadow_cache, modules=tuple(args.module), disk=args.disk,
                      initrd=args.initrd,
                      max_seconds=args.max_seconds, **extra)


def check_technique_run(args, given: dict) -> None:
    """What the technique says it cannot honour (``Monitor.honours``), refused by name."""
    from ..vmm.monitor import get
    cls = get(args.technique)
    _refuse_any(given, ("--raw-load",), f"--technique {cls.name} loads Multiboot and ELF kernels only")
    opts = technique_options(args, args.kernel, trace_file=True if given["--trace"] else None)
    for flag in cls.unsupported(opts):
        o.refuse(flag, f"--technique {cls.name} does not support it")
    if args.cpu == "strict" and not cls.strict_cpu:
        o.refuse("--cpu strict", f"--technique {cls.name} cannot present the strict CPU")


def check_run(args) -> None:
    """Refuse any option the path chosen by --accel and --technique cannot honour."""
    given = _given(args)
    if args.accel == "kvm":
        check_kvm_run(args, given)
    else:
        _refuse_any(given, ("--stop-after-output",), "needs --accel kvm")
        _refuse_any(given, ("--smp",), "the simulated PC has one CPU; more need --accel kvm")
        _refuse_any(given, ("--cpu host",), "needs --accel kvm (the simulated PC's CPU is its own)")
        if args.technique != "native":
            check_technique_run(args, given)
        else:
            _refuse_any(given, ("--costs", "--shadow-cache"), "applies to --technique emulate or trap-emulate "
                                                             "(the bare PC's run is not costed)")
    if given["--raw-load"] and given["--module"]:
        o.refuse("--module", "a raw binary (--raw-load) takes no modules")


# -- the three paths ------------------------------------------------------------------------

def linux_guest_defaults(args) -> None:
    """guest:linux: its initramfs and console command line unless --initrd/--append say otherwise."""
    from ..guests import LINUX_CMDLINE, LINUX_GUEST, linux_guest
    if args.kernel == f"guest:{LINUX_GUEST}" and args.accel != "kvm":
        if args.initrd is None:
            args.initrd = str(linux_guest().initrd)
        if not args.append:
            args.append = LINUX_CMDLINE


def cmd_run(args) -> int:
    if args.kernel is None and args.restore is None:
        o.refuse("run", "give a kernel (a file or guest:NAME), or --restore FILE")
    debugging = run_debug.debug_path(args)
    if debugging:
        run_debug.check_debug_run(args)
    if args.restore is not None:
        return run_debug.run_debugged(args, None)
    check_run(args)
    linux_guest_defaults(args)
    kernel = o.resolve_kernel(args.kernel)
    if debugging:
        return run_debug.run_debugged(args, kernel)
    if args.accel == "kvm":
        return run_on_kvm(args, kernel)
    if args.technique != "native":
        return run_under_technique(args, kernel)
    return run_on_pc(args, kernel)


def run_on_pc(args, kernel: str) -> int:
    from ..machine.pc import PC
    serial = open_serial(args.serial)
    try:
        pc = PC(args.memory, serial_out=serial.out, serial_in=serial.input, disk=args.disk,
                strict=args.cpu == "strict")
        pc.load_kernel(kernel, cmdline=args.append, modules=args.module, raw_load=args.raw_load,
                       initrd=args.initrd, linux_entry=sim_linux_entry(args.linux_entry))
        with o.optional_output(args.trace, "trace file") as trace:
            result = pc.run(args.max_instructions, max_seconds=args.max_seconds, trace_file=trace)
    finally:
        serial.close()
    return report_run(result, quiet=args.quiet)


def sim_linux_entry(choice: str | None) -> str:
    """--linux-entry on the simulated PC: auto is vmlinux (the guest's decompressor would
    take minutes at emulation speed)."""
    return "vmlinux" if choice in (None, "auto") else choice


def run_under_technique(args, kernel: str) -> int:
    from ..vmm.monitor import get
    from ..vmm.costmodel import CostModel
    serial = open_serial(args.serial)
    try:
        with o.optional_output(args.trace, "trace file") as trace:
            cls = get(args.technique)
            typed = serial.input if "serial_in" in cls.honours else None
            opts = technique_options(args, cls.guest_kernel(str(kernel)), serial_out=serial.out,
                                     trace_file=trace, costs=args.costs or CostModel.default(),
                                     serial_in=typed)
            r = cls(opts).run(args.max_instructions or DEFAULT_TECHNIQUE_LIMIT)
    finally:
        serial.close()
    return report_technique_run(r, quiet=args.quiet)


def run_on_kvm(args, kernel: str) -> int:
    res = run_kvm_on_console(args.serial, args.trace, kernel, memory_bytes=args.memory, cmdline=args.append,
                             modules=args.module, initrd=args.initrd, disk=args.disk,
                             max_seconds=args.max_seconds, stop_after_output=args.stop_after_output,
                             linux_entry=args.linux_entry or "auto", smp=args.smp or 1,
                             cpu="host" if args.cpu == "host" else "model")
    return report_run(res, quiet=args.quiet)


def run_kvm_on_console(serial: SerialSpec, trace_path: str | None, kernel: str, **kw):
    """``kvm.runner.run_kvm`` with the console ``serial`` names; a terminal on stdin goes raw
    while the guest runs (Ctrl-A x quits)."""
    from ..kvm.runner import run_kvm
    ends = open_serial(serial)
    raw = RawTerminal(serial.kind == "stdio" and ends.input is not None)
    try:
        with o.optional_output(trace_path, "trace file") as trace:
            return run_kvm(kernel, trace_file=trace, serial_out=ends.out, serial_in=ends.input,
                           escape_char=raw.enabled, on_start=raw.enter, **kw)
    finally:
        raw.restore()
        ends.close()
