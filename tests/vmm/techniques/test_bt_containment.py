"""The hostile kernels (guests/hostile) under ``bt``: contained, and equivalent to the bare PC.

The same cases and checks as tests/vmm/test_resource_control.py, for the
binary translator, on both CPU variants.  Binary translation is a correct
monitor on the *standard* CPU, so no ``[sensitive]`` line is excused: every
line a hostile kernel prints is the bare PC's.  On top of the monitor checks
of trap-and-emulate (host CPU still the monitor's, neighbours untouched,
shadow tables inside the partition):

* the translation cache holds nothing but the translator's output (every
  valid unit's bytes are what it emitted; the guest cannot write the cache);
* the part of the monitor region outside the tables, the pool and the cache
  is unchanged;
* if the run ended inside translated code, CS is the monitor's execute-only
  segment and GS its one-page virtual-CPU segment, nothing else reaches the
  window.
"""

from __future__ import annotations

import pytest

from trapvisor.guests import build_guest
from trapvisor.vmm.allocator import MONITOR_GDT, MONITOR_REGION, MONITOR_WINDOW, SHADOW_POOL
from trapvisor.vmm.costmodel import CostModel
from trapvisor.vmm.techniques.bt import BinaryTranslation
from trapvisor.vmm.techniques.bt.tcache import TC_CS_ATTR, VCPU_GS_ATTR

from ..test_resource_control import (
    BREACH, CASES, MEMORY, bare, check_host_cpu, check_neighbours, lines, neighbours,  # noqa: F401
)


def check_translation_cache(bt: BinaryTranslation, before: bytes) -> None:
    ram, tc = bt.alloc.host.ram, bt.tc
    lo = tc.phys
    # Outside the shadow GDT, the used pool and the cache, nothing changed.
    for a, b, what in ((0, MONITOR_GDT, "the guard page"), (MONITOR_GDT + 0x10000, SHADOW_POOL, "the IDT and TSS"),
                       (bt.alloc.pool_next, lo, "the unused shadow pool")):
        assert bytes(ram[a:b]) == before[a:b], f"{what} of the monitor region changed"
    # The cache holds the translator's output: each valid unit's rows, byte for byte.
    for unit in tc.units:
        if not unit.valid:
            continue
        for row in unit.rows:
            at = row.host - MONITOR_WINDOW
            assert bytes(ram[at:at + len(row.host_bytes)]) == row.host_bytes or row.kind in ("jcc", "jmp"), \
                f"translation of {row.guest:#x} at {row.host:#x} was changed"
    # Past what was emitted, the cache is still zero (before the page of the virtual CPU).
    used = tc.next - MONITOR_WINDOW
    assert not any(ram[used:tc.vcpu_phys]), "bytes appeared in the unused translation cache"
    assert not any(ram[tc.vcpu_phys + 4:tc.vcpu_phys + 0x1000]), "the virtual-CPU page was written"


def check_bt_host_cpu(bt: BinaryTranslation) -> None:
    h = bt.host
    if bt.tview:
        assert h.attr[1] == TC_CS_ATTR and bt.tc.contains(h.eip)
        assert h.attr[5] == VCPU_GS_ATTR and h.base[5] == bt.tc.vcpu_lin and h.limit[5] == 0xFFF
        bt._leave_cache()      # the rest as trap-and-emulate's, in the guest's terms
    check_host_cpu(bt)


@pytest.mark.parametrize("strict", [False, True], ids=["standard", "strict"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_guest_is_contained_under_bt(case, strict, neighbours):  # noqa: F811
    bt = BinaryTranslation.build(str(build_guest(case.kernel)), cmdline=case.cmdline, memory_bytes=MEMORY,
                                 costs=CostModel.default(), strict=strict)
    before = bytes(bt.alloc.host.ram[:MONITOR_REGION])
    r = bt.run(case.limit)
    check_translation_cache(bt, before)
    check_bt_host_cpu(bt)
    check_neighbours(neighbours, bt.vm.partition)
    out = r.output.decode("latin-1")
    assert r.stop_reason in case.stops, f"{r.stop_reason}: {r.detail}\n{out}"
    assert case.detail in r.detail
    if r.stop_reason == "instruction limit":
        assert case.limit <= r.steps < case.limit + 1000
    assert not BREACH.search(out), out
    b_out, b_exit, b_stop = bare(case.kernel, case.bare_cmdline if case.bare_cmdline is not None
                                 else case.cmdline, case.limit, strict)
    mine, ref = lines(out), lines(b_out)
    if case.bare_cmdline is not None:          # pic-pit-starve: the bare PC skipped the last stage
        assert mine[:-1] == ref[:-1], out
    else:
        # No [sensitive] line excused, even on the standard CPU: BT closes the x86 holes.
        assert mine == ref, f"differs from the bare PC:\n{out}\n--- bare:\n{b_out}"
        assert r.exit_code == b_exit
        if r.stop_reason != b_stop:
            assert set(case.stops) >= {r.stop_reason, b_stop}
