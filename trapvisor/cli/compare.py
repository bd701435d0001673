"""``trapvisor compare KERNEL``: the kernel natively and under each technique, in one table.

The comparison itself is ``report/compare.py`` (and ``report/html.py`` for
``--html``); this module checks the options, including the ones only some
techniques honour, before the first run, so a bad report path or an
unusable /dev/kvm is found before minutes of guest time, not after.
"""

from __future__ import annotations

import sys

from . import options as o


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="run a kernel natively and under each technique; one table")
    p.add_argument("kernel", type=o.kernel, help="kernel file or guest:NAME")
    p.add_argument("--append", default="", help="kernel command line")
    p.add_argument("--techniques", type=o.technique_list, default=None,
                   help="comma-separated list (default: native,emulate,trap-emulate, and kvm when "
                        "/dev/kvm is usable)")
    p.add_argument("--cpu", choices=("standard", "strict"), default="standard")
    p.add_argument("--memory", "-m", type=o.memory_size, default="128M")
    p.add_argument("--max-instructions", type=o.at_least_one("instruction limit"), default=2_000_000_000)
    p.add_argument("--costs", type=o.cost_model, default=None, metavar="TOML", help="override the cost model")
    p.add_argument("--shadow-cache", type=o.at_least_one("shadow cache size"), default=None, metavar="N",
                   help="trap-emulate: shadow address spaces kept across CR3 loads (default 8)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--html", type=o.writable_file("HTML report"), default=None, metavar="REPORT",
                   help="also write an HTML report")
    p.set_defaults(func=cmd_compare)


def check_compare(args, techniques: list[str]) -> None:
    """Refuse what the chosen techniques cannot honour, and an unusable /dev/kvm, up front."""
    from ..vmm.monitor import RunOptions, get
    classes = [get(t) for t in techniques]
    if args.shadow_cache is not None and not any("shadow_cache" in c.honours for c in classes):
        o.refuse("--shadow-cache", "no technique among those compared keeps shadow page tables")
    for cls in classes:
        cls.preflight(RunOptions(args.kernel, memory_bytes=args.memory))


def cmd_compare(args) -> int:
    from ..report.compare import compare, default_techniques, print_table, to_json
    techniques = args.techniques or list(default_techniques())
    check_compare(args, techniques)
    kernel = o.resolve_kernel(args.kernel)
    rows = compare(kernel, cmdline=args.append, techniques=techniques, strict=args.cpu == "strict",
                   memory_bytes=args.memory, max_instructions=args.max_instructions,
                   costs=args.costs, keep_events=bool(args.html), shadow_cache=args.shadow_cache,
                   progress=None if args.json else lambda n: print(f"running {n} ...", file=sys.stderr))
    if args.json:
        print(to_json(rows, kernel, args.append))
    else:
        print_table(rows, args.kernel, args.append)
    if args.html:
        write_html_report(args.html, rows, args.kernel, args.append)
    return 0 if all(r.identical for r in rows) else 1


def write_html_report(path: str, rows, kernel: str, cmdline: str) -> None:
    from ..report.html import render
    with o.optional_output(path, "HTML report") as f:
        f.write(render(rows, kernel, cmdline))
    print(f"report written to {path}", file=sys.stderr)
