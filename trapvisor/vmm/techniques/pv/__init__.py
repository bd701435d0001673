"""``pv``: paravirtualization after Xen's x86-32 interface (technique.py), with
its hypercalls (hypercalls.py), validated memory management (mm.py), events
(events.py), the domain builder (domain.py), console ring (console.py) and the
ABI's numbers (abi.py).  docs/paravirt.md says how it fits together."""

from . import technique  # noqa: F401  (registers the technique)
