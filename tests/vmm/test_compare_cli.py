"""``trapvisor compare`` and ``trapvisor run --technique`` from the command line."""

import json
import subprocess
import sys


def tv(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "trapvisor", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_compare_json_reports_equivalence_efficiency_and_slowdown():
    p = tv("compare", "guest:hello", "--json")
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    rows = {r["technique"]: r for r in data["rows"]}
    kvm = [t for t in rows if t.startswith("kvm")]
    assert set(rows) - set(kvm) == {"native", "emulate", "trap-emulate"}
    # /dev/kvm is usable on these machines: its row is there and never called hardware assist
    # unless the host really has VT-x or AMD-V.
    assert len(kvm) == 1
    cpuinfo = open("/proc/cpuinfo").read()
    if " vmx" not in cpuinfo and " svm" not in cpuinfo:
        assert "software" in kvm[0]
    assert rows[kvm[0]]["direct_share"] == 0 and rows[kvm[0]]["cycles"] is None
    rows = {k: v for k, v in rows.items() if k not in kvm}
    assert all(r["identical"] for r in rows.values())
    assert rows["native"]["direct_share"] == 1.0 and rows["emulate"]["direct_share"] == 0.0
    assert 0 < rows["trap-emulate"]["direct_share"] < 1
    assert rows["trap-emulate"]["cycle_slowdown"] > 1
    assert any("#GP: out" in k for k in rows["trap-emulate"]["traps"])


def test_compare_html_report_has_table_chart_and_timeline(tmp_path):
    out = tmp_path / "r.html"
    p = tv("compare", "guest:hello", "--techniques", "trap-emulate", "--html", str(out))
    assert p.returncode == 0, p.stderr
    page = out.read_text()
    assert "<table>" in page and "<svg" in page and "Monitor events over guest time" in page
    assert "trap-emulate" in page and "<rect" in page


def test_compare_exit_status_is_1_when_a_technique_diverges():
    p = tv("compare", "guest:tvos", "--append", "workload=probe", "--techniques", "trap-emulate")
    assert p.returncode == 1
    assert "no: line 2" in p.stdout


def test_run_with_a_technique_prints_the_guest_and_a_summary():
    p = tv("run", "guest:hello", "--technique", "trap-emulate", "--cpu", "strict")
    assert p.returncode == 1, p.stderr
    assert "Hello from trapvisor" in p.stdout
    assert "trap-emulate, strict cpu" in p.stderr and "% direct" in p.stderr


def test_unknown_technique_and_bad_cost_file_are_one_line_errors(tmp_path):
    p = tv("compare", "guest:hello", "--techniques", "native,warp")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "unknown technique" in p.stderr
    bad = tmp_path / "c.toml"
    bad.write_text("nope = 1\n")
    p = tv("compare", "guest:hello", "--costs", str(bad))
    assert p.returncode == 2 and "unknown cost keys" in p.stderr and "Traceback" not in p.stderr
