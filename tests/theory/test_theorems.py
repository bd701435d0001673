"""Theorems 1-3 for every bundled ISA, and mutation tests that plant flaws."""

import pytest

from trapvisor.theory.classifier import classify
from trapvisor.theory.isas.s360 import base
from trapvisor.theory.formal_machine import Mode
from trapvisor.theory.theorems import THEOREM_1, THEOREM_2, THEOREM_3, check_theorems

from .helpers import (
    SMALL, assert_behavior_witness, assert_control_witness, assert_not_privileged_witness, classified, isa,
)


def theorems(name, programs=40):
    return check_theorems(isa(name), classification=classified(name), programs=programs)


def test_the_statements_are_the_papers_wording():
    assert THEOREM_1.startswith("For any conventional third generation computer, a virtual machine monitor")
    assert "(a) virtualizable, and (b) a VMM without any timing dependencies" in THEOREM_2
    assert "user sensitive instructions are a subset of the set of privileged instructions" in THEOREM_3


def test_s360_satisfies_all_three_theorems():
    r = theorems("s360")
    assert r[1].holds and r[2].holds and r[3].holds
    assert not r[1].offenders and not r[3].offenders
    assert "no clock" in r[2].reason


@pytest.mark.parametrize("name, instr", [("retu", "RETU"), ("lra67", "LRA"), ("mfpi11", "RDMODE"), ("pdp10", "JRSTU")])
def test_each_flawed_isa_fails_theorem_1_naming_its_flaw_with_witnesses(name, instr):
    r = theorems(name)
    t1 = r[1]
    assert not t1.holds and t1.conclusion == "the theorem does not apply"
    assert [o.instruction for o in t1.offenders] == [instr]
    o = t1.offenders[0]
    assert o.not_privileged is not None
    assert_not_privileged_witness(isa(name), o.not_privileged)
    assert not r[2].holds  # (a) is not established


def test_pdp10_is_hybrid_virtualizable_but_theorem_1_fails():
    r = theorems("pdp10")
    assert not r[1].holds and r[3].holds
    assert "JRSTU" in r[3].reason  # named as supervisor-sensitive only


@pytest.mark.parametrize("name", ["retu", "lra67"])
def test_user_sensitive_flaws_fail_theorem_3(name):
    r = theorems(name)
    assert not r[3].holds and r[3].offenders


def test_theorem_1_is_sufficient_not_necessary_the_paged_example():
    r = theorems("paged", programs=60)
    t1 = r[1]
    assert not t1.holds and t1.offenders[0].instruction == "LPO"
    evidence = t1.evidence[0]
    assert evidence.equivalent and evidence.violations == 0
    assert t1.remark.startswith("Sufficient, not necessary")
    assert "even" in t1.remark  # the explanation: partitions at even bases


def test_theorem_3_is_sufficient_not_necessary_the_mode_sensitive_example():
    r = theorems("mfpi11", programs=60)
    t3 = r[3]
    assert not t3.holds and t3.evidence[0].equivalent
    assert t3.remark.startswith("Sufficient, not necessary")


# -- mutation tests --------------------------------------------------------


def planted(name, semantics, signature="LEAK a"):
    mutant = base().extended(name)
    mutant.add(signature, semantics, opcode=13)
    return mutant


def test_planting_a_sensitive_unprivileged_instruction_flips_theorem_1_with_a_witness():
    clean = check_theorems(base(), bounds=SMALL, programs=0)
    assert clean[1].holds

    def leak_mode(c, a):  # reveals the mode, never traps
        c.store(a, 0 if c.mode is Mode.U else 1)

    mutant = planted("mutant", leak_mode)
    r = check_theorems(mutant, bounds=SMALL, programs=30)
    assert not r[1].holds
    (o,) = r[1].offenders
    assert o.instruction == "LEAK"
    assert_behavior_witness(mutant, o.sensitivity, "mode")
    # and the monitor built by the recipe really does break on it
    assert not r[1].evidence[0].equivalent


def test_planting_a_control_sensitive_instruction_in_user_mode_flips_both_theorems():
    from trapvisor.theory.formal_machine import Reloc

    def grow(c, a):  # any mode: widen R without trapping
        c.R = Reloc(c.R.l, c.R.b + 1)

    mutant = planted("grow", grow, "GROW a")
    r = check_theorems(mutant, bounds=SMALL, programs=0)
    assert not r[1].holds and not r[3].holds
    assert_control_witness(mutant, r[3].offenders[0].sensitivity)
    assert r[3].offenders[0].sensitivity.executions[0].before.M is Mode.U


def test_planting_a_flaw_only_in_supervisor_mode_leaves_theorem_3_true():
    def drop(c, t):  # supervisor: drop to user mode; user: a plain jump
        c.jump(t)
        c.mode = Mode.U

    mutant = planted("drop", drop, "DROP t")
    r = check_theorems(mutant, bounds=SMALL, programs=30)
    assert not r[1].holds and r[3].holds
    assert r[1].offenders[0].instruction == "DROP"
    assert r[3].evidence[0].equivalent  # and the hybrid monitor is fine


def test_planting_a_sensitive_but_privileged_instruction_keeps_theorem_1():
    def spy(c, a):  # reveals the mode, but traps in user mode first
        c.supervisor_only()
        c.store(a, c.R.l)

    mutant = planted("spy", spy, "SPY a")
    v = classify(mutant, bounds=SMALL)["SPY"]
    assert v.privileged and v.sensitive
    r = check_theorems(mutant, bounds=SMALL, programs=30)
    assert r[1].holds and r[1].evidence[0].equivalent


def test_theorem_report_serialises_to_json_with_witnesses():
    import json

    r = theorems("lra67", programs=10)
    j = json.loads(json.dumps(r.to_json()))
    t1 = j["theorems"][0]
    assert t1["condition_holds"] is False
    assert t1["offenders"][0]["sensitive_witness"]["executions"]


def test_a_sampled_classification_never_claims_a_theorem_is_proven():
    from trapvisor.theory.classifier import classify

    c = classify(isa("pdp10"), samples=20)
    r = check_theorems(isa("pdp10"), classification=c, programs=0)
    assert not r[1].holds  # an offender found by sampling is still a witness
    assert r[3].holds and "if none exists" in r[3].conclusion and "not proof" in r[3].reason
