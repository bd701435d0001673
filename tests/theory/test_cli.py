"""``trapvisor theory ...`` through the theory CLI's own entry point."""

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from trapvisor.cli.theory import PROGRAMS_DIR, main

SMALL = ["--q", "3", "--values", "0-1"]
SMALL_PROGRAMS = ["--program-q", "3", "--programs", "10"]


def run(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_isas_lists_every_bundled_isa_and_the_x86_plug_in(capsys):
    status, out, _ = run(capsys, "isas", "--json")
    names = [r["name"] for r in json.loads(out)]
    assert status == 0 and names[:6] == ["s360", "retu", "lra67", "mfpi11", "pdp10", "paged"] and "x86" in names


def test_classify_text_prints_bounds_witnesses_and_caveat(capsys):
    status, out, _ = run(capsys, "classify", "--isa", "lra67", *SMALL)
    assert status == 0
    assert "q=3 words, each word in {0..1}" in out
    assert "location sensitive + user sensitive:" in out and "location sensitive + supervisor sensitive:" in out
    assert "i(S2) = E=[" in out and "Exhaustive within these bounds" in out


@pytest.mark.parametrize("fmt", ["markdown", "csv", "latex", "json"])
def test_classify_prints_the_same_verdicts_in_every_format(capsys, fmt):
    status, out, _ = run(capsys, "classify", "--isa", "pdp10", "--format", fmt, *SMALL)
    assert status == 0
    if fmt == "json":
        j = json.loads(out)
        jrstu = next(i for i in j["instructions"] if i["instruction"] == "JRSTU")
        assert jrstu["supervisor_sensitive"] and not jrstu["user_sensitive"] and not jrstu["privileged"]
        return
    if fmt == "csv":
        rows = list(csv.reader(io.StringIO(out)))
    elif fmt == "markdown":
        rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("| ")]
    else:
        assert out.lstrip().startswith(r"\begin{table}") and r"\end{tabular}" in out
        rows = [[c.strip().rstrip("\\").strip() for c in line.split("&")] for line in out.splitlines() if "&" in line]
    header, body = rows[0], {r[0]: r for r in rows[1:]}
    assert "textbf" in header[0] or header[0] == "instruction"
    jrstu = dict(zip([h.replace(r"\textbf{", "").rstrip("}") for h in header], body["JRSTU"]))
    assert jrstu["privileged"] == "no" and jrstu["control"] == "yes" and jrstu["user"] == "no"
    assert len(body) == 12


def test_classify_with_samples_says_it_is_sampling(capsys):
    status, out, _ = run(capsys, "classify", "--isa", "mfpi11", "--samples", "15", "--no-witnesses")
    assert status == 0 and "sampled states per instruction" in out and "absence is not proof" in out


def test_theorems_reports_each_theorem_with_its_verdict_and_a_side_by_side_counterexample(capsys):
    status, out, _ = run(capsys, "theorems", "--isa", "pdp10", *SMALL, *SMALL_PROGRAMS)
    assert status == 0
    assert "Theorem 1" in out and "Theorem 2" in out and "Theorem 3" in out
    assert "offending instruction JRSTU" in out and "refuted by a counterexample program" in out
    assert "bare machine" in out and "under the monitor" in out and "proven within the bounds" in out


def test_theorems_exits_3_and_prints_the_witness_when_classification_and_monitor_disagree(capsys):
    status, out, err = run(capsys, "theorems", "--isa", str(PROGRAMS_DIR / "size_leak_isa.py"), *SMALL,
                           *SMALL_PROGRAMS)
    assert status == 3
    assert "CONTRADICTION" in out and "STQ" in out and "bare machine" in out
    assert err.strip().splitlines()[-1].startswith("trapvisor theory: contradiction: Theorem 1")


def test_theorems_json_gives_the_status_of_each_theorem(capsys):
    status, out, _ = run(capsys, "theorems", "--isa", "paged", "--json", *SMALL, *SMALL_PROGRAMS)
    t1 = json.loads(out)["theorems"][0]
    assert status == 0 and not t1["condition_holds"] and t1["status"] == "explained"
    assert t1["remark"].startswith("Sufficient, not necessary")


def test_explain_gives_every_definition_with_the_papers_words_and_the_witness(capsys):
    status, out, _ = run(capsys, "explain", "LRA", "--isa", "lra67", *SMALL)
    assert status == 0
    assert "privileged: no" in out and "location sensitive: yes" in out and "mode sensitive: no" in out
    assert 'definition, section 2' in out and "i(S2) = E=[" in out
    assert "conclusion: LRA is sensitive" in out and "breaks Theorem 1's condition" in out
    status, out, _ = run(capsys, "explain", "lpsw", "--isa", "s360", "--json", *SMALL)
    j = json.loads(out)
    assert status == 0 and j["definitions"]["privileged"]["holds"] and j["definitions"]["privileged"]["witness"]
    status, out, _ = run(capsys, "explain", "RDMODE", "--isa", "mfpi11", "--format", "csv", *SMALL)
    rows = {r[0]: r for r in csv.reader(io.StringIO(out))}
    assert status == 0 and rows["mode sensitive"][1] == "yes" and rows["location sensitive"][1] == "no"
    assert "S2 = E=" in rows["mode sensitive"][4] and rows["privileged"][1] == "no"


def test_run_bundled_program_bare_and_under_the_monitor(capsys):
    status, out, _ = run(capsys, "run", "--isa", "s360", "countdown", "--vmm")
    assert status == 0
    assert "halted (fixed point)" in out and "LPSW 5" in out
    assert "the guest's final state equals the bare run's" in out
    assert "16 of 18 guest instructions executed directly" in out


def test_run_shows_where_equivalence_breaks_on_a_flawed_isa(capsys):
    status, out, _ = run(capsys, "run", "--isa", "mfpi11", "whoami", "--vmm", "--json")
    j = json.loads(out)
    assert status == 0 and j["vmm"]["equivalent"] is False
    assert j["vmm"]["divergence"]["step"] == 1 and j["vmm"]["divergence"]["instruction"] == "RDMODE 6"


def test_run_nested_and_hybrid(capsys):
    status, out, _ = run(capsys, "run", "--isa", "s360", "countdown", "--nested", "2", "--json")
    j = json.loads(out)
    assert status == 0 and j["vmm"]["equivalent"] and j["vmm"]["nesting"] == 2
    status, out, _ = run(capsys, "run", "--isa", "pdp10", "jrst_return", "--hybrid", "--json")
    assert status == 0 and json.loads(out)["vmm"]["equivalent"]


def test_vmm_command_measures_the_three_properties(capsys):
    status, out, _ = run(capsys, "vmm", "--isa", "s360", "--programs", "20", "--json")
    j = json.loads(out)
    assert status == 0
    assert [r["monitor"] for r in j["runs"]] == ["full", "hybrid", "full"] and j["runs"][2]["nesting"] == 2
    assert all(r["diverged"] == 0 and r["resource_violations"] == 0 for r in j["runs"])
    assert 0 < j["runs"][0]["efficiency"] <= 1 and j["two_vms"]["equivalent"] == j["two_vms"]["guests"]
    status, out, _ = run(capsys, "vmm", "--isa", "s360", "--programs", "8", "--format", "markdown")
    assert status == 0 and "| recipe VMM | 8 | 8/8 | held |" in out


def test_user_defined_isa_file(capsys):
    status, out, _ = run(capsys, "classify", "--isa", str(PROGRAMS_DIR / "toy_isa.py"), "--json", *SMALL)
    j = json.loads(out)
    assert status == 0 and j["isa"] == "toy"
    getb = next(i for i in j["instructions"] if i["instruction"] == "GETB")
    lpsw = next(i for i in j["instructions"] if i["instruction"] == "LPSW")
    assert getb["innocuous"] and lpsw["privileged"]


@pytest.mark.parametrize("argv, message", [
    (["classify", "--isa", "vax"], "unknown ISA 'vax'"),
    (["classify", "--isa", "s360", "--q", "9"], "--q 9"),
    (["classify", "--isa", "s360", "--values", "a-b"], "--values"),
    (["classify", "--isa", "s360", "--values", "5-2"], "--values"),
    (["classify", "--isa", "s360", "--values", "99999999-99999999"], "does not fit"),
    (["classify", "--isa", "s360", "--samples", "-3"], "--samples -3"),
    (["classify", "--isa", "s360", "--samples", "0"], "--samples 0"),
    (["classify", "--isa", "s360", "--samples", "4", "--q", "3"], "exclude each other"),
    (["classify", "--isa", "s360", "--int-n", "gate"], "only the x86 bridge"),
    (["classify", "--isa", "s360", "--format", "yaml"], "invalid choice"),
    (["classify", "--isa", "s360", "--q", "abc"], "invalid int value"),
    (["classify"], "required: --isa"),
    (["theorems", "--isa", "s360", "--programs", "-1"], "--programs -1"),
    (["theorems", "--isa", "s360", "--program-q", "9"], "program bound"),
    (["theorems", "--isa", "s360", "--length", "0"], "program bound"),
    (["theorems", "--isa", "s360", "--program-values", "x"], "--program-values"),
    (["theorems", "--isa", "s360", "--steps", "0"], "program bound"),
    (["explain", "FROB", "--isa", "s360"], "no instruction 'FROB'"),
    (["x86", "--compare", "hennessy"], "robin-irvine"),
    (["x86", "--isa", "s360"], "compares the x86 bridge"),
    (["run", "--isa", "s360", "no_such_program"], "no such file and no bundled program"),
    (["run", "--isa", "s360", "countdown", "--nested", "40"], "--nested 40"),
    (["run", "--isa", "s360", "countdown", "--steps", "0"], "--steps 0"),
    (["run", "--isa", "x86", "countdown"], "needs an ISA of the formal machine"),
    (["vmm", "--isa", "s360", "--nested", "50"], "--nested 50"),
    (["vmm", "--isa", "s360", "--programs", "0"], "--programs 0"),
    ([], "required: COMMAND"),
])
def test_bad_input_is_one_line_on_stderr_with_status_2(capsys, argv, message):
    status, out, err = run(capsys, *argv)
    assert status == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_bad_program_and_bad_isa_files_are_one_line_errors(capsys, tmp_path):
    prog = tmp_path / "bad.tv"
    prog.write_text("NOP\nFROB 1\n")
    status, _, err = run(capsys, "run", "--isa", "s360", str(prog))
    assert status == 2 and "bad.tv:2:" in err and len(err.strip().splitlines()) == 1
    isa_file = tmp_path / "broken_isa.py"
    isa_file.write_text("def (:\n")
    status, _, err = run(capsys, "classify", "--isa", str(isa_file))
    assert status == 2 and "SyntaxError" in err and len(err.strip().splitlines()) == 1
    empty = tmp_path / "empty_isa.py"
    empty.write_text("x = 1\n")
    status, _, err = run(capsys, "classify", "--isa", str(empty))
    assert status == 2 and "defines no ISA" in err
    status, _, err = run(capsys, "classify", "--isa", str(tmp_path / "missing.py"))
    assert status == 2 and "no such file" in err


def test_x86_bridge_loads_and_fails_cleanly_in_a_fresh_process():
    root = Path(__file__).resolve().parents[2]
    for argv in (["classify", "--isa", "x86", "--samples", "0"], ["classify", "--isa", "x86", "--q", "3"],
                 ["theorems", "--isa", "x86", "--programs", "5"]):
        p = subprocess.run([sys.executable, "-m", "trapvisor.cli.theory", *argv],
                           capture_output=True, text=True, cwd=root, timeout=60)
        assert p.returncode == 2 and p.stdout == "" and p.stderr.strip().count("\n") == 0, (argv, p.stderr)
        assert "Traceback" not in p.stderr


def test_add_theory_parser_plugs_into_another_argparse_tree():
    import argparse

    from trapvisor.cli.theory import add_theory_parser

    parser = argparse.ArgumentParser(prog="trapvisor")
    add_theory_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["theory", "run", "--isa", "s360", "countdown", "--nested", "1"])
    assert args.nested == 1 and callable(args.func)
