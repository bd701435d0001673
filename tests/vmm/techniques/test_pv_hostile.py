"""guests/hostile/pv-attack under ``pv``: every hostile request is refused with Xen's
error, the store into the hole crashes only the domain, and the hypervisor's
frames are byte for byte what they were before the guest ran."""

from __future__ import annotations

from trapvisor.guests import build_guest
from trapvisor.vmm.techniques.pv.technique import Pv

EPERM, EFAULT, EINVAL, ENOSYS = -1, -14, -22, -38
EXPECTED = {
    "writable mapping of the L2": EINVAL,
    "writable mapping of an L1": EINVAL,
    "mapping a frame it does not own": EINVAL,
    "mapping beyond host memory": EINVAL,
    "PDE in the hypervisor's hole": EPERM,
    "4 MiB page": EINVAL,
    "update of a frame it does not own": EINVAL,
    "pin a writable-mapped frame": EINVAL,
    "set_gdt on a writable frame": EINVAL,
    "set_gdt with a DPL-0 code segment": EINVAL,
    "update_descriptor DPL 0": EINVAL,
    "update_descriptor interrupt gate": EINVAL,
    "update_descriptor call gate into the hole": EINVAL,
    "update_descriptor TSS": EINVAL,
    "trap handler in the hole": EPERM,
    "trap handler on ring 0": EINVAL,
    "callback on ring 0": EINVAL,
    "stack on ring 0": EINVAL,
    "console_io from the hole": EFAULT,
    "console_io from unmapped memory": EFAULT,
    "console_io of 1 GiB": EINVAL,
    "mmu_update list in the hole": EFAULT,
    "mmu_update done-count into read-only memory": EFAULT,
    "mmu_update of 2^20 requests": EINVAL,
    "set_trap_table from unmapped memory": EFAULT,
    "unknown hypercall": ENOSYS,
    "bind_virq accepted": 24,          # each of the 24 VIRQs once ...
    "bind_virq refused": -24,          # ... and the second binding of each refused
}


def test_every_attack_is_refused_with_xens_error_and_the_hypervisor_is_intact():
    m = Pv.build(str(build_guest("pv-attack")))
    before = m.hole.snapshot()
    r = m.run(50_000_000)
    results = {}
    for line in r.output.decode().splitlines():
        if " -> " in line:
            name, value = line[len("pv-attack: "):].rsplit(" -> ", 1)
            results[name] = int(value)
    for name, rc in EXPECTED.items():
        assert results.get(name) == rc, (name, results.get(name))
    assert results["sends to unbound ports refused"] >= 2000
    # The store into the hole faults (segment limit), and only the domain ends.
    assert b"the store went through" not in r.output
    assert r.stop_reason == "domain crashed" and "#GP" in r.detail
    assert m.hole.snapshot() == before
    assert m.hole.check(m.frames) == []
    assert m.frames.check() == []
