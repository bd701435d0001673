"""The processor trapvisor's guests see through CPUID, as data shared by the simulated PC and KVM.

One model describes the virtual CPU: its vendor string, family, model and
stepping, brand string, and the feature flags a guest may rely on.  The
simulated CPU implements the ``pc`` profile (a Pentium II-class 32-bit core
with an x87 FPU, without MMX); under KVM a 32-bit PC guest is given exactly that profile, and a
64-bit Linux guest the ``pc64`` profile: the same vendor, family and
features plus what the x86-64 architecture requires of every processor.
``kvm/cpuid.py`` filters either by what the host's KVM supports
(KVM_GET_SUPPORTED_CPUID) and adds the KVM paravirtual leaves.

Topology: a vCPU's APIC ID is composed from its package, core and thread
numbers, each field ``ceil(log2(count))`` bits wide, thread in the low bits
(Intel SDM Vol. 3A section 10.12.8 "Hierarchical Mapping of CPUID Extended
Topology Leaf"; chapter 11 in recent editions).  The same numbers are
reported in CPUID leaf 1 EBX (initial APIC ID, maximum addressable IDs per
package) and EDX.HTT, leaf 4 EAX[31:14] (cores per package, threads sharing
each cache) and leaf 0BH (x2APIC ID, shift widths and counts per level).

Register layouts are from the Intel SDM Vol. 2A, CPUID instruction:
leaf 0 (maximum leaf, vendor in EBX EDX ECX), leaf 1 (Figure 3-6 version
information; Tables 3-10 and 3-11 feature flags), leaf 4 (deterministic cache
parameters), leaf 0BH (extended topology enumeration), leaves
80000000H-80000004H (maximum extended leaf, extended features, brand string)
and 80000008H (address sizes).

The vendor is "GenuineIntel": the model is an Intel P6-family core (family 6,
model 3, stepping 3: a Pentium II signature), so software takes its Intel
paths (an unknown vendor sends Linux down generic ones, and "TrapvisorCPU"
did so before).  The feature flags are exactly what the simulated CPU
implements, no more.

The simulated CPU's CPUID instruction (``machine/cpu/ops_msr.py``) answers
from :func:`cpuid` over this model's :func:`leaves`, so the two cannot
disagree.  A leaf above the maximum answers as Intel documents (SDM Vol. 2A,
CPUID: "If a value entered for CPUID.EAX is higher than the maximum input
value for basic or extended function for that processor then the data for
the highest basic information leaf is returned"); a model without extended
leaves treats every 8000xxxxH leaf so.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

EAX, EBX, ECX, EDX = range(4)
_REG_INDEX = {"eax": EAX, "ebx": EBX, "ecx": ECX, "edx": EDX}

# name -> (leaf, subleaf, register, bit).  SDM Vol. 2A CPUID: Table 3-10 (leaf 1 ECX),
# Table 3-11 (leaf 1 EDX), leaf 80000001H ECX/EDX.
FEATURES: dict[str, tuple[int, int, str, int]] = {
    # leaf 1 EDX
    "fpu": (1, 0, "edx", 0), "vme": (1, 0, "edx", 1), "de": (1, 0, "edx", 2), "pse": (1, 0, "edx", 3),
    "tsc": (1, 0, "edx", 4), "msr": (1, 0, "edx", 5), "pae": (1, 0, "edx", 6), "mce": (1, 0, "edx", 7),
    "cx8": (1, 0, "edx", 8), "apic": (1, 0, "edx", 9), "sep": (1, 0, "edx", 11), "mtrr": (1, 0, "edx", 12),
    "pge": (1, 0, "edx", 13), "mca": (1, 0, "edx", 14), "cmov": (1, 0, "edx", 15), "pat": (1, 0, "edx", 16),
    "pse36": (1, 0, "edx", 17), "clflush": (1, 0, "edx", 19), "mmx": (1, 0, "edx", 23),
    "fxsr": (1, 0, "edx", 24), "sse": (1, 0, "edx", 25), "sse2": (1, 0, "edx", 26), "htt": (1, 0, "edx", 28),
    # leaf 1 ECX
    "sse3": (1, 0, "ecx", 0), "ssse3": (1, 0, "ecx", 9), "cx16": (1, 0, "ecx", 13),
    "x2apic": (1, 0, "ecx", 21), "popcnt": (1, 0, "ecx", 23), "tsc_deadline": (1, 0, "ecx", 24),
    "xsave": (1, 0, "ecx", 26), "hypervisor": (1, 0, "ecx", 31),
    # leaf 80000001H
    "lahf_lm": (0x8000_0001, 0, "ecx", 0), "syscall": (0x8000_0001, 0, "edx", 11),
    "nx": (0x8000_0001, 0, "edx", 20), "lm": (0x8000_0001, 0, "edx", 29),
}

# The registers of each leaf that hold feature flags (the rest are fields).
FEATURE_REGISTERS = {(1, 0): (ECX, EDX), (7, 0): (EBX, ECX, EDX), (0x8000_0001, 0): (ECX, EDX)}

# What the simulated CPU implements: FPU (machine/cpu/ops_x87.py) VME DE PSE TSC MSR CX8 APIC
# SEP PGE CMOV.  Not MMX, FXSR, SSE, PAE, PAT, MTRR, MCE/MCA, CLFLUSH, PSE-36.
PC_FEATURES = frozenset({"fpu", "vme", "de", "pse", "tsc", "msr", "cx8", "apic", "sep", "pge", "cmov"})
# What every x86-64 processor has (AMD64 APM Vol. 3 Appendix D, "Instruction Subsets and CPUID
# Feature Flags": the long-mode baseline), which a 64-bit kernel checks for before it runs
# (Linux's verify_cpu: FPU PSE MSR PAE CX8 PGE CMOV FXSR SSE SSE2 and LM).
X86_64_FEATURES = frozenset({"fpu", "pae", "mce", "mtrr", "mca", "pat", "pse36", "clflush", "mmx",
                             "fxsr", "sse", "sse2", "syscall", "nx", "lm"})

CLFLUSH_LINE_QWORDS = 8          # leaf 1 EBX[15:8]: CLFLUSH line size in 8-byte units (64 bytes)

# Leaf 0BH level types (ECX[15:8]), SDM Vol. 2A Table 3-8 ("Leaf 0BH").
LEVEL_INVALID, LEVEL_SMT, LEVEL_CORE = 0, 1, 2


@dataclass(frozen=True)
class CpuModel:
    name: str
    vendor: str                    # 12 characters: leaf 0 EBX, EDX, ECX
    family: int
    model: int
    stepping: int
    brand: str                     # leaves 80000002H-80000004H (if max_extended_leaf reaches them)
    features: frozenset
    max_leaf: int
    max_extended_leaf: int         # 0: no extended leaves

    def signature(self) -> int:
        """Leaf 1 EAX (SDM Vol. 2A Figure 3-6): stepping, model, family, extended model and family."""
        fam, mod = self.family, self.model
        ext_fam = fam - 0xF if fam >= 0xF else 0
        base_fam = min(fam, 0xF)
        return ((ext_fam << 20) | ((mod >> 4) << 16) | (base_fam << 8) | ((mod & 0xF) << 4)
                | self.stepping)


INTEL_VENDOR = "GenuineIntel"

PC = CpuModel("pc", INTEL_VENDOR, family=6, model=3, stepping=3, brand="trapvisor virtual CPU",
              features=PC_FEATURES, max_leaf=1, max_extended_leaf=0)
PC64 = CpuModel("pc64", INTEL_VENDOR, family=6, model=3, stepping=3, brand="trapvisor virtual CPU",
                features=PC_FEATURES | X86_64_FEATURES, max_leaf=0xB, max_extended_leaf=0x8000_0008)
MODELS = {m.name: m for m in (PC, PC64)}


def _bits(n: int) -> int:
    """Width of an APIC ID field that numbers ``n`` things: ceil(log2(n))."""
    return (n - 1).bit_length()


@dataclass(frozen=True)
class Topology:
    """sockets x cores per socket x threads per core; one vCPU per thread."""
    sockets: int = 1
    cores: int = 1
    threads: int = 1

    @classmethod
    def for_cpus(cls, n: int) -> "Topology":
        """``--smp N``: N single-core, single-thread packages (what a kernel that reads only
        leaf 1 infers when HTT is clear, so every kernel sees the same machine)."""
        return cls(sockets=n)

    @property
    def count(self) -> int:
        return self.sockets * self.cores * self.threads

    @property
    def smt_shift(self) -> int:
        return _bits(self.threads)

    @property
    def package_shift(self) -> int:
        return _bits(self.threads) + _bits(self.cores)

    @property
    def per_package(self) -> int:
        return self.cores * self.threads

    def apic_id(self, index: int) -> int:
        """The APIC ID of the ``index``-th vCPU (package-major order)."""
        thread = index % self.threads
        core = (index // self.threads) % self.cores
        package = index // (self.threads * self.cores)
        return (package << self.package_shift) | (core << self.smt_shift) | thread

    def apic_ids(self) -> list[int]:
        return [self.apic_id(i) for i in range(self.count)]


def _vendor_regs(vendor: str) -> tuple[int, int, int]:
    v = vendor.encode("ascii")
    assert len(v) == 12, vendor
    return (int.from_bytes(v[0:4], "little"), int.from_bytes(v[4:8], "little"),
            int.from_bytes(v[8:12], "little"))


def feature_bits(features) -> dict[tuple[int, int], list[int]]:
    """(leaf, subleaf) -> [eax, ebx, ecx, edx] with the named feature bits set."""
    out: dict[tuple[int, int], list[int]] = {}
    for name in features:
        leaf, sub, reg, bit = FEATURES[name]
        out.setdefault((leaf, sub), [0, 0, 0, 0])[_REG_INDEX[reg]] |= 1 << bit
    return out


def leaf1_ebx(topology: Topology, apic_id: int, *, clflush: bool) -> int:
    """Leaf 1 EBX: initial APIC ID [31:24], max addressable logical IDs per package [23:16],
    CLFLUSH line size [15:8] (SDM Vol. 2A Table 3-8, leaf 01H)."""
    per_package = 1 << topology.package_shift
    return ((apic_id & 0xFF) << 24) | ((per_package & 0xFF) << 16) | ((CLFLUSH_LINE_QWORDS if clflush else 0) << 8)


def leaf4_topology(eax: int, topology: Topology) -> int:
    """Leaf 4 EAX with its topology fields set for ``topology``: [31:26] addressable core IDs
    per package - 1, [25:14] addressable logical IDs sharing this cache - 1 (threads of a core
    for levels 1 and 2, the whole package beyond)."""
    if eax & 0x1F == 0:
        return eax                  # cache type 0: no more caches
    level = (eax >> 5) & 7
    sharing = (1 << topology.smt_shift) if level <= 2 else (1 << topology.package_shift)
    cores = 1 << _bits(topology.cores)
    return (eax & 0x3FFF) | ((sharing - 1) << 14) | ((cores - 1) << 26)


def leaf_b(topology: Topology, apic_id: int, subleaf: int) -> tuple[int, int, int, int]:
    """Leaf 0BH: EAX[4:0] shift to the next level's ID, EBX[15:0] logical processors at this
    level, ECX[7:0] the subleaf, ECX[15:8] the level type, EDX the x2APIC ID."""
    if subleaf == 0:
        return topology.smt_shift, topology.threads, (LEVEL_SMT << 8), apic_id
    if subleaf == 1:
        return topology.package_shift, topology.per_package, (LEVEL_CORE << 8) | 1, apic_id
    return 0, 0, subleaf & 0xFF, apic_id


def brand_leaves(brand: str) -> dict[tuple[int, int], list[int]]:
    raw = brand.encode("ascii")[:47].ljust(48, b"\0")
    out = {}
    for i in range(3):
        chunk = raw[16 * i:16 * i + 16]
        out[(0x8000_0002 + i, 0)] = [int.from_bytes(chunk[j:j + 4], "little") for j in range(0, 16, 4)]
    return out


def leaves(model: CpuModel, topology: Topology = Topology(), apic_id: int = 0,
           cache_leaf4: list[tuple[int, int, int, int]] | None = None) -> dict[tuple[int, int], list[int]]:
    """Every leaf the model reports for the vCPU with ``apic_id``: (leaf, subleaf) -> [eax, ebx, ecx, edx].

    ``cache_leaf4``: the host's leaf 4 subleaves (cache geometry; the topology
    fields are rewritten), when the model reaches leaf 4.
    """
    features = set(model.features)
    if topology.per_package > 1:
        features.add("htt")
    bits = feature_bits(features)
    out: dict[tuple[int, int], list[int]] = {}
    b, d, c = _vendor_regs(model.vendor)
    out[(0, 0)] = [model.max_leaf, b, c, d]
    leaf1 = bits.get((1, 0), [0, 0, 0, 0])
    out[(1, 0)] = [model.signature(), leaf1_ebx(topology, apic_id, clflush="clflush" in features),
                   leaf1[ECX], leaf1[EDX]]
    for leaf in range(2, model.max_leaf + 1):
        out[(leaf, 0)] = [0, 0, 0, 0]
    if model.max_leaf >= 4:
        subs = cache_leaf4 or [(0, 0, 0, 0)]
        for i, (a, bb, cc, dd) in enumerate(subs):
            out[(4, i)] = [leaf4_topology(a, topology), bb, cc, dd]
    if model.max_leaf >= 0xB:
        for sub in range(3):
            out[(0xB, sub)] = list(leaf_b(topology, apic_id, sub))
    if model.max_extended_leaf:
        out[(0x8000_0000, 0)] = [model.max_extended_leaf, 0, 0, 0]
        ext = bits.get((0x8000_0001, 0), [0, 0, 0, 0])
        out[(0x8000_0001, 0)] = [0, 0, ext[ECX], ext[EDX]]
        if model.max_extended_leaf >= 0x8000_0004:
            out.update(brand_leaves(model.brand))
        for leaf in range(0x8000_0005, model.max_extended_leaf + 1):
            out[(leaf, 0)] = [0, 0, 0, 0]
    return out


# Leaves whose answer depends on ECX (SDM Vol. 2A CPUID: 04H deterministic cache parameters,
# 0BH extended topology); every other leaf ignores the subleaf.
SUBLEAF_INDEXED = frozenset({4, 7, 0xB})


@functools.lru_cache(maxsize=None)
def _table(model: CpuModel) -> dict:
    return leaves(model)


def cpuid(model: CpuModel, leaf: int, subleaf: int = 0) -> tuple[int, int, int, int]:
    """What CPUID answers for ``leaf``/``subleaf`` (EAX, EBX, ECX, EDX) on a one-CPU ``model``.

    Out-of-range leaves return the highest basic leaf's data (SDM Vol. 2A,
    CPUID, the note on values above the maximum); leaves in range that the
    model does not describe are all zero (reserved).
    """
    table = _table(model)
    extended = leaf >= 0x8000_0000
    if (not extended and leaf > model.max_leaf) or (extended and leaf > model.max_extended_leaf):
        leaf, subleaf = model.max_leaf, 0
    regs = table.get((leaf, subleaf if leaf in SUBLEAF_INDEXED else 0))
    return tuple(regs) if regs else (0, 0, 0, 0)
