"""Several paravirtual domains on one host CPU (``vms --technique pv``): each tvos-pv
VM does exactly what it does alone, a hostile domain between them changes nothing
for them, and every domain's hypervisor frames stay intact."""

from __future__ import annotations

import pytest

from trapvisor.errors import UserError
from trapvisor.guests import build_guest
from trapvisor.vmm.costmodel import CostModel
from trapvisor.vmm.run import run_technique
from trapvisor.vmm.scheduler import Scheduler, VmSpec

A, B = "workload=syscall iterations=50", "workload=forkwait iterations=2"


def alone(cmdline):
    return run_technique("pv", str(build_guest("tvos")), cmdline=cmdline, max_instructions=50_000_000, memory_bytes=32 << 20,
                         costs=CostModel.default())


def test_interleaved_domains_match_their_solo_runs_and_the_attacker_is_contained():
    tvos = str(build_guest("tvos"))
    specs = [VmSpec(tvos, A), VmSpec(str(build_guest("pv-attack")), ""), VmSpec(tvos, B)]
    sched = Scheduler(specs, technique="pv", slice_instructions=20_000)
    holes = [vm.hole.snapshot() for vm in sched.vms]
    res = sched.run(50_000_000)
    assert sched.world_switches > 10
    for r, solo in ((res.results[0], alone(A)), (res.results[2], alone(B))):
        assert r.output == solo.output and r.exit_code == solo.exit_code == 1
        assert r.instructions == solo.instructions
    assert res.results[1].stop_reason == "domain crashed"
    for vm, hole in zip(sched.vms, holes):
        assert vm.hole.snapshot() == hole and vm.frames.check() == []


def test_the_strict_cpu_is_refused_by_name():
    with pytest.raises(UserError, match="cannot present the strict CPU"):
        Scheduler([VmSpec(str(build_guest("tvos")), A)], technique="pv", strict=True)
