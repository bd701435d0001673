"""The CPUID the guest sees: KVM's supported set, minus what software KVM can't run.

KVM_SET_CPUID2 is mandatory on this host's KVM (even ``nop; hlt`` fails
without it; kvm-on-these-machines.md).  When KVM is software (kvm_pvm),
guests run through KVM's instruction emulator, which fails on SSE3-and-later
encodings, XSAVE/XRSTOR, AVX, CMPXCHG16B and friends; those features are
cleared here so that a guest that honours CPUID avoids them.  The reference
also notes that masking alone does not reliably hide them from Linux, so the
Linux loader adds command-line workarounds too (see boot_linux.py).
"""

from __future__ import annotations

from dataclasses import dataclass

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
]
# Leaves wiped whole: 0xD describes XSAVE state components.
SOFTWARE_KVM_HIDDEN_LEAVES = (0xD,)


@dataclass
class CpuidPolicy:
    entries: list
    hidden: list[str]


def software_kvm_cpuid(entries: list) -> CpuidPolicy:
    """Clear the features KVM's emulator cannot run; returns the new list and what was hidden."""
    hidden: list[str] = []
    out = []
    for e in entries:
        e = ioctls.kvm_cpuid_entry2.from_buffer_copy(e)
        if e.function in SOFTWARE_KVM_HIDDEN_LEAVES:
            e.eax = e.ebx = e.ecx = e.edx = 0
        for leaf, sub, reg, bit, name in SOFTWARE_KVM_HIDDEN:
            if e.function == leaf and (sub is None or e.index == sub):
                val = getattr(e, reg)
                if val & (1 << bit):
                    setattr(e, reg, val & ~(1 << bit))
                    if name not in hidden:
                        hidden.append(name)
        out.append(e)
    return CpuidPolicy(out, hidden)


def guest_cpuid(supported: list, *, software_kvm: bool) -> CpuidPolicy:
    if software_kvm:
        return software_kvm_cpuid(supported)
    return CpuidPolicy(list(supported), [])
