"""The shadow page-table cache of trap-and-emulate (vmm/shadow_paging.py).

One shadow per guest address space, kept across CR3 loads, is only correct
if every change the guest makes to any of its page tables reaches every
shadow derived from it, whichever address space is running.  The
``cr3-stale`` kernel changes the tables of address spaces that are not
running (PTE and PDE stores, write access taken away, accessed and dirty
bits cleared) and switches back; with the cache too small to hold its spaces,
too, so shadows are evicted and rebuilt.  Its output must be the bare PC's,
at every cache size, and the cache must really have been used.
"""

from __future__ import annotations

import pytest

from trapvisor.guests import build_guest
from trapvisor.machine.pc import run_kernel as bare_run
from trapvisor.vmm.costmodel import CostModel
from trapvisor.vmm.techniques.trap_emulate import TrapEmulate

MEMORY = 8 << 20
LIMIT = 2_000_000


@pytest.fixture(scope="module")
def bare_output():
    out = []
    res = bare_run(str(build_guest("cr3-stale")), memory_bytes=MEMORY, max_instructions=LIMIT,
                   serial_out=out.append)
    text = b"".join(out)
    assert res.exit_code == 1 and b"every read saw the tables as they are now" in text, text
    return text


@pytest.mark.parametrize("strict", [False, True], ids=["standard", "strict"])
@pytest.mark.parametrize("cache", [1, 2, 8])
def test_changes_to_tables_of_idle_address_spaces_reach_their_cached_shadows(cache, strict, bare_output):
    te = TrapEmulate.build(str(build_guest("cr3-stale")), memory_bytes=MEMORY, costs=CostModel.default(),
                     strict=strict, shadow_cache=cache)
    r = te.run(LIMIT)
    assert r.exit_code == 1 and r.stop_reason is None, r.output
    assert b"FAILED" not in r.output
    assert r.output == bare_output
    sp = te.shadow
    assert len(sp.spaces) <= cache
    assert sp.switches > 100
    if cache == 8:
        # Both paths ran: spaces found again (the 4-space rounds), and evicted (the 12-space ones).
        assert sp.cache_hits > 20 and sp.evictions > 20
        assert sp.cache_hits + sp.flushes >= sp.switches


def test_the_cache_spares_refills_on_context_switches():
    """tvos ctxswitch: two processes yielding to each other.  With the cache each
    switch finds its shadow; without it every switch refills the working set."""
    kernel = str(build_guest("tvos"))
    cmdline = "workload=ctxswitch iterations=100"
    runs = {}
    for cache in (1, 8):
        te = TrapEmulate.build(kernel, cmdline=cmdline, memory_bytes=128 << 20, costs=CostModel.default(),
                         strict=True, shadow_cache=cache)
        runs[cache] = (te.run(300_000_000), te.shadow)
    (r1, s1), (r8, s8) = runs[1], runs[8]
    assert r1.output == r8.output and r1.exit_code == r8.exit_code == 1
    assert s8.cache_hits >= s8.switches - 10
    assert s1.cache_hits <= 2
    assert s8.fills < s1.fills
    assert r8.cycles < r1.cycles


def test_a_zero_sized_cache_is_refused():
    with pytest.raises(ValueError):
        TrapEmulate.build(str(build_guest("hello")), memory_bytes=MEMORY, costs=CostModel.default(), shadow_cache=0)
