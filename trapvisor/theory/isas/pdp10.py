"""``pdp10``: hybrid-virtualizable but not virtualizable, like the PDP-10.

What it models: the PDP-10's ``JRST 1``, the instruction Popek & Goldberg
(1974) single out for Theorem 3.  ``JRSTU t`` jumps to ``t``; in supervisor
mode it also enters user mode ("return to user"), in user mode it is an
ordinary jump.  It never traps for mode.

By the definitions JRSTU is control sensitive only from supervisor-mode
states: it is *supervisor* sensitive, not user sensitive, and not privileged.
So Theorem 1's condition fails (a guest kernel's JRSTU, run directly in real
user mode, does not take the guest to virtual user mode and the monitor never
learns) but Theorem 3's holds: a hybrid monitor, which interprets every
virtual-supervisor instruction, sees the mode change.
"""

from trapvisor.theory.isas.s360 import base
from trapvisor.theory.formal_machine import Mode

ISA_ = base(
    "pdp10",
    "Hybrid only: JRSTU (JRST 1) leaves supervisor mode without trapping; harmless in user mode.",
    "PDP-10 JRST 1: return to user mode, unprivileged",
)


@ISA_.instruction("JRSTU t", opcode=11)
def jrstu(c, t):
    """P := t; M := u (a plain jump when already in user mode).  Unprivileged."""
    c.jump(t)
    c.mode = Mode.U
