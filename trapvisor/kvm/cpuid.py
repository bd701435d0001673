"""CPUID the guest sees under KVM: the shared CPU model per vCPU, filtered by what KVM supports.

KVM_SET_CPUID2 is mandatory on this host's KVM (even ``nop; hlt`` fails
without it).  Each vCPU gets its own table (KVM api.rst, 4.73
KVM_SET_CPUID2; KVM does not rewrite leaf 1 EBX or leaf 0BH per vCPU):

* ``model`` (the default): the CPU model of ``machine/cpuid_model.py``, the
  one the simulated PC implements (``pc`` for 32-bit PC guests, ``pc64`` for
  64-bit Linux), with every feature bit ANDed with KVM_GET_SUPPORTED_CPUID,
  the address sizes of leaf 80000008H taken from the host (guest-physical
  addresses cannot be wider than the host's), and for 64-bit guests the
  hypervisor bit and KVM's paravirtual leaves 40000000H-40000001H
  (Documentation/virt/kvm/x86/cpuid.rst);
* ``host`` (``--cpu host``, as QEMU's ``-cpu host``): KVM's supported table
  as it is.

In both, the topology fields are the vCPU's own (``cpuid_model.Topology``:
leaf 1 EBX and HTT, leaf 4 EAX[31:14], leaf 0BH/1FH, AMD's 80000008H ECX and
8000001EH), never the host CPU's that happened to run KVM_GET_SUPPORTED_CPUID.

Without an in-kernel irqchip the local APIC is trapvisor's xAPIC model: it
has no x2APIC MSRs and no TSC-deadline mode, and KVM's PV EOI, PV IPI, PV
unhalt and async-PF-as-interrupt features all need KVM's own local APIC, so
those bits are cleared (QEMU does the same for x2APIC and PV unhalt when its
irqchip is not in the kernel).

When KVM is software (kvm_pvm), guests run through KVM's instruction
emulator, which fails on SSE3-and-later encodings, XSAVE/XRSTOR, AVX,
CMPXCHG16B and friends; those features are cleared too.  Masking alone does
not reliably hide them from Linux, so the Linux loader adds command-line
workarounds as well (boot_linux.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..machine import cpuid_model as cm
from . import ioctls

# (leaf, subleaf or None, register, bit, name): Intel SDM Vol. 2A, CPUID;
# AMD APM Vol. 3, Appendix E.
SOFTWARE_KVM_HIDDEN = [
    (0x1, None, "ecx", 0, "sse3"), (0x1, None, "ecx", 1, "pclmulqdq"),
    (0x1, None, "ecx", 3, "monitor"), (0x1, None, "ecx", 9, "ssse3"),
    (0x1, None, "ecx", 12, "fma"), (0x1, None, "ecx", 13, "cx16"),
    (0x1, None, "ecx", 19, "sse4_1"), (0x1, None, "ecx", 20, "sse4_2"),
    (0x1, None, "ecx", 22, "movbe"), (0x1, None, "ecx", 23, "popcnt"),
    (0x1, None, "ecx", 25, "aes"), (0x1, None, "ecx", 26, "xsave"),
    (0x1, None, "ecx", 27, "osxsave"), (0x1, None, "ecx", 28, "avx"),
    (0x1, None, "ecx", 29, "f16c"), (0x1, None, "ecx", 30, "rdrand"),
    (0x7, 0, "ebx", 3, "bmi1"), (0x7, 0, "ebx", 5, "avx2"), (0x7, 0, "ebx", 8, "bmi2"),
    (0x7, 0, "ebx", 16, "avx512f"), (0x7, 0, "ebx", 18, "rdseed"), (0x7, 0, "ebx", 19, "adx"),
    (0x7, 0, "ebx", 29, "sha_ni"), (0x7, 0, "ecx", 9, "vaes"), (0x7, 0, "ecx", 10, "vpclmulqdq"),
    (0x80000001, None, "ecx", 5, "abm"), (0x80000001, None, "ecx", 6, "sse4a"),
    (0x80000001, None, "ecx", 7, "misalignsse"), (0x80000001, None, "ecx", 8, "3dnowprefetch"),
    (0x80000001, None, "ecx", 11, "xop"), (0x80000001, None, "ecx", 16, "fma4"),
    # KVM's paravirtual features that work through hypercalls: on kvm_pvm a VMCALL from an
    # ordinary guest never completes (measured: the vCPU stays on the instruction), so a Linux
    # guest that kicks a halted vCPU (PV unhalt, PV spinlocks), sends IPIs or yields by
    # hypercall hangs.  Documentation/virt/kvm/x86/cpuid.rst, KVM_CPUID_FEATURES EAX.
    (0x4000_0001, None, "eax", 7, "pv-unhalt"), (0x4000_0001, None, "eax", 11, "pv-ipi"),
    (0x4000_0001, None, "eax", 13, "pv-sched-yield"),
]
# Leaves wiped whole: 0xD describes XSAVE state components.
SOFTWARE_KVM_HIDDEN_LEAVES = (0xD,)

KVM_CPUID_SIGNATURE = 0x4000_0000      # Documentation/virt/kvm/x86/cpuid.rst
KVM_CPUID_FEATURES = 0x4000_0001
# KVM_CPUID_FEATURES EAX bits (arch/x86/include/uapi/asm/kvm_para.h) that need KVM's own LAPIC.
KVM_FEATURE_PV_EOI = 6
KVM_FEATURE_PV_UNHALT = 7
KVM_FEATURE_PV_SEND_IPI = 11
KVM_FEATURE_ASYNC_PF_INT = 14
# What the userspace interrupt controllers do not emulate, and so must not be advertised.
USERSPACE_IRQCHIP_HIDDEN = [
    (0x1, None, "ecx", 21, "x2apic"), (0x1, None, "ecx", 24, "tsc-deadline"),
    (KVM_CPUID_FEATURES, None, "eax", KVM_FEATURE_PV_EOI, "pv-eoi"),
    (KVM_CPUID_FEATURES, None, "eax", KVM_FEATURE_PV_UNHALT, "pv-unhalt"),
    (KVM_CPUID_FEATURES, None, "eax", KVM_FEATURE_PV_SEND_IPI, "pv-ipi"),
    (KVM_CPUID_FEATURES, None, "eax", KVM_FEATURE_ASYNC_PF_INT, "async-pf-int"),
]
# Leaves whose subleaf selects the answer (kvm_cpuid_entry2 flags, asm/kvm.h).
INDEXED_LEAVES = (0x4, 0x7, 0xB, 0xD, 0xF, 0x10, 0x12, 0x14, 0x17, 0x18, 0x1D, 0x1E, 0x1F, 0x24,
                  0x8000_001D, 0x8000_0020)
CPU_KINDS = ("model", "host")


@dataclass
class CpuidPolicy:
    entries: list
    hidden: list[str]                       # cleared because software KVM cannot emulate them
    irqchip_hidden: list[str] = field(default_factory=list)   # cleared: the userspace APIC lacks them


def _entry(leaf: int, sub: int, regs) -> ioctls.kvm_cpuid_entry2:
    e = ioctls.kvm_cpuid_entry2(function=leaf, index=sub)
    e.eax, e.ebx, e.ecx, e.edx = (r & 0xFFFF_FFFF for r in regs)
    if leaf in INDEXED_LEAVES:
        e.flags = ioctls.KVM_CPUID_FLAG_SIGNIFCANT_INDEX
    return e


def _regs(e) -> list[int]:
    return [e.eax, e.ebx, e.ecx, e.edx]


def _clear(entries: list, table, hidden: list[str]) -> None:
    for e in entries:
        for leaf, sub, reg, bit, name in table:
            if e.function == leaf and (sub is None or e.index == sub):
                val = getattr(e, reg)
                if val & (1 << bit):
                    setattr(e, reg, val & ~(1 << bit))
                    if name not in hidden:
                        hidden.append(name)


def software_kvm_cpuid(entries: list) -> CpuidPolicy:
    """Clear the features KVM's emulator cannot run; returns the new list and what was hidden."""
    hidden: list[str] = []
    out = [ioctls.kvm_cpuid_entry2.from_buffer_copy(e) for e in entries]
    for e in out:
        if e.function in SOFTWARE_KVM_HIDDEN_LEAVES:
            e.eax = e.ebx = e.ecx = e.edx = 0
    _clear(out, SOFTWARE_KVM_HIDDEN, hidden)
    return CpuidPolicy(out, hidden)


def model_entries(model: cm.CpuModel, supported: list, topology: cm.Topology, apic_id: int, *,
                  paravirt: bool) -> list:
    """The model's leaves for one vCPU, feature bits ANDed with KVM's supported ones."""
    sup = {(e.function, e.index if e.function in INDEXED_LEAVES else 0): e for e in supported}
    cache4 = sorted(((k[1], _regs(e)) for k, e in sup.items() if k[0] == 4), key=lambda t: t[0])
    table = cm.leaves(model, topology, apic_id, cache_leaf4=[tuple(r) for _, r in cache4] or None)
    out = []
    for (leaf, sub), regs in table.items():
        for r in cm.FEATURE_REGISTERS.get((leaf, sub), ()):
            host = sup.get((leaf, sub))
            regs[r] &= _regs(host)[r] if host is not None else 0
        if leaf == 0x8000_0008 and (leaf, 0) in sup:
            regs[cm.EAX] = sup[(leaf, 0)].eax & 0xFFFF     # physical and linear address sizes
        out.append(_entry(leaf, sub, regs))
    if paravirt and (KVM_CPUID_SIGNATURE, 0) in sup:
        leaf1 = next(e for e in out if e.function == 1)
        leaf1.ecx |= 1 << cm.FEATURES["hypervisor"][3]
        for leaf in (KVM_CPUID_SIGNATURE, KVM_CPUID_FEATURES):
            if (leaf, 0) in sup:
                out.append(ioctls.kvm_cpuid_entry2.from_buffer_copy(sup[(leaf, 0)]))
    return out


def host_entries(supported: list, topology: cm.Topology, apic_id: int) -> list:
    """KVM's supported table, with this vCPU's APIC ID and topology in place of the host's."""
    out = []
    for leaf in (0xB, 0x1F):
        # KVM reports these leaves with one subleaf at most: all three levels are built here.
        if any(e.function == leaf for e in supported):
            out.extend(_entry(leaf, sub, cm.leaf_b(topology, apic_id, sub)) for sub in range(3))
    for src in supported:
        e = ioctls.kvm_cpuid_entry2.from_buffer_copy(src)
        if e.function in (0xB, 0x1F):
            continue
        if e.function == 1:
            htt = 1 << cm.FEATURES["htt"][3]
            e.ebx = (e.ebx & 0xFFFF) | (cm.leaf1_ebx(topology, apic_id, clflush=False) & 0xFFFF_0000)
            e.edx = (e.edx | htt) if topology.per_package > 1 else (e.edx & ~htt)
        elif e.function == 4:
            e.eax = cm.leaf4_topology(e.eax, topology)
        elif e.function == 0x8000_0008:
            # AMD APM Vol. 3, CPUID Fn8000_0008 ECX: NC [7:0] cores - 1, ApicIdSize [15:12].
            e.ecx = (e.ecx & ~0xF0FF) | (topology.package_shift << 12) | (topology.per_package - 1)
        elif e.function == 0x8000_001E:
            # AMD APM Vol. 3, CPUID Fn8000_001E: EAX extended APIC ID, EBX core ID, ECX node ID.
            e.eax = apic_id
            e.ebx = (e.ebx & ~0xFFFF) | ((topology.threads - 1) << 8) | ((apic_id >> topology.smt_shift) & 0xFF)
            e.ecx = e.ecx & ~0xFF
        out.append(e)
    return out


def guest_cpuid(supported: list, *, software_kvm: bool, cpu: str = "host", model: cm.CpuModel = cm.PC64,
                topology: cm.Topology = cm.Topology(), apic_id: int = 0, irqchip_in_kernel: bool = True,
                paravirt: bool = True) -> CpuidPolicy:
    """The CPUID table of the vCPU with ``apic_id`` (see the module docstring)."""
    if cpu == "model":
        entries = model_entries(model, supported, topology, apic_id, paravirt=paravirt)
    elif cpu == "host":
        entries = host_entries(supported, topology, apic_id)
    else:
        raise ValueError(f"unknown CPU kind {cpu!r}: expected one of {', '.join(CPU_KINDS)}")
    hidden: list[str] = []
    if software_kvm:
        policy = software_kvm_cpuid(entries)
        entries, hidden = policy.entries, policy.hidden
    irqchip_hidden: list[str] = []
    if not irqchip_in_kernel:
        _clear(entries, USERSPACE_IRQCHIP_HIDDEN, irqchip_hidden)
    return CpuidPolicy(entries, hidden, irqchip_hidden)
