"""Model-specific registers and what the model tells: RDMSR, WRMSR, RDTSC,
CPUID, and SYSENTER/SYSEXIT, which take their targets from MSRs.

RDMSR and WRMSR are privileged (SDM Vol. 2 RDMSR/WRMSR; the MSRs: SDM Vol.
4): the TSC, IA32_APIC_BASE, the three SYSENTER MSRs, and a few that read as
0 until written; any other MSR is #GP(0).  The TSC counts retired
instructions (``cpu.icount`` plus an offset that a WRMSR to it sets), so
guest time is deterministic; RDTSC is #GP(0) at CPL > 0 with CR4.TSD (SDM
Vol. 2 RDTSC).  CPUID reports what this CPU implements, from the one model
of ``machine/cpuid_model.py`` (SDM Vol. 2A CPUID).
SYSENTER and SYSEXIT load flat segments without reading descriptors (SDM
Vol. 2 SYSENTER, SYSEXIT).

With VMX (``cpu.vmx``, ``vmx/``): CPUID.1:ECX.VMX, IA32_FEATURE_CONTROL and
the IA32_VMX_* capability MSRs (SDM Vol. 3C §23.6-23.7, Appendix A); RDTSC,
CPUID, RDMSR and WRMSR honour their exiting controls and TSC offsetting
(``intercepts.py``).  Without it, nothing here changes.
"""

from __future__ import annotations

import iced_x86 as iced

from .. import cpuid_model

from .constants import (
    CR0_PE, CR4_PCE, CR4_TSD, CS, GP, IF, MSR_IA32_APIC_BASE, MSR_IA32_SYSENTER_CS,
    MSR_IA32_SYSENTER_EIP, MSR_IA32_SYSENTER_ESP, MSR_IA32_TSC, RF, SS, VM,
)
from .cpu import CpuFault, ExitFault
from .exits import InstructionExit
from .privilege import require_cpl0, strict_trap
from .registry import END, JUMP, NORMAL, handles

M = iced.Mnemonic


# ------------------------------------------------------ MSRs, CPUID, TSC
@handles(M.RDMSR)
def c_rdmsr(cpu, ins):
    regs = cpu.regs

    ic, length = cpu.intercepts, ins.len

    def rdmsr():
        require_cpl0(cpu)
        if ic.msr_exiting is not None and ic.exits_on_msr(regs[1], False):
            raise ExitFault(InstructionExit("rdmsr", length, regs[1]))
        v = read_msr(cpu, regs[1])
        regs[0], regs[2] = v & 0xFFFFFFFF, v >> 32
    return rdmsr, NORMAL


@handles(M.WRMSR)
def c_wrmsr(cpu, ins):
    regs = cpu.regs

    ic, length = cpu.intercepts, ins.len

    def wrmsr():
        require_cpl0(cpu)
        if ic.msr_exiting is not None and ic.exits_on_msr(regs[1], True):
            raise ExitFault(InstructionExit("wrmsr", length, regs[1]))
        write_msr(cpu, regs[1], (regs[2] << 32) | regs[0])
    return wrmsr, END


def read_tsc(cpu) -> int:
    return (cpu.icount + cpu.tsc_offset + cpu.intercepts.tsc_offset) & 0xFFFFFFFFFFFFFFFF


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
    if cpu.vmx is not None:
        v = cpu.vmx.read_msr(n)
        if v is not None:
            return v
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
    elif cpu.vmx is not None and cpu.vmx.write_msr(n, v):
        pass
    else:
        raise CpuFault(GP, 0)


@handles(M.RDTSC)
def c_rdtsc(cpu, ins):
    regs = cpu.regs

    ic, length = cpu.intercepts, ins.len

    def rdtsc():
        if cpu.cr4 & CR4_TSD and cpu.cpl > 0:
            raise CpuFault(GP, 0)
        if ic.rdtsc_exiting:
            raise ExitFault(InstructionExit("rdtsc", length))
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


APIC_FEATURE = 1 << 9              # CPUID.1:EDX.APIC (SDM Vol. 2A Table 3-11)
APIC_GLOBAL_ENABLE = 1 << 11      # IA32_APIC_BASE bit 11 (SDM Vol. 3A 10.4.4)


CPUID_ECX_VMX = 1 << 5      # CPUID.1:ECX.VMX (SDM Vol. 3C §23.6)


@handles(M.CPUID)
def c_cpuid(cpu, ins):
    regs = cpu.regs
    model = cpuid_model.PC

    ic, length = cpu.intercepts, ins.len

    def cpuid():
        if ic.cpuid_exiting:
            raise ExitFault(InstructionExit("cpuid", length))
        leaf = regs[0]
        a, b, c, d = cpuid_model.cpuid(model, leaf, regs[1])
        if leaf == 1:
            if not cpu.apic_base & APIC_GLOBAL_ENABLE:
                d &= ~APIC_FEATURE    # a globally disabled local APIC is absent from CPUID (SDM 10.4.3)
            if cpu.vmx is not None:
                c |= CPUID_ECX_VMX
        regs[0], regs[3], regs[1], regs[2] = a, b, c, d
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
