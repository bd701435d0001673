"""Every limit holds under ``pv`` whatever the paravirtual guest does."""

from __future__ import annotations

from trapvisor.guests import build_guest
from trapvisor.vmm.costmodel import CostModel
from trapvisor.vmm.run import run_technique


def pv(kernel, cmdline="", **kw):
    return run_technique("pv", str(build_guest(kernel)), cmdline=cmdline, costs=CostModel.default(), **kw)


def test_the_instruction_limit_holds_in_a_busy_kernel():
    r = pv("tvos", "workload=compute iterations=1000", max_instructions=300_000)
    assert r.stop_reason == "instruction limit"
    assert 300_000 <= r.steps <= 300_000 + 1000


def test_the_instruction_limit_holds_in_a_hypercall_storm():
    # pv-attack spends most of its life in hypercalls (2,000 event sends, ...).
    r = pv("pv-attack", max_instructions=20_000)
    assert r.stop_reason == "instruction limit" and r.steps <= 20_000 + 1000


def test_the_time_limit_holds_on_its_own():
    r = pv("tvos", "workload=compute iterations=100000", max_instructions=10**12, max_seconds=0.5)
    assert r.stop_reason == "time limit"
    assert r.seconds < 5, f"a 0.5 s limit took {r.seconds:.1f} s of running"
