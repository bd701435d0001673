"""``mfpi11``: a machine with a mode-sensitive instruction.

What it models: an instruction whose result reveals the processor mode, like
the PDP-11/45's MFPI (move from previous instruction space, whose effect
depends on the mode bits) or x86 ``PUSH CS`` (the pushed selector carries the
current privilege level).  ``RDMODE a`` stores 1 into ``E[a]`` in supervisor
mode and 0 in user mode, without trapping.

By Popek & Goldberg's definitions RDMODE is behaviour sensitive of the *mode*
kind.  A trap-and-emulate monitor runs a guest's supervisor code in real user
mode, so the guest kernel reads 0 where the bare machine gives 1.  A hybrid
monitor interprets virtual-supervisor code and is not fooled -- although the
definitions (read verbatim) make RDMODE user sensitive too, so Theorem 3 does
not promise that: a second example of a sufficient, not necessary, condition.
"""

from trapvisor.theory.isas.s360 import base
from trapvisor.theory.formal_machine import Mode

ISA_ = base(
    "mfpi11",
    "Not virtualizable: RDMODE reveals the mode without trapping.",
    "PDP-11/45 MFPI, x86 PUSH CS: an instruction that reveals the mode",
)


@ISA_.instruction("RDMODE a", opcode=11)
def rdmode(c, a):
    """E[a] := 1 in supervisor mode, 0 in user mode.  Unprivileged."""
    c.store(a, 1 if c.mode is Mode.S else 0)

ISA_.notes["hybrid"] = (
    "RDMODE is mode sensitive, which the definitions count as user sensitive (one of the two states "
    "compared is in user mode).  But a hybrid monitor runs only virtual-user code directly, in real "
    "user mode, where RDMODE answers 'user' exactly as on the bare machine; virtual-supervisor code is "
    "interpreted and sees the virtual mode."
)
