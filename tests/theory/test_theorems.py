"""Theorems 1-3: each condition on an ISA where it holds and one where it fails, the verdicts
(proven within the bounds, refuted, explained), and the contradiction alarm."""

import pytest

from trapvisor.theory.classifier import classify
from trapvisor.theory.formal_machine import Machine, Mode
from trapvisor.theory.theorems import (
    CONTRADICTION, EXPLAINED, PROVEN, REFUTED, THEOREM_1, THEOREM_2, THEOREM_3, check_theorems, theorem_1,
    theorem_2, theorem_3,
)

from . import built_isas as B
from .helpers import SMALL, SMALL_PROGRAMS, assert_not_privileged_witness, classified, isa


def theorems(isa_, programs=20, classification=None):
    c = classification or classify(isa_, bounds=SMALL)
    return check_theorems(isa_, classification=c, program_bounds=SMALL_PROGRAMS, programs=programs)


@pytest.fixture(scope="module")
def report():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = theorems(isa(name), classification=classified(name))
        return cache[name]
    return get


def test_the_statements_are_the_papers_wording():
    assert THEOREM_1.startswith("For any conventional third generation computer, a virtual machine monitor")
    assert "(a) virtualizable, and (b) a VMM without any timing dependencies" in THEOREM_2
    assert "user sensitive instructions are a subset of the set of privileged instructions" in THEOREM_3
    for fn, n in ((theorem_1, 1), (theorem_2, 2), (theorem_3, 3)):
        assert f"Theorem {n}" in fn.__doc__ and '"' in fn.__doc__


# -- the conditions, each on a case that holds and one that fails ------------


def test_theorem_1_condition_holds_on_s360_and_fails_on_retu_naming_retu():
    assert theorem_1(classified("s360")).holds
    c = theorem_1(classified("retu"))
    assert not c.holds and [o.instruction for o in c.offenders] == ["RETU"]
    assert_not_privileged_witness(isa("retu"), c.offenders[0].not_privileged)


def test_theorem_2_condition_holds_on_s360_and_fails_on_pdp10():
    assert theorem_2(classified("s360")).holds and "no clock" in theorem_2(classified("s360")).reason
    assert not theorem_2(classified("pdp10")).holds


def test_theorem_3_condition_holds_on_pdp10_and_fails_on_retu():
    t = theorem_3(classified("pdp10"))
    assert t.holds and "JRSTU" in t.reason  # named as sensitive from supervisor mode only
    assert not theorem_3(classified("retu")).holds


# -- verdicts against the evidence -------------------------------------------


def test_s360_is_proven_within_the_bounds_for_all_three_theorems(report):
    r = report("s360")
    for t in r.theorems:
        assert t.holds and t.status == PROVEN, t.number
        bounded = t.evidence[0]
        assert bounded.exhaustive and bounded.programs == bounded.total > 500 and bounded.held
    assert r[2].evidence[0].nesting == 1 and r[3].evidence[0].mode == "hybrid"


@pytest.mark.parametrize("name", ["retu", "lra67", "mfpi11", "pdp10"])
def test_each_flawed_isa_is_refuted_for_theorem_1_with_a_counterexample_that_replays(name, report):
    t = report(name)[1]
    assert not t.holds and t.status == REFUTED
    d = t.counterexample
    assert d is not None and d.bare_after != d.vmm_after
    assert Machine(isa(name), len(d.before.E)).step(d.before).after == d.bare_after
    rows = d.side_by_side()
    assert rows[0][1] == "(start)" and rows[-1][3] != "same" and all(r[3] == "same" for r in rows[1:-1])


def test_pdp10_is_refuted_for_theorem_1_and_proven_for_theorem_3(report):
    r = report("pdp10")
    assert r[1].status == REFUTED and r[3].status == PROVEN


def test_theorem_1_is_sufficient_not_necessary_the_paged_isa_explains_itself(report):
    t = report("paged")[1]
    assert not t.holds and t.status == EXPLAINED and all(e.held for e in t.evidence)
    assert t.remark.startswith("Sufficient, not necessary") and "even" in t.remark


def test_theorem_3_is_sufficient_not_necessary_the_mode_sensitive_example(report):
    t = report("mfpi11")[3]
    assert not t.holds and t.status == EXPLAINED


def test_the_supervisor_trap_isa_is_refuted_where_the_old_reading_said_theorem_1_holds():
    r = theorems(B.supervisor_trap())
    assert not r[1].holds and r[1].status == REFUTED
    assert "STRAP" in r[1].counterexample.instruction


def test_the_combined_pair_isa_is_refuted_by_replaying_its_witness():
    r = theorems(B.combined_only())
    t = r[1]
    assert not t.holds and t.status == REFUTED
    replay = next(e for e in t.evidence if "witness" in e.program_set)
    assert not replay.equivalent  # the bounded programs never start with b = 0 at l = 0; the witness does


# -- the alarm ---------------------------------------------------------------


def test_alarm_when_the_condition_holds_and_the_monitor_is_not_equivalent():
    r = theorems(B.size_leak())
    assert r[1].holds and r[1].status == CONTRADICTION and r in [r] and r.contradictions
    assert "STQ" in r[1].counterexample.instruction and "diverges" in r[1].contradiction


def test_alarm_when_an_instruction_is_privileged_only_vacuously_yet_breaks_the_monitor():
    c = classify(B.vacuously_privileged(), bounds=SMALL)
    assert c["VAC"].privileged and c["VAC"].vacuous and c["VAC"].sensitive
    r = theorems(B.vacuously_privileged(), classification=c)
    assert r[1].status == CONTRADICTION


def test_alarm_when_the_condition_fails_and_no_program_tells_the_monitor_apart():
    r = theorems(B.user_trap_on_zero())
    t = r[1]
    assert not t.holds and t.status == CONTRADICTION and all(e.held for e in t.evidence)
    assert "no program tells" in t.contradiction and "UTRAP" in t.contradiction


def test_no_alarm_when_the_isa_explains_why_the_monitor_works_without_the_condition():
    why = "the user-mode trap reaches the monitor, which interprets the no-op"
    r = theorems(B.user_trap_on_zero(notes={"full": why, "hybrid": why}))
    assert r[1].status == EXPLAINED and why in r[1].remark and not r.contradictions


def test_a_sampled_classification_never_claims_a_theorem_is_proven():
    c = classify(isa("pdp10"), samples=20)
    r = check_theorems(isa("pdp10"), classification=c, program_bounds=SMALL_PROGRAMS, programs=5)
    assert not r[1].holds  # an offender found by sampling is still a witness
    assert r[3].holds and "if none exists" in r[3].conclusion and r[3].status != PROVEN


def test_theorem_report_serialises_to_json_with_witnesses_and_the_counterexample():
    import json

    j = json.loads(json.dumps(theorems(isa("lra67"), programs=5).to_json()))
    t1 = j["theorems"][0]
    assert t1["condition_holds"] is False and t1["status"] == REFUTED
    assert t1["offenders"][0]["sensitive_witness"]["executions"]
    assert t1["counterexample"]["side_by_side"][0]["instruction"] == "(start)"
    assert j["program_bounds"]["q"] == 3


def test_planting_a_user_mode_flaw_flips_both_theorems():
    r = theorems(B.user_widen(), programs=0)
    assert not r[1].holds and not r[3].holds
    assert r[3].offenders[0].sensitivity.executions[0].before.M is Mode.U
