"""tvos's paravirtual build under ``pv`` prints what unmodified tvos prints on the bare PC,
and leaves guest code only for hypercalls, bounces, event upcalls and its own ports."""

from __future__ import annotations

import pytest

from trapvisor.guests import build_guest
from trapvisor.vmm.costmodel import CostModel
from trapvisor.vmm.run import run_technique

from ..runs import run

LIMIT = 300_000_000
WORKLOADS = ["probe", "syscall iterations=200", "ctxswitch iterations=50", "pgfault iterations=50",
             "ptemod iterations=50", "forkwait iterations=5", "divzero iterations=20",
             "crwrite iterations=200", "io iterations=100", "selftest", "protect",
             "mixed iterations=1", "compute iterations=2"]
ALLOWED = ("hypercall:", "bounce:", "upcall:", "io:")


def pv(cmdline: str):
    return run_technique("pv", str(build_guest("tvos")), cmdline=cmdline, max_instructions=LIMIT,
                         costs=CostModel.default())


@pytest.mark.parametrize("workload", WORKLOADS)
def test_workload_output_and_exit_code_match_native(workload):
    cmdline = f"workload={workload}"
    native, para = run("native", cmdline), pv(cmdline)
    assert para.output == native.output
    assert para.exit_code == native.exit_code
    assert para.stop_reason == "shutdown"
    # No guest instruction was trapped for emulation: every event is a hypercall, a
    # bounced exception or software interrupt, an event upcall, or a granted port.
    kinds = para.traps_by_reason()
    assert kinds and all(k.startswith(ALLOWED) for k in kinds), kinds
    assert para.direct == para.instructions - sum(n for k, n in kinds.items() if k.startswith("io:"))


def test_system_calls_are_bounced_and_returned_through_iret():
    r = pv("workload=syscall iterations=100")
    kinds = r.traps_by_reason()
    assert kinds["bounce:INT 0x80"] >= 100
    assert kinds["hypercall:iret"] >= kinds["bounce:INT 0x80"]


def test_the_timer_arrives_as_event_upcalls_and_preempts_processes():
    r = pv("workload=mixed iterations=1")
    assert r.traps_by_reason().get("upcall:event", 0) > 0


def test_page_faults_are_bounced_with_cr2_in_shared_info():
    r = pv("workload=pgfault iterations=20")
    assert r.traps_by_reason().get("bounce:#PF", 0) >= 20


def test_a_native_kernel_is_refused_by_name():
    from trapvisor.errors import UserError
    from trapvisor.vmm.techniques.pv.technique import Pv
    with pytest.raises(UserError, match="not a paravirtual kernel"):
        Pv.build(str(build_guest("rings")))


def test_pv_builds_of_the_guest_run_by_name_and_through_the_hook():
    from trapvisor.vmm.techniques.pv.technique import Pv
    native_path = str(build_guest("tvos"))
    assert Pv.guest_kernel(native_path) == str(build_guest("tvos-pv"))
    assert Pv.guest_kernel(str(build_guest("tvos-pv"))) == str(build_guest("tvos-pv"))
