"""Each of Popek & Goldberg's definitions on instructions built for it: a case that is, a case that is not.

The definition functions of ``definitions.py`` are applied to the executions
of one instance over every state of a small machine; every witness they
return is executed again on the formal machine and checked against the
definition's wording.
"""

import pytest

from trapvisor.theory import definitions as D
from trapvisor.theory.adapter import FormalAdapter
from trapvisor.theory.classifier import exhaustive_space
from trapvisor.theory.formal_machine import Mode, PrivilegeTrap, Reloc, State, TrapKind
from trapvisor.theory.isa import ISA

from . import built_isas as B
from .helpers import (
    SMALL, assert_behavior_witness, assert_control_witness, assert_not_privileged_witness,
    assert_privileged_example, isa, rerun,
)

S, U = Mode.S, Mode.U


def space(isa_, text):
    """The executions of one instance on every state within SMALL (both modes)."""
    adapter = FormalAdapter(isa_)
    head, _, rest = text.partition(" ")
    inst = isa_.instance(head, *[int(a) for a in rest.split(",") if a.strip()])
    return exhaustive_space(adapter, inst, list(adapter.states(SMALL)))


def one(signature, fn):
    x = ISA("probe", "one instruction")
    x.add(signature, fn)
    return x


# -- the machine --------------------------------------------------------------


def test_a_state_is_the_four_tuple_e_m_p_r():
    s = D.state([1, 2, 3], "u", 1, (0, 2))
    assert isinstance(s, State) and (s.E, s.M, s.P, s.R) == ((1, 2, 3), U, 1, Reloc(0, 2))


def test_memory_trap_is_an_access_past_the_bound_or_past_storage_and_nothing_else():
    mov = space(isa("s360"), "MOV 2, 0")  # reads virtual address 2, writes 0 (P is inside R in every state)
    for o in mov.singles:
        l, b = o.before.R
        assert D.memory_trap(o) == (2 > b or 2 + l >= 3), o.before
    assert any(D.memory_trap(o) for o in mov.singles) and not all(D.memory_trap(o) for o in mov.singles)
    lpsw_user = [o for o in space(isa("s360"), "LPSW 0").singles if o.before.M is U]
    assert any(o.trapped and not D.memory_trap(o) for o in lpsw_user)  # a privilege trap is not a memory trap


# -- privileged -------------------------------------------------------------


def test_privileged_holds_for_an_instruction_that_traps_in_user_mode_and_runs_in_supervisor_mode():
    f = D.privileged(space(isa("s360"), "SETR 0, 2"))
    assert f.holds and not f.vacuous and f.checked > 0
    assert_privileged_example(isa("s360"), f.witness)


def test_privileged_fails_for_a_user_mode_no_op_it_has_to_trap():
    x = one("SJMP t", lambda c, t: c.jump(t) if c.mode is S else None)
    f = D.privileged(space(x, "SJMP 1"))
    assert not f.holds and f.witness.definition == "not privileged"
    assert_not_privileged_witness(x, f.witness)
    assert not rerun(x, f.witness, 1).trapped  # the user-mode half ran without trapping


def test_privileged_fails_for_an_instruction_that_traps_in_both_modes():
    def always(c):
        raise PrivilegeTrap("always")
    x = one("SVC", always)
    f = D.privileged(space(x, "SVC"))
    assert not f.holds and rerun(x, f.witness, 0).trapped


def test_memory_trapping_pairs_are_excluded_and_privileged_can_hold_vacuously():
    def guarded_load(c, a):
        c.supervisor_only()
        c.load(a)
    x = one("GL a", guarded_load)
    f = D.privileged(space(x, "GL 2"))
    assert f.holds and f.checked > 0 and f.excluded > 0
    far = one("FAR", lambda c: c.load(63))
    v = D.privileged(space(far, "FAR"))
    assert v.holds and v.vacuous and v.excluded == len(space(far, "FAR").pairs)


# -- control sensitive -------------------------------------------------------


def test_control_sensitive_from_supervisor_mode_without_trapping():
    f = D.control_sensitive(space(isa("pdp10"), "JRSTU 0"))
    assert f.holds and f.witness.executions[0].before.M is S
    assert_control_witness(isa("pdp10"), f.witness)


def test_control_sensitive_through_the_trap_sequence_a_trap_is_not_excluded():
    strap = B.supervisor_trap()
    f = D.control_sensitive(space(strap, "STRAP"))
    assert f.holds and f.witness.executions[0].trapped
    assert rerun(strap, f.witness, 0).trap is TrapKind.PRIVILEGE
    assert_control_witness(strap, f.witness)


def test_not_control_sensitive_an_instruction_that_only_computes_on_storage():
    f = D.control_sensitive(space(isa("s360"), "ADD 0, 1"))
    assert not f.holds and f.witness is None and f.checked > 0


def test_a_memory_trap_that_changes_m_and_r_does_not_make_an_instruction_control_sensitive():
    f = D.control_sensitive(space(isa("s360"), "MOV 2, 2"))
    assert not f.holds and f.excluded > 0  # its memory traps load a new PSW, but they are excluded


# -- behaviour sensitive --------------------------------------------------------


def test_location_sensitive_and_not_mode_sensitive():
    sp = space(isa("lra67"), "LRA 0, 0")
    f = D.location_sensitive(sp)
    assert f.holds and not D.mode_sensitive(sp).holds
    assert_behavior_witness(isa("lra67"), f.witness, "location")


def test_mode_sensitive_and_not_location_sensitive():
    sp = space(isa("mfpi11"), "RDMODE 0")
    f = D.mode_sensitive(sp)
    assert f.holds and not D.location_sensitive(sp).holds
    assert_behavior_witness(isa("mfpi11"), f.witness, "mode")


def test_behaviour_sensitive_on_a_pair_that_differs_in_mode_and_r_together():
    combo = B.combined_only()
    sp = space(combo, "ODD 0")
    assert not D.location_sensitive(sp).holds and not D.mode_sensitive(sp).holds
    f = D.behavior_sensitive(sp)
    assert f.holds and D.BOTH in f.by_kind
    assert_behavior_witness(combo, f.by_kind[D.BOTH], "both")


def test_not_behaviour_sensitive_reading_the_bound_because_r_plus_x_keeps_b():
    sp = space(B.bound_reader(), "GETB 0")
    assert not D.behavior_sensitive(sp).holds and not D.control_sensitive(sp).holds


def test_storage_outside_the_window_counts_for_location_sensitivity():
    # Reads absolute E[0] whatever R says: its result depends on words the
    # program cannot see -- a pair with x = 0 and other words outside R.
    def peek(c, a):
        c.store(a, c._E[0])
    x = one("PEEK a", peek)
    f = D.location_sensitive(space(x, "PEEK 0"))
    assert f.holds
    assert_behavior_witness(x, f.witness, "location")


# -- sensitive, innocuous ------------------------------------------------------


@pytest.mark.parametrize("name, text", [("retu", "RETU 0"), ("lra67", "LRA 1, 0"), ("mfpi11", "RDMODE 1")])
def test_sensitive_and_not_innocuous(name, text):
    sp = space(isa(name), text)
    assert D.sensitive(sp).holds and not D.innocuous(sp).holds


def test_innocuous_and_not_sensitive():
    sp = space(isa("s360"), "JZ 0, 1")
    assert D.innocuous(sp).holds and not D.sensitive(sp).holds and D.innocuous(sp).witness is None


# -- user and supervisor sensitive --------------------------------------------


def test_user_sensitive_but_not_supervisor_sensitive():
    widen = B.user_widen()
    sp = space(widen, "WIDEN")
    u, s = D.user_sensitive(sp), D.supervisor_sensitive(sp)
    assert u.holds and not s.holds
    assert u.witness.executions[0].before.M is U
    assert_control_witness(widen, u.witness)


def test_supervisor_sensitive_but_not_user_sensitive():
    sp = space(isa("pdp10"), "JRSTU 1")
    assert D.supervisor_sensitive(sp).holds and not D.user_sensitive(sp).holds


def test_a_mode_sensitivity_pair_makes_an_instruction_both_user_and_supervisor_sensitive():
    sp = space(isa("mfpi11"), "RDMODE 0")
    assert D.user_sensitive(sp).holds and D.supervisor_sensitive(sp).holds


def test_every_definition_quotes_the_paper_and_names_its_section():
    from trapvisor.theory.reports import definition_source

    for name, fn in D.DEFINITIONS.items():
        quote, section = definition_source(fn)
        assert quote and section and "section" in section, name
    assert '"' in D.memory_trap.__doc__ and "section 2" in D.memory_trap.__doc__
