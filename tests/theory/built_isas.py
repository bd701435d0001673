"""ISAs built for the tests: each adds to the s360 base one instruction that a definition,
a theorem or the contradiction alarm is about.  Written the way a user would write one."""

from trapvisor.theory.formal_machine import MemoryTrap, Mode, PrivilegeTrap, Reloc
from trapvisor.theory.isas.s360 import base

S, U = Mode.S, Mode.U


def with_instruction(name, signature, semantics, doc="", notes=None):
    isa = base(name, doc or f"s360 plus {signature}")
    isa.add(signature, semantics, opcode=11, doc=doc)
    isa.notes.update(notes or {})
    return isa


def supervisor_trap():
    """STRAP traps in supervisor mode and does nothing in user mode (the trap changes M and R)."""
    def strap(c):
        if c.mode is S:
            raise PrivilegeTrap("supervisor-mode trap")
    return with_instruction("strap", "STRAP", strap, "traps in supervisor mode only")


def combined_only():
    """ODD d differs only on a pair of states that differ in both the mode and R.

    With b >= 1 it does nothing (so it is not privileged: both modes run it).
    With b = 0 it memory-traps unless (M = s and l = 0) or (M = u and l != 0),
    and then stores 1 (s) or 0 (u): every mode pair and every same-mode pair
    has a memory-trapping side or equal results; only (s, l=0) against
    (u, l=1) differs.
    """
    def odd(c, d):
        if c.R.b >= 1:
            return
        if (c.mode is S) != (c.R.l == 0):
            raise MemoryTrap("only s with l = 0, or u with l != 0")
        c.store(d, 1 if c.mode is S else 0)
    return with_instruction("combo", "ODD d", odd, "differs only on a pair that differs in mode and R")


def vacuously_privileged():
    """VAC d: every mode pair has a memory-trapping side, so it is privileged vacuously -- and sensitive."""
    def vac(c, d):
        if (c.mode is S) != (c.R.l == 0):
            raise MemoryTrap("only s with l = 0, or u with l != 0")
        c.store(d, 1 if c.mode is S else 0)
    return with_instruction("vacuous", "VAC d", vac, "privileged only vacuously")


def size_leak():
    """STQ a stores q: outside the model, innocuous by the definitions, and it breaks the monitor."""
    def stq(c, a):
        c.store(a, c.q)
    return with_instruction("sizeleak", "STQ a", stq, "reads the storage size")


def user_widen():
    """WIDEN grows R's bound in user mode only (without trapping): user sensitive, not supervisor sensitive."""
    def widen(c):
        if c.mode is U:
            c.R = Reloc(c.R.l, c.R.b + 1)
    return with_instruction("widen", "WIDEN", widen, "user mode: b := b + 1")


def bound_reader():
    """GETB a stores b: r (+) x keeps b, so not behaviour sensitive."""
    def getb(c, a):
        c.store(a, c.R.b)
    return with_instruction("getb", "GETB a", getb, "E[a] := b")


def user_trap_on_zero(notes=None):
    """UTRAP a traps in user mode when E[a] = 0 and is a no-op otherwise.

    Not privileged (E[a] != 0: neither mode traps), control sensitive (the
    user-mode trap changes M): Theorem 1's condition fails.  Yet the monitor
    is equivalent: the trap reaches it, and it interprets the no-op.  Without
    a note the alarm fires; with one, the verdict is 'explained'.
    """
    def utrap(c, a):
        if c.mode is U and c.load(a) == 0:
            raise PrivilegeTrap("user-mode trap on zero")
    return with_instruction("utrap", "UTRAP a", utrap, "user mode: trap if E[a] = 0", notes)


def supervisor_only_nop():
    """SNOP traps in user mode, does nothing in supervisor mode: privileged and, by its trap, sensitive."""
    def snop(c):
        c.supervisor_only()
    return with_instruction("snop", "SNOP", snop, "privileged no-op")
