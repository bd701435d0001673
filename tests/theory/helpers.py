"""Shared helpers for the theory tests: small bounds, cached classifications,
and independent re-checks of witnesses against the machine itself."""

from functools import lru_cache

from trapvisor.theory import registry
from trapvisor.theory.adapter import Bounds
from trapvisor.theory.classifier import classify
from trapvisor.theory.formal_machine import Machine, Mode, TrapKind
from trapvisor.theory.program_sets import ProgramBounds

#: Small enough to keep the suite fast; every bundled verdict is reached here.
SMALL = Bounds(q=3, values=(0, 1))
#: Programs of 3 words: one instruction word, every start PSW.
SMALL_PROGRAMS = ProgramBounds(q=3, length=1, values=(0, 1), steps=12)

BUNDLED = ("s360", "retu", "lra67", "mfpi11", "pdp10", "paged")
FLAWED = ("retu", "lra67", "mfpi11", "pdp10")


def isa(name):
    return registry.load(name)


@lru_cache(maxsize=None)
def classified(name):
    return classify(isa(name), bounds=SMALL)


def machine_for(isa_, state):
    return Machine(isa_, len(state.E))


def instance(isa_, text):
    head, _, rest = text.partition(" ")
    args = [int(a) for a in rest.split(",") if a.strip()]
    return isa_.instance(head, *args)


def rerun(isa_, witness, index):
    """Execute the witness's instruction again on its recorded state."""
    o = witness.executions[index]
    return machine_for(isa_, o.before).execute(instance(isa_, witness.instance), o.before)


def assert_control_witness(isa_, w):
    ex = rerun(isa_, w, 0)
    assert ex.trap is not TrapKind.MEMORY, "a control-sensitivity witness must not memory-trap"
    assert (ex.after.M, ex.after.R) != (ex.before.M, ex.before.R)
    assert ex.after == w.executions[0].after


def seen(ex):
    """What the behaviour definition compares: storage through the state's own R, and P."""
    return ex.after._replace(R=ex.before.R).visible(), ex.after.P


def assert_behavior_witness(isa_, w, kind):
    e1, e2 = rerun(isa_, w, 0), rerun(isa_, w, 1)
    s1, s2 = e1.before, e2.before
    assert not e1.memory_trapped and not e2.memory_trapped
    # same visible storage, same P, same bound
    assert s1.visible() == s2.visible() and s1.P == s2.P and s1.R.b == s2.R.b
    if kind == "location":
        assert s1.M == s2.M and (s1.R.l != s2.R.l or s1.E != s2.E)
    elif kind == "mode":
        assert s1._replace(M=s2.M) == s2 and s1.M != s2.M
    else:  # both
        assert s1.M != s2.M and s1._replace(M=s2.M) != s2
    assert seen(e1) != seen(e2), "the results must differ in visible storage or P"


def assert_not_privileged_witness(isa_, w):
    """The pair refutes 'privileged': no memory trap, and not (user traps, supervisor does not)."""
    e1, e2 = rerun(isa_, w, 0), rerun(isa_, w, 1)
    assert e1.before.M is Mode.S and e2.before.M is Mode.U
    assert (e1.before.E, e1.before.P, e1.before.R) == (e2.before.E, e2.before.P, e2.before.R)
    assert not e1.memory_trapped and not e2.memory_trapped
    assert not (e2.trapped and not e1.trapped)


def assert_privileged_example(isa_, w):
    e1, e2 = rerun(isa_, w, 0), rerun(isa_, w, 1)
    assert e1.before.M is Mode.S and e2.before.M is Mode.U
    assert not e1.trapped and e2.trapped and not e2.memory_trapped
