"""Random hypercalls against a booted tvos-pv domain (hypothesis).

Whatever the numbers and arguments, the hypervisor answers with a result (or
stops the domain with a diagnostic: DomainCrash), never with a Python
exception; afterwards its own frames are unchanged, every reference count
adds up, and no page table of the domain names a frame it does not own."""

from __future__ import annotations

import functools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trapvisor.guests import build_guest
from trapvisor.machine.cpu import MachineStop
from trapvisor.vmm.techniques.pv import abi
from trapvisor.vmm.techniques.pv.mm import HYPERVISOR_SLOT, L1, L2
from trapvisor.vmm.techniques.pv.technique import DomainCrash, Pv

BUF = 0x200000                      # a data page of the booted kernel (pseudo-physical = virtual)


@functools.lru_cache(maxsize=1)
def kernel() -> str:
    return str(build_guest("tvos-pv"))


def booted():
    m = Pv.build(kernel(), cmdline="workload=syscall iterations=100000")
    m.run_slice(400_000, 10_000_000)
    assert m.vm.exit_code is None and m.stop_reason is None
    return m


def interesting(m):
    """Argument values that reach the interesting places: the domain's frames and tables,
    the hole, the scratch buffer, edges."""
    first, n = m.layout.first_mfn, m.layout.nr_pages
    l2 = m.host.cr3 >> 12
    return st.one_of(
        st.integers(0, 0xFFFFFFFF),
        st.sampled_from([0, 1, 0xFFFFFFFF, 0x7FFFFFFF, BUF, BUF + 4094, abi.HYPERVISOR_VIRT_START,
                         abi.HYPERVISOR_GDT_VIRT, abi.DOMID_SELF, l2, l2 << 12, first, first + n,
                         first + n - 1, 5, (first + 0x101) << 12 | 3, l2 << 12 | 1]),
        st.integers(first, first + n - 1),
        st.integers(first << 12, ((first + n) << 12) - 1),
        st.integers(0, 64),
    )


NUMBERS = sorted(abi.HYPERCALL_NAMES) + [7, 99, 255, 0xFFFFFFFF]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_hypercalls_never_hurt_the_hypervisor(data):
    m = booted()
    hole = m.hole.snapshot()
    args = interesting(m)
    for _ in range(data.draw(st.integers(1, 12))):
        m.mem.write(m.base + BUF, data.draw(st.binary(min_size=64, max_size=64)))
        nr = data.draw(st.sampled_from(NUMBERS))
        a = [data.draw(args) for _ in range(5)]
        try:
            r = m.hypercalls.call(nr, a)
        except DomainCrash:
            break                   # the domain is stopped with a diagnostic: allowed
        assert r is None or isinstance(r, (int, MachineStop))
        if isinstance(r, int):
            assert r <= 0 or nr in (abi.HYPERVISOR_xen_version, abi.HYPERVISOR_vcpu_op)
    assert m.hole.snapshot() == hole
    assert m.frames.check() == []
    owned = m.frames.frames
    for mfn, f in owned.items():
        if f.type_count and f.type in (L1, L2):
            entries = 1024 if f.type == L1 else HYPERVISOR_SLOT
            for i in range(entries):
                e = m.frames.entry(mfn, i)
                assert not e & 1 or (e >> 12) in owned, (hex(mfn), i, hex(e))
