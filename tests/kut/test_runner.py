"""report/kut.py without a machine: the cfg, the console parser, the table, the known-failures list."""

import pytest

from trapvisor.errors import UserError
from trapvisor.report import kut


def test_the_cfg_gives_each_test_its_options():
    tests = {t.name: t for t in kut.load_tests()}
    assert tests["smptest3"].smp == 3 and tests["smptest3"].file == "smptest.flat"
    assert tests["vmexit_cpuid"].append == "cpuid"
    assert tests["asyncpf"].memory_mb == 2048
    assert tests["sieve"].timeout == 180 and tests["sieve"].slow
    # arch = x86_64 sections (access, syscall...) are left out; sectionless kernels come in
    assert "syscall" not in tests and "access" not in tests
    assert {"dummy", "init", "hpet_read_test"} <= set(tests)


def test_select_by_name_or_kernel_and_refuse_an_unknown_one():
    tests = kut.load_tests()
    assert [t.name for t in kut.select(tests, ["eventinj"])] == ["eventinj"]
    assert {t.name for t in kut.select(tests, ["smptest"])} == {"smptest"}
    assert len([t for t in kut.select(tests, ["hyperv_stimer"])]) == 1
    with pytest.raises(UserError, match="no kvm-unit-test named"):
        kut.select(tests, ["nonesuch"])


CONSOLE = """enabling apic\r
PASS: DE exception
FAIL: NMI
PASS: NMI
SKIP: torture test: '-smp X' should be greater than 2
XFAIL: known thing
SUMMARY: 5 tests, 1 unexpected failures, 1 expected failures, 1 skipped
"""


def test_parse_output_numbers_repeated_subtests_and_reads_the_summary():
    subtests, summary = kut.parse_output(CONSOLE)
    assert subtests == [("PASS", "DE exception"), ("FAIL", "NMI"), ("PASS", "NMI #2"),
                        ("SKIP", "torture test: '-smp X' should be greater than 2"), ("XFAIL", "known thing")]
    assert summary.startswith("5 tests, 1 unexpected")


def _outcome(machine, status, lines):
    return kut.Outcome(machine, status, kut.EXIT_VERDICTS.get(status, "TIMEOUT"), lines)


def test_compare_matches_by_name_numbers_aside_and_marks_what_was_not_reached():
    t = kut.KutTest("hpet", "hpet_read_test.flat")
    q = _outcome("qemu", 1, [("PASS", "read test took 0 ms, avg read: 0 ns"), ("PASS", "second")])
    o = _outcome("trapvisor", None, [("PASS", "read test took 3 ms, avg read: 91 ns")])
    rows = kut.compare(t, q, o)
    assert [(r.subtest, r.qemu, r.ours) for r in rows] == [
        ("read test took 0 ms, avg read: 0 ns", "PASS", "PASS"), ("second", "PASS", "-"),
        (kut.EXIT_ROW, "PASS", "TIMEOUT")]
    assert [r.subtest for r in kut.regressions(rows)] == ["second", kut.EXIT_ROW]
    assert kut.regressions(rows, {("hpet", "*"): "why"}) == []
    assert [r.subtest for r in kut.regressions(rows, {("hpet", "second"): "why"})] == [kut.EXIT_ROW]
    assert kut.totals(rows) == {"subtests": 2, "qemu_pass": 2, "ours_pass": 1, "both_pass": 1,
                                "regressions": 1}


def test_a_test_needing_several_cpus_is_not_run_on_the_simulated_pc():
    t = kut.KutTest("smptest", "smptest.flat", smp=2)
    o = kut.run_on_trapvisor(t)
    assert o.ended == kut.NOT_RUN and "2 CPUs" in o.output
    rows = kut.compare(t, _outcome("qemu", 1, [("PASS", "x")]), o)
    assert rows[0].ours == kut.NOT_RUN and rows[0].regression


def test_the_table_renders_in_text_and_markdown():
    rows = [kut.Row("a", "x | y", "PASS", "FAIL")]
    assert "x | y" in kut.render_table(rows).splitlines()[2]
    assert "| a | x \\| y | PASS | FAIL |" in kut.render_table(rows, markdown=True)


def test_known_failures_need_a_reason(tmp_path):
    good = tmp_path / "k.toml"
    good.write_text('[[failure]]\ntest = "realmode"\nsubtest = "*"\nreason = "no real mode"\n')
    assert kut.load_known_failures(good) == {("realmode", "*"): "no real mode"}
    bad = tmp_path / "bad.toml"
    bad.write_text('[[failure]]\ntest = "realmode"\nsubtest = "*"\n')
    with pytest.raises(UserError, match="reason"):
        kut.load_known_failures(bad)


def test_the_repositorys_known_failures_list_is_well_formed_and_names_real_tests():
    from trapvisor.cli.kut import DEFAULT_KNOWN
    names = {t.name for t in kut.load_tests()}
    known = kut.load_known_failures(DEFAULT_KNOWN)
    assert known and all(test in names for test, _ in known)


def test_the_docs_page_carries_totals_known_failures_and_every_row():
    rows = [kut.Row("eventinj", "NMI", "PASS", "PASS"), kut.Row("eventinj", kut.EXIT_ROW, "PASS", "PASS"),
            kut.Row("realmode", kut.EXIT_ROW, "PASS", "stopped: real mode")]
    page = kut.render_doc(rows, {("realmode", "*"): "no real mode"}, "trapvisor kut --write-docs X")
    assert "| now | 1 | 1 | 1 |" in page
    assert "| realmode | * | no real mode |" in page
    assert "| realmode | PASS | stopped: real mode |" in page
    assert "| eventinj | NMI | PASS | PASS |" in page


@pytest.mark.parametrize("args,message", [
    (("kut", "nonesuch"), "no kvm-unit-test named 'nonesuch'"),
    (("kut", "--timeout", "-3"), "bad time limit"),
    (("kut", "--known", "/nonexistent.toml"), "known-failures list"),
])
def test_bad_kut_options_are_one_line_and_status_2(args, message):
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-m", "trapvisor", *args], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "Traceback" not in p.stderr and message in p.stderr
    assert len([line for line in p.stderr.splitlines() if line.strip()]) == 1


def test_list_names_every_test_with_its_options():
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-m", "trapvisor", "kut", "--list"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0
    assert any(line.startswith("smptest3 ") and "-smp 3" in line for line in p.stdout.splitlines())
    assert any(line.startswith("sieve ") and "slow" in line for line in p.stdout.splitlines())
