"""``trapvisor bt show KERNEL --at ADDR``: a guest unit and its binary translation side by side.

The kernel runs under ``--technique bt`` until the guest code at ADDR has
been translated (or the run ends, or --max-instructions), then the unit is
printed (``vmm/techniques/bt/inspect.py``): guest instruction, its class
(IDENT, rewritten branch, inline code, callout and why), the host code in
the translation cache.  With --stats, the translator's statistics of the run
so far follow.
"""

from __future__ import annotations

from . import options as o

SLICE = 100_000


def add_parser(sub) -> None:
    p = sub.add_parser("bt", help="inspect the binary translator (bt show)")
    bsub = p.add_subparsers(dest="bt_command", required=True, metavar="SUBCOMMAND")
    s = bsub.add_parser("show", help="a guest unit and its translation side by side")
    s.add_argument("kernel", type=o.kernel, help="kernel file or guest:NAME")
    s.add_argument("--at", type=o.hex_address, required=True, metavar="ADDR",
                   help="guest address (hex) of the code to show")
    s.add_argument("--append", default="", help="kernel command line")
    s.add_argument("--memory", "-m", type=o.memory_size, default="128M", help="guest RAM (default 128M)")
    s.add_argument("--module", action="append", default=[], type=o.readable_file("module"),
                   help="Multiboot module (repeatable)")
    s.add_argument("--cpu", choices=("standard", "strict"), default="standard", help="host CPU variant")
    s.add_argument("--max-instructions", type=o.at_least_one("instruction limit"), default=50_000_000,
                   help="give up after N guest instructions (default 50 000 000)")
    s.add_argument("--stats", action="store_true", help="print the translator's statistics too")
    s.set_defaults(func=cmd_bt_show)


def cmd_bt_show(args) -> int:
    from ..vmm.monitor import RunOptions
    from ..vmm.techniques.bt import BinaryTranslation
    from ..vmm.techniques.bt.inspect import describe_unit, find_unit
    kernel = o.resolve_kernel(args.kernel)
    bt = BinaryTranslation(RunOptions(kernel, cmdline=args.append, memory_bytes=args.memory,
                                      strict=args.cpu == "strict", modules=tuple(args.module),
                                      serial_out=lambda data: None))
    bt.start_clock()
    unit = None
    ended = False
    while unit is None and not ended and bt.steps() < args.max_instructions:
        ended = bt.run_slice(min(bt.steps() + SLICE, args.max_instructions), args.max_instructions)
        unit = find_unit(bt.tc, args.at)
    if unit is None:
        how = "the guest ended" if ended else f"{bt.steps():,} guest instructions"
        print(f"no translation of guest {args.at:#010x} after {how}: the guest kernel did not execute "
              f"code there (user code runs untranslated)")
        return 1
    print(f"{args.kernel}: after {bt.instructions():,} guest instructions")
    for line in describe_unit(bt.tc, unit, mark=args.at):
        print(line)
    if args.stats:
        for key, value in bt.statistics().items():
            print(f"  {key}: {value:.3f}" if isinstance(value, float) else f"  {key}: {value}")
    return 0
