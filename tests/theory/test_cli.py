"""``trapvisor theory ...`` through the theory CLI's own entry point."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trapvisor.theory.cli import PROGRAMS_DIR, main

SMALL = ["--q", "3", "--values", "0-1"]


def run(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_isas_lists_every_bundled_isa_and_the_x86_plug_in(capsys):
    status, out, _ = run(capsys, "isas", "--json")
    assert status == 0
    names = [r["name"] for r in json.loads(out)]
    assert names[:6] == ["s360", "retu", "lra67", "mfpi11", "pdp10", "paged"] and "x86" in names


def test_classify_table_prints_bounds_witnesses_and_caveat(capsys):
    status, out, _ = run(capsys, "classify", "--isa", "lra67", *SMALL)
    assert status == 0
    assert "q=3 words, each word in {0..1}" in out
    assert "LRA" in out and "location sensitive + user sensitive:" in out
    assert "location sensitive + supervisor sensitive:" in out
    assert "i(S2) = E=[" in out  # a witness, with the resulting state
    assert "Exhaustive within these bounds" in out


def test_classify_json_is_machine_readable(capsys):
    status, out, _ = run(capsys, "classify", "--isa", "pdp10", "--json", *SMALL)
    j = json.loads(out)
    jrstu = next(i for i in j["instructions"] if i["instruction"] == "JRSTU")
    assert status == 0 and j["method"] == "exhaustive" and j["scope"]["values"] == [0, 1]
    assert jrstu["supervisor_sensitive"] and not jrstu["user_sensitive"] and not jrstu["privileged"]
    assert jrstu["witnesses"]["control_sensitive"]["executions"][0]["state"]["M"] == "s"


def test_classify_with_samples_uses_hypothesis_and_says_so(capsys):
    status, out, _ = run(capsys, "classify", "--isa", "mfpi11", "--samples", "15", "--no-witnesses")
    assert status == 0 and "hypothesis search" in out and "absence is not proof" in out


def test_theorems_reports_each_theorem_with_verdict_and_reason(capsys):
    status, out, _ = run(capsys, "theorems", "--isa", "pdp10", "--programs", "20", *SMALL)
    assert status == 0
    assert "Theorem 1" in out and "Theorem 2" in out and "Theorem 3" in out
    assert "offending instruction JRSTU" in out
    assert "a hybrid VMM may be constructed" in out
    assert "sufficient, not necessary" in out


def test_theorems_json_for_the_sufficiency_example(capsys):
    status, out, _ = run(capsys, "theorems", "--isa", "paged", "--programs", "30", "--json", *SMALL)
    t1 = json.loads(out)["theorems"][0]
    assert status == 0 and not t1["condition_holds"] and t1["remark"].startswith("Sufficient, not necessary")


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


def test_user_defined_isa_file(capsys):
    status, out, _ = run(capsys, "classify", "--isa", str(PROGRAMS_DIR / "toy_isa.py"), "--json", *SMALL)
    j = json.loads(out)
    assert status == 0 and j["isa"] == "toy"
    getb = next(i for i in j["instructions"] if i["instruction"] == "GETB")
    lpsw = next(i for i in j["instructions"] if i["instruction"] == "LPSW")
    assert getb["innocuous"] and lpsw["privileged"]


@pytest.mark.parametrize("argv, message", [
    (["classify", "--isa", "x86", "--samples", "0"], "--samples must be at least 1"),
    (["classify", "--isa", "vax"], "unknown ISA 'vax'"),
    (["run", "--isa", "s360", "no_such_program"], "no such file and no bundled program"),
    (["classify", "--isa", "s360", "--values", "a-b"], "--values"),
])
def test_bad_input_is_one_line_on_stderr_with_status_2(capsys, argv, message):
    status, out, err = run(capsys, *argv)
    assert status == 2 and message in err
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


def test_x86_bridge_loads_and_fails_cleanly_in_a_fresh_process():
    root = Path(__file__).resolve().parents[2]
    p = subprocess.run([sys.executable, "-m", "trapvisor.theory.cli", "classify", "--isa", "x86", "--samples", "0"],
                       capture_output=True, text=True, cwd=root, timeout=60)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip().count("\n") == 0 and "--samples must be at least 1" in p.stderr


def test_add_theory_parser_plugs_into_another_argparse_tree():
    import argparse

    from trapvisor.theory.cli import add_theory_parser

    parser = argparse.ArgumentParser(prog="trapvisor")
    add_theory_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["theory", "run", "--isa", "s360", "countdown", "--nested", "1"])
    assert args.nested == 1 and callable(args.func)
