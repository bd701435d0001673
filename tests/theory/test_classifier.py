"""The definitions of Popek & Goldberg 1974, applied by the classifier.

Every positive verdict's witness is re-executed on the machine here and
checked against the definition, so these tests fail if either the verdicts or
the witnesses go wrong.
"""


from trapvisor.theory.adapter import Bounds, FormalAdapter
from trapvisor.theory.classifier import classify
from trapvisor.theory.isa import ISA
from trapvisor.theory.formal_machine import Mode

from .helpers import (
    SMALL, assert_behavior_witness, assert_control_witness, assert_not_privileged_witness,
    assert_privileged_example, classified, isa,
)


def one_instruction_isa(signature, semantics):
    x = ISA("probe", "one instruction")
    x.add(signature, semantics)
    return x


# -- privileged ----------------------------------------------------------


def test_a_user_mode_nop_is_not_privileged_it_must_trap():
    x = one_instruction_isa("NOP", lambda c: None)
    v = classify(x, bounds=SMALL)["NOP"]
    assert not v.privileged
    assert v.privileged_witness.definition == "not privileged"
    assert_not_privileged_witness(x, v.privileged_witness)
    assert v.innocuous


def test_an_instruction_that_merely_does_nothing_in_user_mode_is_not_privileged():
    def sup_jump(c, t):
        if c.mode is Mode.S:
            c.jump(t)

    x = one_instruction_isa("SJMP t", sup_jump)
    v = classify(x, bounds=SMALL)["SJMP"]
    assert not v.privileged
    w = v.privileged_witness
    assert_not_privileged_witness(x, w)
    assert not w.executions[1].trapped  # the user-mode half ran without trapping


def test_supervisor_only_instructions_are_privileged_with_an_example_pair():
    for name in ("LPSW", "SETR", "SPSW"):
        v = classified("s360")[name]
        assert v.privileged and not v.vacuous and v.pairs > 0
        assert_privileged_example(isa("s360"), v.privileged_witness)


def test_memory_trapping_executions_are_excluded_from_the_privilege_pairs():
    # Traps in user mode, but in supervisor mode memory-traps whenever the
    # operand is outside R: those pairs must not refute privilege.
    def guarded_load(c, a):
        c.supervisor_only()
        c.load(a)

    x = one_instruction_isa("GL a", guarded_load)
    v = classify(x, bounds=SMALL)["GL"]
    assert v.privileged and v.pairs > 0


def test_privileged_holds_vacuously_when_every_pair_memory_traps():
    # Touches address 63 first: every execution memory-traps on a small machine.
    def far(c):
        c.load(63)

    x = one_instruction_isa("FAR", far)
    v = classify(x, bounds=SMALL)["FAR"]
    assert v.privileged and v.vacuous and v.pairs == 0
    assert v.innocuous  # nothing happens without a trap


def test_an_instruction_that_traps_in_both_modes_is_not_privileged():
    def always(c):
        from trapvisor.theory.formal_machine import PrivilegeTrap
        raise PrivilegeTrap("always")

    x = one_instruction_isa("SVC", always)
    v = classify(x, bounds=SMALL)["SVC"]
    assert not v.privileged
    assert v.privileged_witness.executions[0].trapped  # supervisor mode trapped too


# -- sensitivity ---------------------------------------------------------


def test_control_sensitive_witness_changes_r_or_m_without_trapping():
    for name, instr in (("retu", "RETU"), ("pdp10", "JRSTU"), ("s360", "LPSW"), ("s360", "SETR")):
        v = classified(name)[instr]
        assert v.control is not None
        assert_control_witness(isa(name), v.control)


def test_retu_is_control_sensitive_from_user_mode_and_jrstu_only_from_supervisor_mode():
    retu = classified("retu")["RETU"]
    assert retu.user is not None and retu.user.executions[0].before.M is Mode.U
    assert_control_witness(isa("retu"), retu.user)
    jrstu = classified("pdp10")["JRSTU"]
    assert jrstu.user is None and jrstu.supervisor is not None
    assert jrstu.supervisor.executions[0].before.M is Mode.S


def test_location_sensitive_witness_moves_the_same_visible_storage():
    for name, instr in (("lra67", "LRA"), ("paged", "LPO"), ("s360", "SPSW")):
        v = classified(name)[instr]
        assert v.location is not None and v.mode is None
        assert_behavior_witness(isa(name), v.location, "location")


def test_mode_sensitive_witness_differs_only_in_mode():
    v = classified("mfpi11")["RDMODE"]
    assert v.mode is not None and v.location is None and v.control is None
    assert_behavior_witness(isa("mfpi11"), v.mode, "mode")


def test_mode_sensitive_counts_as_both_user_and_supervisor_sensitive():
    v = classified("mfpi11")["RDMODE"]
    assert v.user is v.mode and v.supervisor is v.mode


def test_trapping_executions_do_not_make_a_privileged_instruction_mode_sensitive():
    # LPSW traps in user mode and not in supervisor mode; that difference is
    # privilege, not behaviour sensitivity.
    for instr in ("LPSW", "SETR", "SPSW"):
        v = classified("s360")[instr]
        assert v.mode is None and v.user is None


def test_a_bound_query_is_not_location_sensitive_because_r_plus_x_keeps_b():
    def getb(c, a):
        c.store(a, c.R.b)

    x = one_instruction_isa("GETB a", getb)
    v = classify(x, bounds=SMALL)["GETB"]
    assert v.innocuous


def test_ordinary_instructions_of_s360_are_innocuous():
    c = classified("s360")
    for name in ("NOP", "HALT", "LDI", "MOV", "ADD", "SUB", "JMP", "JZ"):
        assert c[name].innocuous and not c[name].privileged


def test_verdicts_agree_between_two_different_exhaustive_bounds():
    a = classify(isa("lra67"), bounds=Bounds(q=2, values=(0, 1, 2)))
    b = classified("lra67")
    for va, vb in zip(a.verdicts, b.verdicts):
        assert (va.privileged, va.sensitive, va.user is None) == (vb.privileged, vb.sensitive, vb.user is None)


def test_the_bounds_are_reported_with_the_verdicts():
    c = classified("s360")
    assert c.method == "exhaustive"
    assert "q=3" in c.scope and "{0..1}" in c.scope
    j = c.to_json()
    assert j["scope"]["q"] == 3 and j["scope"]["values"] == [0, 1]


# -- the sampled engine --------------------------------------------------


def test_sampled_search_finds_witnesses_on_a_machine_too_large_to_enumerate():
    c = classify(isa("lra67"), samples=60)
    assert c.method == "sampled" and "q=64" in c.scope
    v = c["LRA"]
    assert v.location is not None and not v.privileged
    assert_behavior_witness(isa("lra67"), v.location, "location")
    assert len(v.location.executions[0].before.E) == 64


def test_sampled_search_says_absence_is_not_proof():
    c = classify(isa("s360"), samples=20)
    assert "absence is not proof" in c.caveat
    assert c.to_json()["method"] == "sampled"


def test_sampled_search_refutes_privilege_for_a_sensitive_unprivileged_instruction():
    c = classify(isa("pdp10"), samples=40)
    v = c["JRSTU"]
    assert v.control is not None and not v.privileged
    assert_not_privileged_witness(isa("pdp10"), v.privileged_witness)


def test_an_adapter_without_enumeration_is_classified_by_sampling():
    class Bridge(FormalAdapter):
        supports_exhaustive = False

    c = classify(Bridge(isa("mfpi11"), sample_q=16), samples=30)
    assert c.method == "sampled"
    assert c["RDMODE"].mode is not None
