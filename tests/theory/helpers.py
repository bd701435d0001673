"""Shared helpers for the theory tests: small bounds, cached classifications,
and independent re-checks of witnesses against the machine itself."""

from functools import lru_cache

from trapvisor.theory import registry
from trapvisor.theory.adapter import Bounds
from trapvisor.theory.classifier import classify
from trapvisor.theory.formal_machine import Machine, Mode

#: Small enough to keep the suite fast; every bundled verdict is reached here.
SMALL = Bounds(q=3, values=(0, 1))

BUNDLED = ("s360", "retu", "lra67", "mfpi11", "pdp10", "paged")
FLAWED = ("retu", "lra67", "mfpi11", "pdp10")


def isa(name):
    return registry.load(name)


@lru_cache(maxsize=None)
def classified(name):
    return classify(isa(name), bounds=SMALL)


def machine_for(isa_, state):
    return Machine(isa_, len(state.E))


def rerun(isa_, witness, index):
    """Execute the witness's instruction again on its recorded state."""
    o = witness.executions[index]
    inst = _instance(isa_, witness.instance)
    return machine_for(isa_, o.before).execute(inst, o.before)


def _instance(isa_, text):
    head, _, rest = text.partition(" ")
    args = [int(a) for a in rest.split(",") if a.strip()]
    return isa_.instance(head, *args)


def assert_control_witness(isa_, w):
    ex = rerun(isa_, w, 0)
    assert ex.trap is None, "a control-sensitivity witness must not trap"
    assert (ex.after.M, ex.after.R) != (ex.before.M, ex.before.R)
    assert ex.after == w.executions[0].after


def assert_behavior_witness(isa_, w, kind):
    e1, e2 = rerun(isa_, w, 0), rerun(isa_, w, 1)
    s1, s2 = e1.before, e2.before
    assert e1.trap is None and e2.trap is None
    # same visible storage, same P, same bound
    assert s1.visible() == s2.visible() and s1.P == s2.P and s1.R.b == s2.R.b
    if kind == "location":
        assert s1.R.l != s2.R.l and s1.M == s2.M
    else:
        assert s1.R.l == s2.R.l and s1.M != s2.M
    seen1 = (e1.after._replace(R=s1.R).visible(), e1.after.P)
    seen2 = (e2.after._replace(R=s2.R).visible(), e2.after.P)
    assert seen1 != seen2, "the results must differ in visible storage or P"


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
