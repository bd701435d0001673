"""The classifier: the definitions applied to every instance of every opcode, exhaustively or by sampling.

Every positive verdict's witness is re-executed on the machine and checked
against the definition, so these tests fail if either the verdicts or the
witnesses go wrong.
"""

import pytest

from trapvisor.theory.adapter import Bounds, FormalAdapter
from trapvisor.theory.classifier import classify
from trapvisor.theory.formal_machine import Mode

from . import built_isas as B
from .helpers import (
    BUNDLED, SMALL, assert_behavior_witness, assert_control_witness, assert_not_privileged_witness,
    assert_privileged_example, classified, isa,
)

S, U = Mode.S, Mode.U


@pytest.mark.parametrize("name", BUNDLED)
def test_every_witness_of_every_bundled_isa_replays_on_the_machine(name):
    i, c = isa(name), classified(name)
    for v in c.verdicts:
        if v.control:
            assert_control_witness(i, v.control)
        if v.location:
            assert_behavior_witness(i, v.location, "location")
        if v.mode:
            assert_behavior_witness(i, v.mode, "mode")
        if v.privileged and not v.vacuous:
            assert_privileged_example(i, v.privileged_witness)
        if not v.privileged:
            assert_not_privileged_witness(i, v.privileged_witness)


def test_the_flaw_of_each_bundled_isa_is_its_only_sensitive_unprivileged_instruction():
    flaw = {"s360": None, "retu": "RETU", "lra67": "LRA", "mfpi11": "RDMODE", "pdp10": "JRSTU", "paged": "LPO"}
    for name, instr in flaw.items():
        offenders = [v.name for v in classified(name).verdicts if v.unprivileged_sensitive is not None]
        assert offenders == ([instr] if instr else []), name


def test_the_privileged_s360_instructions_are_sensitive_through_their_traps():
    # The paper excludes only memory traps: LPSW's user-mode trap loads a new
    # PSW, which changes M and R -- control sensitive, and privileged.
    for name in ("LPSW", "SETR", "SPSW"):
        v = classified("s360")[name]
        assert v.privileged and v.control is not None and v.control.executions[0].trapped


def test_an_opcode_offends_only_through_an_instance_that_is_sensitive_and_not_privileged():
    # SPY traps in user mode unless its operand is 0, and reveals l: SPY 0 is
    # unprivileged but innocuous, SPY 1 privileged and sensitive -- no instance is both.
    def spy(c, a):
        if a:
            c.supervisor_only()
            c.store(a, c.R.l)
    x = B.with_instruction("spy", "SPY a", spy)
    v = classify(x, bounds=SMALL)["SPY"]
    assert not v.privileged and v.sensitive and v.unprivileged_sensitive is None


def test_the_combined_pair_instruction_is_classified_sensitive_and_unprivileged():
    v = classify(B.combined_only(), bounds=SMALL)["ODD"]
    assert v.location is None and v.mode is None and v.combined is not None
    assert v.unprivileged_sensitive is v.combined
    assert_behavior_witness(B.combined_only(), v.combined, "both")


def test_an_instruction_that_traps_in_supervisor_mode_only_is_sensitive_and_unprivileged():
    v = classify(B.supervisor_trap(), bounds=SMALL)["STRAP"]
    assert not v.privileged and v.control is not None and v.unprivileged_sensitive is not None


def test_verdicts_agree_between_two_different_exhaustive_bounds():
    a = classify(isa("lra67"), bounds=Bounds(q=2, values=(0, 1, 2)))
    b = classified("lra67")
    for va, vb in zip(a.verdicts, b.verdicts):
        assert (va.privileged, va.sensitive, va.user is None) == (vb.privileged, vb.sensitive, vb.user is None)


def test_the_bounds_are_reported_with_the_verdicts():
    c = classified("s360")
    assert c.method == "exhaustive" and "q=3" in c.scope and "{0..1}" in c.scope
    j = c.to_json()
    assert j["scope"]["q"] == 3 and j["scope"]["values"] == [0, 1]
    assert c.executions > 0 and all(v.details for v in c.verdicts)


# -- the sampled engine --------------------------------------------------


def test_sampled_search_finds_witnesses_on_a_machine_too_large_to_enumerate():
    c = classify(isa("lra67"), samples=60)
    assert c.method == "sampled" and "q=64" in c.scope
    v = c["LRA"]
    assert v.location is not None and not v.privileged
    assert_behavior_witness(isa("lra67"), v.location, "location")
    assert len(v.location.executions[0].before.E) == 64


def test_sampled_search_says_absence_is_not_proof_and_replays_from_its_seed():
    a, b = classify(isa("s360"), samples=20, seed=5), classify(isa("s360"), samples=20, seed=5)
    assert "absence is not proof" in a.caveat and a.to_json()["method"] == "sampled"
    assert [v.to_json(a.adapter) for v in a.verdicts] == [v.to_json(b.adapter) for v in b.verdicts]


def test_sampled_search_refutes_privilege_for_a_sensitive_unprivileged_instruction():
    c = classify(isa("pdp10"), samples=40)
    v = c["JRSTU"]
    assert v.control is not None and not v.privileged
    assert_not_privileged_witness(isa("pdp10"), v.privileged_witness)


def test_an_adapter_without_enumeration_is_classified_by_sampling():
    class Bridge(FormalAdapter):
        supports_exhaustive = False

    c = classify(Bridge(isa("mfpi11"), sample_q=16), samples=30)
    assert c.method == "sampled" and c["RDMODE"].mode is not None
