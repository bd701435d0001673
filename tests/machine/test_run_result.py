"""One run result for the simulated PC and KVM, and one exit-status rule for every backend."""

import pytest

from trapvisor.machine.run_result import RunResult, exit_status
from trapvisor.vmm.techniques.base import TechniqueResult
from trapvisor.cli.summaries import report_technique_run


@pytest.mark.parametrize("code, reason, kw, status", [
    (7, None, {}, 7),                                   # the guest's debug-exit code wins
    (None, "time limit", {}, 3),
    (None, "instruction limit", {}, 3),
    (None, "triple fault", {}, 4),
    (None, "halted forever with interrupts off", {}, 4),
    (None, "stopped from another thread", {}, 0),
    (None, "reset", {}, 0),
    (None, "KVM_EXIT_SHUTDOWN", {"problem": True}, 4),
    (1, None, {"interrupted": True}, 130),              # Ctrl-C beats everything
])
def test_exit_status_rule(code, reason, kw, status):
    assert exit_status(code, reason, **kw) == status
    assert RunResult(code, reason, **kw).exit_status == status


def test_the_pc_and_kvm_return_the_same_type():
    from trapvisor.kvm import runner
    from trapvisor.machine import pc
    assert pc.RunResult is runner.RunResult is RunResult


def test_a_technique_at_its_time_limit_exits_like_the_bare_pc(capsys):
    r = TechniqueResult("native", "standard", b"", None, "time limit", "", 10, 10, 10, 0.1)
    assert report_technique_run(r, quiet=True) == 3
    r.stop_reason = "triple fault"
    assert report_technique_run(r, quiet=True) == 4


def test_the_pc_fills_summary_and_dump_on_a_failure():
    from trapvisor.guests import resolve_kernel
    from trapvisor.machine.pc import run_kernel
    res = run_kernel(resolve_kernel("guest:triple-fault"), max_instructions=1_000_000)
    assert res.stop_reason == "triple fault" and res.problem and res.exit_status == 4
    assert any(line.startswith("EIP=") for line in res.dump)
    assert "instructions" in res.summary[0]
