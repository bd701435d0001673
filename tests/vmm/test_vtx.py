"""The ``vtx`` and ``vtx-noept`` techniques: any kernel in VMX non-root operation.

Hardware assistance makes the x86 virtualizable without the strict CPU: the
guest kernel runs at its own ring 0 in non-root operation, so the sensitive
but unprivileged instructions see the guest's own state (SDM Vol. 3C §25.3;
Uhlig et al., IEEE Computer 2005).  On the *standard* CPU every workload of
the guest OS and the sensitivity probe give byte-identical output, the same
exit code, the same instruction count and no sensitive-instruction
divergence, under both techniques; exits are counted by their SDM names
(Appendix C) in the shared event format.
"""

import pytest

from tests.vmm.runs import run
from tests.vmm.test_trap_emulate_equivalence import WORKLOADS
from trapvisor.report.divergence import divergences
from trapvisor.guests import build_guest
from trapvisor.vmm.costmodel import CostModel
from trapvisor.vmm.run import run_technique

TECHNIQUES = ["vtx", "vtx-noept"]


@pytest.mark.parametrize("technique", TECHNIQUES)
@pytest.mark.parametrize("cmdline", WORKLOADS)
def test_every_workload_is_identical_to_native_on_the_standard_cpu(cmdline, technique):
    native = run("native", cmdline, "standard")
    r = run(technique, cmdline, "standard")
    assert native.exit_code == 1, native.output[-400:]
    assert r.stop_reason is None, f"{r.stop_reason}: {r.detail}"
    assert r.output == native.output
    assert r.exit_code == native.exit_code
    assert r.instructions == native.instructions, "the same guest instructions, however executed"
    assert r.direct / r.instructions > 0.99, "nearly everything runs directly in non-root operation"


@pytest.mark.parametrize("technique", TECHNIQUES)
def test_the_probe_shows_no_sensitive_instruction_divergence(technique):
    """The x86 holes (Robin and Irvine 2000) are closed: each sensitive instruction
    produced in non-root operation what it produced on the bare PC."""
    kernel = str(build_guest("tvos"))
    kw = dict(cmdline="workload=probe", max_instructions=50_000_000, costs=CostModel.default(),
              audit=True)
    native = run_technique("native", kernel, **kw)
    r = run_technique(technique, kernel, **kw)
    assert native.audit and r.audit
    assert divergences(native.audit, r.audit) == []


def test_exits_are_counted_by_their_sdm_names_in_the_shared_event_format():
    r = run("vtx", "workload=io iterations=100")
    assert r.exits.get("EXIT_REASON_IO_INSTRUCTION", 0) > 100
    assert all(name.startswith("EXIT_REASON_") for name in r.exits
               if name not in ("budget", "preempted", "guest exit", "stopped"))
    reasons = {reason for (kind, reason) in r.events.counts if kind == "exit"}
    assert "EXIT_REASON_IO_INSTRUCTION" in reasons
    assert any("VM exits by reason: EXIT_REASON_IO_INSTRUCTION" in n and "mean" in n for n in r.notes)


def test_without_ept_the_monitor_takes_page_faults_and_cr3_loads():
    """The early VT-x profile has no EPT: the monitor keeps shadow page tables, so
    #PF (exception bitmap) and CR3 loads (CR3-load exiting) exit; with EPT they don't."""
    noept = run("vtx-noept", "workload=ctxswitch iterations=50")
    ept = run("vtx", "workload=ctxswitch iterations=50")
    assert noept.exits.get("EXIT_REASON_EXCEPTION_NMI", 0) > 100
    assert noept.exits.get("EXIT_REASON_CR_ACCESS", 0) > 50
    assert ept.exits.get("EXIT_REASON_EXCEPTION_NMI", 0) == 0
    assert ept.exits.get("EXIT_REASON_CR_ACCESS", 0) < noept.exits["EXIT_REASON_CR_ACCESS"]
    assert ept.cycles < noept.cycles, "EPT removes the software MMU's exits"


def test_timer_interrupts_are_injected_at_the_native_instruction():
    """Interrupts of the VM's devices enter through the VM-entry interruption-information
    field (SDM Vol. 3C §26.6) or after an interrupt-window exit (§25.2)."""
    native = run("native", "workload=mixed iterations=1")
    for technique in ("vtx", "vtx-noept"):
        r = run(technique, "workload=mixed iterations=1")
        assert r.output == native.output and r.instructions == native.instructions
        assert r.steps == native.steps, "the same interrupts delivered"
        assert r.events.counts.get(("inject", "interrupt injected (VM-entry interruption information)"), 0) >= 3


def check_vtx_containment(m, before: bytes) -> None:
    """What a guest in non-root operation can reach (tests/vmm/test_resource_control.py
    runs every hostile kernel through this): the EPT maps only the VM's partition and
    is unchanged; without EPT every shadow mapping points into the partition and no
    shadow maps the monitor region at the monitor window; the VMCS region and the
    rest of the monitor region are as the monitor left them (the VMCS data is kept on
    the processor, SDM Vol. 3C §24.11.1); the host's own buses were never touched."""
    import struct as _s
    from trapvisor.machine.cpu.constants import PTE_P
    from trapvisor.vmm.allocator import MONITOR_REGION, MONITOR_WINDOW
    ram, part = m.alloc.host.ram, m.vm.partition
    if m.use_ept:
        assert bytes(ram[:MONITOR_REGION]) == before, "the monitor region changed under EPT"
        eptp = m.vmcs["EPT_POINTER"] & 0xFFFFF000

        def leaves(table, level, gpa):
            for i in range(512):
                e = _s.unpack_from("<Q", ram, table + 8 * i)[0]
                if not e & 7:
                    continue
                shift = (12, 21, 30, 39)[level - 1]
                g = gpa | i << shift
                if level == 1 or e & 0x80:
                    yield g, e & 0xFFFFF000 & ~((1 << shift) - 1), 1 << shift
                else:
                    assert (e & 0xFFFFF000) < MONITOR_REGION, "an EPT table outside the monitor region"
                    yield from leaves(e & 0xFFFFF000, level - 1, g)
        total = 0
        for gpa, hpa, size in leaves(eptp, 4, 0):
            assert hpa == part.base + gpa and gpa + size <= part.size, \
                f"EPT maps guest-physical {gpa:#x} to host {hpa:#x}, outside the partition"
            total += size
        assert total == part.size
    else:
        sh = m.shadow
        for space in sh.spaces.values():
            assert m.alloc.host.read_u32(space.pd + 4 * (MONITOR_WINDOW >> 22)) == 0, \
                "a shadow maps the monitor window"
            for j in range(1024):
                pde = m.alloc.host.read_u32(space.pd + 4 * j)
                if not pde & PTE_P:
                    continue
                frame = pde & 0xFFFFF000
                assert frame in space.pts.values(), f"shadow PDE {j} is not a shadow table"
                for k in range(1024):
                    pte = m.alloc.host.read_u32(frame + 4 * k)
                    if pte & PTE_P:
                        assert part.contains_host(pte & 0xFFFFF000), \
                            f"shadow PTE {j}:{k} maps host {pte:#x}, outside the partition"
    region = m.vmcs_region
    assert bytes(ram[region:region + 0x1000]) == before[region:region + 0x1000]
    for bus in (m.host.io_bus, m.host.mmio_bus):
        assert bus.unclaimed_reads == 0 and bus.unclaimed_writes == 0, \
            "a guest access reached the host's own bus"
