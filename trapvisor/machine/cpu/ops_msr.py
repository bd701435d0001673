"""Model-specific registers and what the model tells: RDMSR, WRMSR, RDTSC,
CPUID, and SYSENTER/SYSEXIT, which take their targets from MSRs.

RDMSR and WRMSR are privileged (SDM Vol. 2 RDMSR/WRMSR; the MSRs: SDM Vol.
4): the TSC, IA32_APIC_BASE, the three SYSENTER MSRs, and a few that read as
0 until written; any other MSR is #GP(0).  The TSC counts retired
instructions (``cpu.icount`` plus an offset that a WRMSR to it sets), so
guest time is deterministic; RDTSC is #GP(0) at CPL > 0 with CR4.TSD (SDM
Vol. 2 RDTSC).  CPUID reports what this CPU implements (SDM Vol. 2 CPUID).
SYSENTER and SYSEXIT load flat segments without reading descriptors (SDM
Vol. 2 SYSENTER, SYSEXIT).
"""

from __future__ import annotations

import iced_x86 as iced

from .constants import (
    CR0_PE, CR4_PCE, CR4_TSD, CS, GP, IF, MSR_IA32_APIC_BASE, MSR_IA32_SYSENTER_CS,
    MSR_IA32_SYSENTER_EIP, MSR_IA32_SYSENTER_ESP, MSR_IA32_TSC, RF, SS, VM,
)
from .cpu import CpuFault
from .privilege import require_cpl0, strict_trap
from .registry import END, JUMP, NORMAL, handles

M = iced.Mnemonic


# ------------------------------------------------------ MSRs, CPUID, TSC
@handles(M.RDMSR)
def c_rdmsr(cpu, ins):
    regs = cpu.regs

    def rdmsr():
        require_cpl0(cpu)
        v = read_msr(cpu, regs[1])
        regs[0], regs[2] = v & 0xFFFFFFFF, v >> 32
    return rdmsr, NORMAL


@handles(M.WRMSR)
def c_wrmsr(cpu, ins):
    regs = cpu.regs

    def wrmsr():
        require_cpl0(cpu)
        write_msr(cpu, regs[1], (regs[2] << 32) | regs[0])
    return wrmsr, END


def read_tsc(cpu) -> int:
    return (cpu.icount + cpu.tsc_offset) & 0xFFFFFFFFFFFFFFFF


def read_msr(cpu, n: int) -> int:
    if n == MSR_IA32_TSC:
        return read_tsc(cpu)
    if n == MSR_IA32_APIC_BASE:
        return cpu.apic_base
    if n == MSR_IA32_SYSENTER_CS:
        return cpu.sysenter_cs
    if n == MSR_IA32_SYSENTER_ESP:
        return cpu.sysenter_esp
    if n == MSR_IA32_SYSENTER_EIP:
        return cpu.sysenter_eip
    if n in cpu.msr:
        return cpu.msr[n]
    if n in (0x1A0, 0x277, 0x8B, 0x17, 0xFE, 0x2FF, 0x179, 0x17A):
        return cpu.msr.get(n, 0)
    raise CpuFault(GP, 0)


def write_msr(cpu, n: int, v: int) -> None:
    if n == MSR_IA32_TSC:
        cpu.tsc_offset = v - cpu.icount
    elif n == MSR_IA32_APIC_BASE:
        cpu.apic_base = v & 0xFFFFF900
    elif n == MSR_IA32_SYSENTER_CS:
        cpu.sysenter_cs = v & 0xFFFF
    elif n == MSR_IA32_SYSENTER_ESP:
        cpu.sysenter_esp = v & 0xFFFFFFFF
    elif n == MSR_IA32_SYSENTER_EIP:
        cpu.sysenter_eip = v & 0xFFFFFFFF
    elif n in (0x1A0, 0x277, 0x8B, 0x2FF, 0x179, 0x17A) or n in cpu.msr:
        cpu.msr[n] = v
    else:
        raise CpuFault(GP, 0)


@handles(M.RDTSC)
def c_rdtsc(cpu, ins):
    regs = cpu.regs

    def rdtsc():
        if cpu.cr4 & CR4_TSD and cpu.cpl > 0:
            raise CpuFault(GP, 0)
        t = read_tsc(cpu)
        regs[0], regs[2] = t & 0xFFFFFFFF, t >> 32
    return rdtsc, NORMAL


@handles(M.RDPMC)
def c_rdpmc(cpu, ins):
    """RDPMC (SDM Vol. 2B RDPMC): #GP(0) at CPL > 0 unless CR4.PCE is set, and #GP(0) for an
    ECX that names no counter.  The model has no performance counters (CPUID leaf 0AH, the
    architectural PMU, is beyond its maximum leaf, and the P6 PerfCtr MSRs are #GP), so every
    index is invalid and RDPMC always faults once the privilege check passes."""
    def rdpmc():
        if cpu.cpl > 0 and not cpu.cr4 & CR4_PCE:
            raise CpuFault(GP, 0)
        raise CpuFault(GP, 0)          # no counter: ECX is never a valid index
    return rdpmc, NORMAL


# CPUID.1:EDX feature bits we implement (SDM Vol. 2 CPUID, Table 3-11).
CPUID_EDX = (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 8) | (1 << 9) \
    | (1 << 11) | (1 << 13) | (1 << 15)   # VME DE PSE TSC MSR CX8 APIC SEP PGE CMOV


@handles(M.CPUID)
def c_cpuid(cpu, ins):
    regs = cpu.regs

    def cpuid():
        leaf = regs[0]
        if leaf == 0:
            # Vendor "GenuineIntel" in EBX, EDX, ECX (cpuid_model.INTEL_VENDOR).
            v = b"GenuineIntel"
            regs[0] = 1
            regs[3] = int.from_bytes(v[0:4], "little")
            regs[2] = int.from_bytes(v[4:8], "little")
            regs[1] = int.from_bytes(v[8:12], "little")
        elif leaf == 1:
            regs[0] = 0x00000633      # family 6, model 3, stepping 3 (a Pentium II-class core)
            regs[3] = 0x00010000      # APIC ID 0, 1 logical processor
            regs[1] = 0
            regs[2] = CPUID_EDX & ~(0 if cpu.apic_base & (1 << 11) else (1 << 9))
        else:
            regs[0] = regs[1] = regs[2] = regs[3] = 0
    return cpuid, NORMAL


# ------------------------------------------------------------ SYSENTER/SYSEXIT
@handles(M.SYSENTER)
def c_sysenter(cpu, ins):
    def sysenter():
        strict_trap(cpu)
        cs = cpu.sysenter_cs
        if not cpu.cr0 & CR0_PE or cs & ~3 == 0:
            raise CpuFault(GP, 0)
        # Flat segments, loaded without reading descriptors (SDM Vol. 2 SYSENTER).
        cpu.eflags_rest &= ~(VM | IF | RF)
        cpu.set_segment_cache(CS, cs & 0xFFFC, 0, 0xFFFFFFFF, 0xC09B)
        cpu.set_segment_cache(SS, (cs + 8) & 0xFFFC, 0, 0xFFFFFFFF, 0xC093)
        cpu.set_cpl(0)
        cpu.regs[4] = cpu.sysenter_esp
        cpu.eip = cpu.sysenter_eip
    return sysenter, JUMP


@handles(M.SYSEXIT)
def c_sysexit(cpu, ins):
    regs = cpu.regs

    def sysexit():
        cs = cpu.sysenter_cs
        if not cpu.cr0 & CR0_PE or cs & ~3 == 0 or cpu.cpl != 0:
            raise CpuFault(GP, 0)
        cpu.set_segment_cache(CS, ((cs + 16) & 0xFFFC) | 3, 0, 0xFFFFFFFF, 0xC0FB)
        cpu.set_segment_cache(SS, ((cs + 24) & 0xFFFC) | 3, 0, 0xFFFFFFFF, 0xC0F3)
        cpu.set_cpl(3)
        regs[4] = regs[1]
        cpu.eip = regs[2]
    return sysexit, JUMP
