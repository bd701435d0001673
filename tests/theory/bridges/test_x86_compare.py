"""Our derived x86 table beside Robin and Irvine's: every row there, every difference explained,
under every reading, and no note printed beside a row it would contradict."""

import json

import pytest

from trapvisor.theory.bridges import x86_compare, x86_report
from trapvisor.theory.bridges.x86_compare import ROBIN_IRVINE, ROBIN_IRVINE_NAMES, SDM_NAME
from trapvisor.theory.bridges.x86_forms import forms
from trapvisor.cli.theory import main


@pytest.fixture(scope="module")
def standard():
    return x86_report.run(seed=0)


def test_their_list_is_the_18_mnemonics_in_two_groups():
    assert len(ROBIN_IRVINE_NAMES) == 18 == len(set(ROBIN_IRVINE_NAMES))
    groups = {g for _, g, _ in ROBIN_IRVINE}
    assert groups == {x86_compare.SENSITIVE_REGISTER, x86_compare.PROTECTION}
    assert [n for n, g, _ in ROBIN_IRVINE if g == x86_compare.SENSITIVE_REGISTER] == \
        ["SGDT", "SIDT", "SLDT", "SMSW", "PUSHF", "POPF"]


def test_every_row_of_theirs_and_every_derived_instruction_has_a_row(standard):
    rows = standard.comparison()
    names = [r.instruction for r in rows]
    assert names[:18] == list(ROBIN_IRVINE_NAMES)
    assert set(names) == set(ROBIN_IRVINE_NAMES) | standard.derived
    for r in rows:
        assert r.theirs == (r.instruction in ROBIN_IRVINE_NAMES) and r.ours == (r.instruction in standard.derived)
        assert (r.agreement == "agree") == (r.theirs and r.ours)


def test_every_difference_is_explained_in_words_and_every_agreement_says_why(standard):
    for r in standard.comparison():
        assert r.explanation and r.explanation != "UNEXPLAINED", r.instruction
        if r.agreement != "agree":
            assert len(r.explanation) > 40, r.instruction
        else:  # their reason read in the paper's terms names a kind the run found
            assert any(f"{k} sensitive" in r.explanation for k in r.kinds), r.instruction


def _relevant(report):
    """The forms of every instruction on either list (a shorter run for the readings)."""
    wanted = set(ROBIN_IRVINE_NAMES) | report.derived | {"CLI", "STI"}
    return [f.name for f in forms() if SDM_NAME.get(f.mnemonic, f.mnemonic) in wanted]


@pytest.mark.parametrize("reading", [
    {"software_interrupts_trap": False}, {"popf_if": "control"}, {"user_cpl": 1}, {"user_cpl": 2},
    {"user_iopl": None},
])
def test_every_difference_is_explained_under_every_reading(standard, reading):
    r = x86_report.run(names=_relevant(standard), profile_states=0, **reading)
    for row in r.comparison():
        assert row.explanation != "UNEXPLAINED", (reading, row.instruction)
        if row.agreement != "agree":
            assert row.explanation, (reading, row.instruction)


def test_the_int_n_explanation_follows_the_reading(standard):
    trap = next(r for r in standard.comparison() if r.instruction == "INT n")
    assert trap.agreement == "on their list, not derived" and "--int-n trap" in trap.explanation
    assert "--int-n gate" in x86_compare.DIFFERENCES["INT n"]({"software_interrupts_trap": False})


def test_no_note_contradicts_the_row_beside_it(standard):
    shown, withheld = x86_compare.notes(standard)
    assert not withheld and {n for n, _, _ in shown} == set(x86_compare.NOTES) & {g.name for g in standard.groups}
    # and a note whose assumption fails is withheld, not printed
    cli = standard["CLI"]
    expect, _ = x86_compare.NOTES["CPUID"]
    assert not expect(cli)


def test_theory_x86_compare_prints_the_tables_side_by_side(capsys):
    names = [f.name for f in forms() if SDM_NAME.get(f.mnemonic, f.mnemonic) in ("SGDT", "LSS", "INT n")]
    import functools

    run = x86_report.run
    x86_report.run = functools.partial(run, names=names, workers=1)
    try:
        assert main(["x86", "--compare", "robin-irvine", "--format", "markdown"]) == 0
        out = capsys.readouterr().out
        assert "| SGDT | sensitive register instruction |" in out and "| LSS | not listed |" in out
        assert "Readings: --int-n trap, --popf-if behaviour, --user-cpl 3, --user-iopl 0." in out
        assert main(["x86", "--json", "--int-n", "gate"]) == 0
        rows = {r["instruction"]: r for r in json.loads(capsys.readouterr().out)}
        assert rows["INT n"]["agreement"] == "agree"
    finally:
        x86_report.run = run
