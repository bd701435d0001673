"""Several VMs under ``bt`` time-sliced on one host CPU: each sees what it sees alone on the
bare *standard* PC (bt is a correct monitor there), whatever the slicing."""

from __future__ import annotations

from trapvisor.vmm.scheduler import Scheduler

from ..test_scheduler import LIMIT, bare, spec


def test_interleaved_bt_vms_each_see_the_bare_standard_pc():
    specs = [spec("tvos", "workload=syscall iterations=100", 64),
             spec("tvos", "workload=ctxswitch iterations=30", 64),
             spec("cr3-stale", mib=8),
             spec("hello", mib=8)]
    sched = Scheduler(specs, strict=False, slice_instructions=7_919, technique="bt")
    r = sched.run(LIMIT)
    for s, res in zip(specs, r.results):
        out, code, n = bare(s.kernel, s.cmdline, s.memory_bytes, False)
        assert res.stop_reason is None and res.exit_code == code == 1, (s, res.stop_reason, res.detail)
        assert res.output == out, s
        assert res.instructions == n, s
    assert r.world_switches > 30 and min(r.slices[0], r.slices[1]) > 10
    # Each VM translated into a cache of its own in the monitor region.
    caches = [vm.tc for vm in sched.vms]
    assert len({c.lo for c in caches}) == len(caches)
    assert all(c.units_translated > 0 for c in caches)
