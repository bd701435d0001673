"""``paged``: sensitive but unprivileged, and still virtualizable.

What it models: why Theorem 1 of Popek & Goldberg (1974) is sufficient and
not necessary.  ``LPO a, d`` stores the *page offset* of a's real address,
``(l + a) mod 2`` (pages of two words), into ``E[d]``.  Like LRA it is location
sensitive -- with ``x = 1`` the result changes -- and it is unprivileged, so
the machine fails Theorem 1's condition.  But a monitor that relocates guests
only by whole pages (every partition base even, ``partition_alignment = 2``)
never shifts a guest by an odd ``x``, so the guest reads the same offset as on
the bare machine: equivalence holds.  Real paged machines show the same
thing: the offset of an address within its page survives relocation by pages.
"""

from trapvisor.theory.isas.s360 import base

ISA_ = base(
    "paged",
    "Sensitive-but-unprivileged LPO, yet virtualizable by page-aligned partitions.",
    "a page-offset query: Theorem 1 is sufficient, not necessary",
)
# A monitor honours this: it places every partition at an even address.
ISA_.partition_alignment = 2


@ISA_.instruction("LPO a, d", opcode=11)
def lpo(c, a, d):
    """E[d] := (l + a) mod 2, the offset of a's real address in its page."""
    c.store(d, (c.R.l + a) % 2)

ISA_.notes["full"] = (
    "LPO reveals only (l + a) mod 2; the monitor places every partition at an even base, so the "
    "relocation it applies never changes that parity and the guest reads what the bare machine shows."
)
ISA_.notes["hybrid"] = ISA_.notes["full"]
