"""``lra67``: a machine with a location-sensitive instruction.

What it models: the IBM 360/67's LRA (load real address), which tells a
program where its virtual address really is in storage.  ``LRA a, d`` stores
``l + a`` (the absolute address of virtual address ``a``) into ``E[d]``; here
it is left unprivileged, so a guest can see its relocation.

By Popek & Goldberg's definitions LRA is behaviour sensitive of the *location*
kind: moving the same visible storage by ``x`` (``r (+) x``) changes what it
writes.  It is user sensitive and unprivileged, so neither Theorem 1 nor
Theorem 3 applies, and a guest running at base ``k`` under a monitor reads
``k`` more than it would on the bare machine.
"""

from trapvisor.theory.isas.s360 import base

ISA_ = base(
    "lra67",
    "Not virtualizable: LRA (load real address) reveals R's base without trapping.",
    "IBM 360/67 LRA: load real address",
)


@ISA_.instruction("LRA a, d", opcode=11)
def lra(c, a, d):
    """E[d] := l + a, the real address of a.  Unprivileged."""
    c.store(d, c.R.l + a)
