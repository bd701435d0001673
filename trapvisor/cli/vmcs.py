"""``trapvisor vmcs dump KERNEL``: a guest's VMCS, field by field, with the SDM's names.

Runs the kernel under ``vtx`` or ``vtx-noept`` (``vmm/techniques/vtx.py``) for
``--at`` guest steps (or to its end) and prints the current VMCS as the
processor holds it at that VM exit: controls, exit information, guest and
host state, each field with its SDM Vol. 3C Appendix B name, encoding and
width (``machine/cpu/vmx/vmcs.py``, ``format_vmcs``).
"""

from __future__ import annotations

from . import options as o

TECHNIQUES = ("vtx", "vtx-noept")


def add_parser(sub) -> None:
    p = sub.add_parser("vmcs", help="simulated VT-x: print a guest's VMCS field by field")
    vsub = p.add_subparsers(dest="vmcs_command", required=True, metavar="ACTION")
    d = vsub.add_parser("dump", help="run a kernel under vtx and print its VMCS at a VM exit")
    d.add_argument("kernel", type=o.kernel, help="kernel file or guest:NAME")
    d.add_argument("--append", default="", help="kernel command line")
    d.add_argument("--technique", choices=TECHNIQUES, default="vtx")
    d.add_argument("--cpu", choices=("standard", "strict"), default="standard")
    d.add_argument("--memory", "-m", type=o.memory_size, default="128M")
    d.add_argument("--at", type=o.at_least_one("step count"), default=None, metavar="N",
                   help="stop at the first VM exit after N guest steps (default: run to the end)")
    d.add_argument("--max-instructions", type=o.at_least_one("instruction limit"), default=2_000_000_000)
    d.add_argument("--all", action="store_true", help="print the fields that are 0 too")
    d.set_defaults(func=cmd_dump)


def cmd_dump(args) -> int:
    from ..machine.cpu.vmx.vmcs import format_vmcs
    from ..vmm.monitor import RunOptions, get
    kernel = o.resolve_kernel(args.kernel)
    m = get(args.technique)(RunOptions(kernel, cmdline=args.append, memory_bytes=args.memory,
                                       strict=args.cpu == "strict"))
    m.start_clock()
    until = args.max_instructions if args.at is None else min(args.at, args.max_instructions)
    m.run_slice(until, args.max_instructions)
    r = m.result()
    print(f"{args.technique}: {m.steps():,} guest steps, {r.stop_reason or ('exit ' + str(r.exit_code) if r.exit_code is not None else 'running')}")
    print("\n".join(format_vmcs(m.vmcs, all_fields=args.all)))
    print("; ".join(n for n in r.notes if n.startswith("VM exits")))
    return 0
