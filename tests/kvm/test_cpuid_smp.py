"""CPUID per vCPU and SMP bring-up under KVM, against the simulated PC and the ACPI tables.

The guests (tests/kvm/guests/) print what they see: ``cpuid_dump`` every
CPUID leaf, ``smp`` the MADT's processors and the APIC ID each processor's
CPUID reports after INIT-SIPI-SIPI.  Runs are pinned to each host CPU in
turn: KVM_GET_SUPPORTED_CPUID answers with the APIC ID and topology of the
host CPU the ioctl ran on, which a guest must never see.
"""
import os
import pathlib
import re

import pytest

from trapvisor.errors import UserError
from trapvisor.kvm import cpuid as kvm_cpuid
from trapvisor.kvm.runner import KvmMachine, run_kvm
from trapvisor.machine import cpuid_model as cm
from trapvisor.machine.pc import run_kernel

from .test_guests_kvm import build_flat_guest

GUESTS = pathlib.Path(__file__).parent / "guests"
MEM = 16 << 20
HOST_CPUS = sorted(os.sched_getaffinity(0))


@pytest.fixture(scope="module")
def guest(tmp_path_factory):
    def build(name):
        return str(build_flat_guest(GUESTS / f"{name}.S", tmp_path_factory.mktemp(name)))
    return build


@pytest.fixture
def pinned():
    """Run on one host CPU at a time (the vCPU threads inherit the affinity)."""
    before = os.sched_getaffinity(0)

    def pin(cpu):
        os.sched_setaffinity(0, {cpu})
    yield pin
    os.sched_setaffinity(0, before)


def leaves(text: str) -> dict:
    """cpuid_dump's lines as {(leaf, subleaf): (eax, ebx, ecx, edx)}."""
    out = {}
    for line in text.splitlines():
        m = re.fullmatch(r"([0-9a-f]{8})\.([0-9a-f]{2}) ([0-9a-f]{8}) ([0-9a-f]{8}) ([0-9a-f]{8}) ([0-9a-f]{8})", line)
        if m:
            out[(int(m[1], 16), int(m[2], 16))] = tuple(int(m[i], 16) for i in range(3, 7))
    return out


def kvm_run(kernel, **kw):
    out = []
    res = run_kvm(kernel, memory_bytes=MEM, serial_out=out.append, max_seconds=120, **kw)
    assert res.exit_code == 1, (res.stop_reason, res.detail)
    return b"".join(out).decode()


def test_cpuid_vendor_family_and_leaves_are_the_simulated_pcs(kvm_host, guest):
    kernel = guest("cpuid_dump")
    out = []
    run_kernel(kernel, memory_bytes=MEM, serial_out=out.append, max_seconds=60)
    sim = leaves(b"".join(out).decode())
    got = leaves(kvm_run(kernel))
    assert set(got) == set(sim) == {(0, 0), (1, 0)}          # the pc model stops at leaf 1
    assert got[(0, 0)] == sim[(0, 0)]                        # max leaf and "GenuineIntel"
    assert got[(1, 0)][:2] == sim[(1, 0)][:2]                # signature; APIC ID 0, one per package
    if kvm_host.hardware_assisted:
        assert got == sim
    # kvm_pvm lets the host's leaf 1 ECX/EDX show through where KVM does not report a
    # feature as supported (measured; docs/kvm.md): only the bits KVM controls follow the model.


@pytest.mark.parametrize("host_cpu", HOST_CPUS)
def test_cpuid_apic_id_is_the_vcpus_on_every_host_cpu(kvm_host, guest, pinned, host_cpu):
    pinned(host_cpu)
    kernel = guest("cpuid_dump")
    assert leaves(kvm_run(kernel))[(1, 0)][1] >> 24 == 0       # leaf 1 EBX[31:24]: the BSP's APIC ID
    got = leaves(kvm_run(kernel, cpu="host"))
    assert got[(1, 0)][1] >> 24 == 0
    assert got[(0xB, 0)][3] == got[(0xB, 1)][3] == 0         # leaf 0BH EDX: its x2APIC ID
    assert got[(0xB, 1)][1] == 1                             # one logical processor per package
    out = kvm_run(guest("smp"), smp=2)
    assert "bsp: cpuid apic id 00, lapic id 00" in out
    assert "up: 01 aps, cpuid apic ids: 01" in out


def test_the_userspace_irqchip_advertises_only_what_it_emulates(kvm_host, guest):
    kernel = guest("cpuid_dump")
    x2apic, deadline = 1 << 21, 1 << 24
    assert not leaves(kvm_run(kernel, irqchip=False))[(1, 0)][2] & (x2apic | deadline)
    with_kernel = leaves(kvm_run(kernel, cpu="host"))
    userspace = leaves(kvm_run(kernel, cpu="host", irqchip=False))
    pv_eoi = 1 << kvm_cpuid.KVM_FEATURE_PV_EOI
    assert not userspace[(1, 0)][2] & (x2apic | deadline)
    assert not userspace[(0x4000_0001, 0)][0] & pv_eoi
    # ... while KVM's own local APIC offers them where the host has them
    supported = {(e.function, e.index): e for e in _supported()}
    assert with_kernel[(1, 0)][2] & (x2apic | deadline) == supported[(1, 0)].ecx & (x2apic | deadline)
    assert with_kernel[(0x4000_0001, 0)][0] & pv_eoi == supported[(0x4000_0001, 0)].eax & pv_eoi


def _supported():
    from trapvisor.kvm.vm import KvmSystem
    s = KvmSystem()
    try:
        return s.supported_cpuid()
    finally:
        s.close()


@pytest.mark.parametrize("smp", [2, 4])
def test_smp_guest_brings_up_every_cpu_the_madt_lists(kvm_host, guest, smp):
    out = kvm_run(guest("smp"), smp=smp)
    ids = " ".join(f"{i:02x}" for i in range(smp))
    assert f"madt: {smp:02x} cpus, apic ids: {ids}" in out, out
    assert "bsp: cpuid apic id 00, lapic id 00" in out
    m = re.search(r"up: ([0-9a-f]{2}) aps, cpuid apic ids:((?: [0-9a-f]{2})*)", out)
    assert m and int(m[1], 16) == smp - 1, out
    assert sorted(int(x, 16) for x in m[2].split()) == list(range(1, smp))


def test_smp_guest_on_the_simulated_pc_sees_one_cpu(guest):
    out = []
    run_kernel(guest("smp"), memory_bytes=MEM, serial_out=out.append, max_seconds=60)
    text = b"".join(out).decode()
    assert "madt: 01 cpus, apic ids: 00" in text and "up: 00 aps" in text


def test_each_vcpu_is_given_its_own_table(kvm_host, guest):
    m = KvmMachine(MEM, serial_out=lambda b: None, smp=3)
    try:
        m.load(guest("cpuid_dump"))
        for vcpu in m.vcpus:
            table = {(e.function, e.index): e for e in vcpu.get_cpuid()}
            assert table[(1, 0)].ebx >> 24 == vcpu.index
            assert table[(0, 0)].ebx == int.from_bytes(b"Genu", "little")
        assert [v.index for v in m.vcpus] == cm.Topology.for_cpus(3).apic_ids() == [0, 1, 2]
    finally:
        m.close()


def test_smp_needs_the_in_kernel_irqchip(kvm_host):
    with pytest.raises(UserError, match="in-kernel irqchip"):
        KvmMachine(MEM, smp=2, irqchip=False)
    with pytest.raises(UserError, match="--smp 0"):
        KvmMachine(MEM, smp=0)


def test_the_64_bit_model_within_kvms_support():
    """pc64 (Linux): the model's features, only where KVM supports them; topology per vCPU."""
    supported = _supported()
    topo = cm.Topology(sockets=2, cores=2, threads=2)
    for apic_id in topo.apic_ids():
        policy = kvm_cpuid.guest_cpuid(supported, software_kvm=False, cpu="model", model=cm.PC64,
                                       topology=topo, apic_id=apic_id)
        table = {(e.function, e.index): e for e in policy.entries}
        sup = {(e.function, e.index): e for e in supported}
        want = cm.feature_bits(cm.PC64.features | {"htt"})
        assert table[(1, 0)].edx == want[(1, 0)][3] & sup[(1, 0)].edx
        assert table[(0x8000_0001, 0)].edx == want[(0x8000_0001, 0)][3] & sup[(0x8000_0001, 0)].edx
        assert table[(1, 0)].ebx >> 24 == apic_id and (table[(1, 0)].ebx >> 16) & 0xFF == 4
        assert table[(0xB, 0)].edx == apic_id and table[(0xB, 0)].eax == 1 and table[(0xB, 0)].ebx == 2
        assert table[(0xB, 1)].eax == 2 and table[(0xB, 1)].ebx == 4
        assert table[(0x8000_0008, 0)].eax == sup[(0x8000_0008, 0)].eax & 0xFFFF
        assert table[(1, 0)].ecx & (1 << 31)                 # hypervisor present: KVM's PV leaves follow
        assert (0x4000_0001, 0) in table
    assert topo.apic_ids() == [0, 1, 2, 3, 4, 5, 6, 7]
    assert cm.Topology(sockets=2, cores=3).apic_ids() == [0, 1, 2, 4, 5, 6]
