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
ALLOWED = ("hypercall:", "bounce:", "upcall:", "io:", "fast trap:")


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


def test_system_calls_take_the_fast_trap_and_never_enter_the_hypervisor():
    r = pv("workload=syscall iterations=100")
    kinds = r.traps_by_reason()
    assert kinds["fast trap:INT 0x80"] >= 100
    assert "bounce:INT 0x80" not in kinds
    assert kinds.get("hypercall:iret", 0) < 10     # returns are the hardware's IRET


def test_without_a_fast_trap_entry_system_calls_are_bounced_through_the_hypervisor():
    from trapvisor.vmm.techniques.pv.technique import Pv
    m = Pv.build(str(build_guest("tvos-pv")), cmdline="workload=syscall iterations=50")
    while 0x80 not in m.traps:                    # until trap_init has registered it
        assert not m.run_slice(m.steps() + 1_000, 10_000_000)
    flags, cs, eip = m.traps[0x80]
    m.traps[0x80] = (flags | 4, cs, eip)          # "mask events on entry": not fast-trappable
    m.update_fast_trap()
    assert m.fast_trap is None and m.host.intercepts.software_interrupt_exiting is True
    r = m.run(100_000_000)
    assert r.exit_code == 1
    assert r.traps_by_reason().get("bounce:INT 0x80", 0) >= 40


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
