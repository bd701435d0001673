"""What this host and checkout offer: ``trapvisor guests``, ``techniques``, ``info``, ``doctor``.

``guests`` lists the bundled guests (``trapvisor/guests.py``), ``info`` what
/dev/kvm is here (``kvm/hostinfo.py``), ``doctor`` whether every host
program and file the project uses is installed (``trapvisor/hosttools.py``).
"""

from __future__ import annotations

import sys


def add_parsers(sub) -> None:
    sub.add_parser("guests", help="list the bundled guests").set_defaults(func=cmd_guests)
    sub.add_parser("techniques", help="list the registered techniques").set_defaults(func=cmd_techniques)
    sub.add_parser("info", help="what this host offers (KVM kind)").set_defaults(func=cmd_info)
    doc = sub.add_parser("doctor", help="check the host programs and files trapvisor uses")
    doc.add_argument("--quiet", "-q", action="store_true", help="print only what is missing")
    doc.set_defaults(func=cmd_doctor)


def cmd_guests(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from ..guests import list_guests
    table = Table(title="bundled guests (run with: trapvisor run guest:NAME)")
    table.add_column("name")
    table.add_column("kind")
    table.add_column("what it is")
    table.add_column("workloads")
    for g in list_guests():
        table.add_row(g.name, g.kind, g.description, ", ".join(g.workloads) or "-")
    Console().print(table)
    return 0


def cmd_techniques(args) -> int:
    """Every registered technique (``vmm/monitor.py``), one line each."""
    from ..vmm.monitor import registered
    for name, cls in registered().items():
        print(f"{name:<14} {cls.summary}")
    return 0


def cmd_info(args) -> int:
    from ..kvm.hostinfo import format_info, probe_kvm
    print("\n".join(format_info(probe_kvm())))
    return 0


def cmd_doctor(args) -> int:
    """Each host program and file trapvisor uses: found, or the package to install."""
    from .. import hosttools
    gone = hosttools.missing()
    if not args.quiet:
        for req in hosttools.REQUIREMENTS:
            where = req.locate()
            print(f"{'ok' if where else 'MISSING':>7}  {req.name:<22} {where or req.package:<40} {req.purpose}")
    for req in gone:
        print(f"trapvisor: {req.problem()}", file=sys.stderr)
    return 1 if gone else 0
