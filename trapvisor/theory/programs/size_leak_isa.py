"""An ISA that makes the toolkit raise its contradiction alarm: pass it with --isa.

STQ stores the size of storage, q, into E[a].  The machine's size is not
part of any state the definitions compare: moving the window by x
(r (+) x) keeps q, and so does changing the mode.  So by the definitions of
Popek & Goldberg (1974) STQ is innocuous, every sensitive instruction is
privileged, and Theorem 1's condition holds.  But a monitor gives its guest
a partition of a larger machine, and the guest reads the real q: the
monitor is not equivalent.  The paper's model has no such instruction (an
instruction sees storage only through R); ``trapvisor theory theorems
--isa size_leak_isa.py`` prints the program that shows the disagreement and
exits with status 3.
"""

from trapvisor.theory.isas.s360 import base

isa = base("sizeleak", "STQ reads the storage size q: outside the paper's model", "an instruction that sees q")


@isa.instruction("STQ a", opcode=11)
def stq(c, a):
    """E[a] := q, the size of storage (not relocated, not bounded by R)."""
    c.store(a, c.q)
