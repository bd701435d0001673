"""The VMX instructions executed by code on the simulated CPU (SDM Vol. 3C ch. 30),
with their conventions (§30.2: VMsucceed, VMfailInvalid, VMfailValid and the
VM-instruction error numbers of Table 30-1), and VMX as a CPU option: off by
default, nothing of it visible (§23.6, §23.7)."""

import struct

import pytest

from trapvisor.machine.bus import IoBus
from trapvisor.machine.cpu import CPU, enter_flat_protected_mode
from trapvisor.machine.cpu.constants import CF, ZF
from trapvisor.machine.cpu.exits import ExceptionExit, HaltExit
from trapvisor.machine.cpu.vmx import capabilities as C
from trapvisor.machine.cpu.vmx import vmcs as F
from trapvisor.machine.memory import PhysicalMemory

from .vmxlib import VMCS, VMXON, host_cpu, setup_vmcs

CODE = 0x100000
PTR = 0x200000          # where the code finds its 64-bit memory operands
FLAGS_THEN_HLT = bytes.fromhex("9c5af4")        # pushfd; pop edx; hlt

VMXON_EAX = bytes.fromhex("f30fc730")
VMCLEAR_EAX = bytes.fromhex("660fc730")
VMPTRLD_EAX = bytes.fromhex("0fc730")
VMPTRST_EAX = bytes.fromhex("0fc738")
VMREAD_EBX_ECX = bytes.fromhex("0f78cb")
VMWRITE_ECX_EBX = bytes.fromhex("0f79cb")
VMLAUNCH, VMRESUME, VMXOFF, VMCALL = (bytes.fromhex(h) for h in ("0f01c2", "0f01c3", "0f01c4", "0f01c1"))


def run_root(cpu, code: bytes, *, ptr=None, ecx=0, ebx=0, cpl=0):
    """Run ``code`` + pushfd/pop edx/hlt in root operation; return (exit, EFLAGS)."""
    cpu.flush_code_cache()           # the test rewrites the code in place
    cpu.mem.ram[CODE:CODE + len(code) + 3] = code + FLAGS_THEN_HLT
    if ptr is not None:
        struct.pack_into("<Q", cpu.mem.ram, PTR, ptr)
    cpu.eip, cpu.regs[0], cpu.regs[1], cpu.regs[3] = CODE, PTR, ecx, ebx
    cpu.intercepts.hlt_exiting = True
    cpu.intercepts.exception_bitmap = 1 << 6 | 1 << 13      # #UD, #GP: back to the test
    exit = cpu.run(100)
    return exit, cpu.regs[2]


def faulted(exit, vector):
    return isinstance(exit, ExceptionExit) and exit.vector == vector


def vm_error(cpu):
    return cpu.vmx.current.get(F.VM_INSTRUCTION_ERROR)


def test_without_the_option_the_cpu_has_no_vmx():
    """The default CPU: CPUID.1:ECX.VMX clear, CR4.VMXE reserved (#GP), the VMX MSRs
    absent (#GP), VMXON not implemented, as before VMX was modelled."""
    cpu = CPU(PhysicalMemory(1 << 20), IoBus())
    enter_flat_protected_mode(cpu)
    assert cpu.vmx is None
    code = bytes.fromhex("b80100000031c90fa2f4")         # mov eax,1; xor ecx,ecx; cpuid; hlt
    cpu.mem.ram[0x1000:0x1000 + len(code)] = code
    cpu.eip = 0x1000
    cpu.intercepts.hlt_exiting = True
    cpu.run(10)
    assert cpu.regs[0] & 0xF00 and not cpu.regs[1] & (1 << 5)      # leaf 1 read; ECX.VMX clear
    from trapvisor.machine.cpu.cpu import CpuFault
    from trapvisor.machine.cpu.ops_msr import read_msr
    from trapvisor.machine.cpu.ops_sysregs import write_cr
    with pytest.raises(CpuFault):
        write_cr(cpu, 4, C.CR4_VMXE)
    for msr in (C.IA32_FEATURE_CONTROL, C.IA32_VMX_BASIC):
        with pytest.raises(CpuFault):
            read_msr(cpu, msr)
    cpu.mem.ram[0x2000:0x2004] = VMXON_EAX
    cpu.eip = 0x2000
    cpu.intercepts.exception_bitmap = 1 << 6
    ex = cpu.run(10)
    # A CPU without VMX has no VMXON: #UD, as on such a processor (SDM Vol. 3C §30.3 VMXON)
    assert isinstance(ex, ExceptionExit) and ex.vector == 6 and cpu.eip == 0x2000


@pytest.mark.parametrize("profile", ["early", "late"])
def test_with_the_option_cpuid_reports_vmx_and_the_msrs_describe_the_profile(profile):
    """§23.6: CPUID.1:ECX[5]; Appendix A: the capability MSRs of the profile."""
    cpu = host_cpu(profile)
    code = bytes.fromhex("b80100000031c90fa2")
    run_root(cpu, code)
    assert cpu.regs[1] & (1 << 5)
    from trapvisor.machine.cpu.ops_msr import read_msr
    basic = read_msr(cpu, C.IA32_VMX_BASIC)
    assert basic & 0x7FFFFFFF == C.VMCS_REVISION[profile]
    assert (basic >> 32) & 0x1FFF == 4096 and (basic >> 50) & 0xF == 6 and basic >> 48 & 1
    proc = read_msr(cpu, C.IA32_VMX_PROCBASED_CTLS)
    fc = read_msr(cpu, C.IA32_FEATURE_CONTROL)
    assert fc & C.FEATURE_CONTROL_LOCK and fc & C.FEATURE_CONTROL_VMX_OUTSIDE_SMX
    assert read_msr(cpu, C.IA32_VMX_CR0_FIXED0) == 0x80000021
    assert read_msr(cpu, C.IA32_VMX_CR4_FIXED0) == C.CR4_VMXE
    # Default-1 controls must be 1 (Appendix A.2): CR3-load/store exiting in the non-TRUE MSR.
    assert proc & C.CPU_CR3_LOAD_EXITING and proc & C.CPU_CR3_STORE_EXITING
    from trapvisor.machine.cpu.cpu import CpuFault
    if profile == "early":
        assert not proc >> 63 & 1, "no secondary controls on the early parts"
        assert not basic >> 55 & 1, "no TRUE MSRs"
        for msr in (C.IA32_VMX_PROCBASED_CTLS2, C.IA32_VMX_EPT_VPID_CAP, C.IA32_VMX_TRUE_PROCBASED_CTLS):
            with pytest.raises(CpuFault):
                read_msr(cpu, msr)
    else:
        assert proc >> 63 & 1 and basic >> 55 & 1
        proc2 = read_msr(cpu, C.IA32_VMX_PROCBASED_CTLS2) >> 32
        assert proc2 & C.SEC_ENABLE_EPT and proc2 & C.SEC_ENABLE_VPID and proc2 & C.SEC_UNRESTRICTED_GUEST
        true = read_msr(cpu, C.IA32_VMX_TRUE_PROCBASED_CTLS)
        assert not true & C.CPU_CR3_LOAD_EXITING, "TRUE controls let CR3-load exiting be 0"
        cap = read_msr(cpu, C.IA32_VMX_EPT_VPID_CAP)
        assert cap & C.EPT_CAP_WALK4 and cap & C.EPT_CAP_WB and cap & C.VPID_CAP_INVVPID
    with pytest.raises(CpuFault):            # locked: WRMSR is #GP(0) (§23.7)
        from trapvisor.machine.cpu.ops_msr import write_msr
        write_msr(cpu, C.IA32_FEATURE_CONTROL, 0)


def test_vmxon_needs_cr4_vmxe_and_cpl_0():
    """VMXON Operation: #UD with CR4.VMXE = 0; #GP(0) at CPL > 0."""
    cpu = host_cpu()
    cpu.cr4 &= ~C.CR4_VMXE
    ex, _ = run_root(cpu, VMXON_EAX, ptr=VMXON)
    assert faulted(ex, 6)
    cpu = host_cpu()
    cpu.cr0 &= ~(1 << 5)                     # CR0.NE clear: not a value VMX supports (A.7)
    ex, _ = run_root(cpu, VMXON_EAX, ptr=VMXON)
    assert faulted(ex, 13) and not cpu.vmx.vmxon
    cpu = host_cpu()
    cpu.set_cpl(3)
    ex, _ = run_root(cpu, VMXON_EAX, ptr=VMXON)
    assert faulted(ex, 13) and not cpu.vmx.vmxon


def test_vmxon_fails_invalid_on_a_bad_pointer_or_revision_and_succeeds_otherwise():
    cpu = host_cpu()
    _, fl = run_root(cpu, VMXON_EAX, ptr=VMXON + 8)          # not 4 KiB aligned
    assert fl & CF and not cpu.vmx.vmxon
    struct.pack_into("<I", cpu.mem.ram, VMXON, 0x1234)
    _, fl = run_root(cpu, VMXON_EAX, ptr=VMXON)               # wrong revision identifier
    assert fl & CF and not cpu.vmx.vmxon
    struct.pack_into("<I", cpu.mem.ram, VMXON, cpu.vmx.profile.revision)
    _, fl = run_root(cpu, VMXON_EAX, ptr=VMXON)
    assert not fl & (CF | ZF) and cpu.vmx.vmxon
    _, fl = run_root(cpu, VMXON_EAX, ptr=VMXON)               # in VMX root: VMfail(15), no VMCS
    assert fl & CF


def test_vmptrld_vmclear_vmptrst_and_the_current_vmcs():
    cpu = host_cpu()
    run_root(cpu, VMXON_EAX, ptr=VMXON)
    _, fl = run_root(cpu, VMPTRLD_EAX, ptr=VMCS)
    assert not fl & (CF | ZF) and cpu.vmx.current.address == VMCS
    _, fl = run_root(cpu, VMPTRST_EAX)
    assert struct.unpack_from("<Q", cpu.mem.ram, PTR)[0] == VMCS
    _, fl = run_root(cpu, VMPTRLD_EAX, ptr=VMXON)             # the VMXON pointer: error 10
    assert fl & ZF and vm_error(cpu) == 10
    struct.pack_into("<I", cpu.mem.ram, VMCS + 0x1000, 0x55)
    _, fl = run_root(cpu, VMPTRLD_EAX, ptr=VMCS + 0x1000)     # wrong revision: error 11
    assert fl & ZF and vm_error(cpu) == 11
    _, fl = run_root(cpu, VMCLEAR_EAX, ptr=VMXON)             # VMCLEAR of the VMXON pointer: 3
    assert fl & ZF and vm_error(cpu) == 3
    _, fl = run_root(cpu, VMCLEAR_EAX, ptr=VMCS)
    assert not fl & (CF | ZF) and cpu.vmx.current is None
    _, fl = run_root(cpu, VMPTRST_EAX)
    assert struct.unpack_from("<Q", cpu.mem.ram, PTR)[0] == 0xFFFFFFFFFFFFFFFF


def test_vmread_vmwrite_and_their_failures():
    """§30.3 VMREAD/VMWRITE: VMfailInvalid with no current VMCS, error 12 for an
    unsupported component, 13 for a VMWRITE to a read-only (exit-information) field;
    the VMCS survives VMCLEAR and VMPTRLD through its region in memory (§24.11)."""
    cpu = host_cpu()
    run_root(cpu, VMXON_EAX, ptr=VMXON)
    _, fl = run_root(cpu, VMREAD_EBX_ECX, ecx=F.GUEST_RIP)
    assert fl & CF
    run_root(cpu, VMPTRLD_EAX, ptr=VMCS)
    _, fl = run_root(cpu, VMWRITE_ECX_EBX, ecx=F.GUEST_RIP, ebx=0x12345678)
    assert not fl & (CF | ZF)
    _, fl = run_root(cpu, VMREAD_EBX_ECX, ecx=F.GUEST_RIP)
    assert cpu.regs[3] == 0x12345678
    _, fl = run_root(cpu, VMWRITE_ECX_EBX, ecx=0x6000 | 0x1F0, ebx=1)    # no such field
    assert fl & ZF and vm_error(cpu) == 12
    _, fl = run_root(cpu, VMWRITE_ECX_EBX, ecx=F.VM_EXIT_REASON, ebx=1)
    assert fl & ZF and vm_error(cpu) == 13
    _, fl = run_root(cpu, VMWRITE_ECX_EBX, ecx=F.TSC_OFFSET | 1, ebx=0xAABBCCDD)   # high half
    assert cpu.vmx.current.get(F.TSC_OFFSET) == 0xAABBCCDD << 32
    run_root(cpu, VMCLEAR_EAX, ptr=VMCS)
    assert struct.unpack_from("<I", cpu.mem.ram, VMCS)[0] == cpu.vmx.profile.revision
    cpu.vmx.cached.clear()                   # forget the processor's copy: read the region
    run_root(cpu, VMPTRLD_EAX, ptr=VMCS)
    run_root(cpu, VMREAD_EBX_ECX, ecx=F.GUEST_RIP)
    assert cpu.regs[3] == 0x12345678


def test_vmlaunch_and_vmresume_check_the_launch_state():
    """VMLAUNCH of a launched VMCS: error 4; VMRESUME of a clear one: error 5."""
    cpu = host_cpu()
    h = setup_vmcs(cpu, bytes.fromhex("0fa2"))
    cpu.eip = CODE
    _, fl = run_root(cpu, VMRESUME)
    assert fl & ZF and vm_error(cpu) == 5
    cpu.vmx.current.launched = True
    _, fl = run_root(cpu, VMLAUNCH)
    assert fl & ZF and vm_error(cpu) == 4
    del h


def test_vmcall_in_root_operation_fails_valid_with_error_1():
    cpu = host_cpu()
    run_root(cpu, VMXON_EAX, ptr=VMXON)
    run_root(cpu, VMPTRLD_EAX, ptr=VMCS)
    _, fl = run_root(cpu, VMCALL)
    assert fl & ZF and vm_error(cpu) == 1


def test_vmxoff_leaves_vmx_operation():
    cpu = host_cpu()
    run_root(cpu, VMXON_EAX, ptr=VMXON)
    _, fl = run_root(cpu, VMXOFF)
    assert not fl & (CF | ZF) and not cpu.vmx.vmxon
    ex, _ = run_root(cpu, VMREAD_EBX_ECX)            # outside VMX operation: #UD
    assert faulted(ex, 6)


def test_vmx_instructions_at_cpl_3_are_gp():
    cpu = host_cpu()
    run_root(cpu, VMXON_EAX, ptr=VMXON)
    cpu.set_cpl(3)
    ex, _ = run_root(cpu, VMREAD_EBX_ECX)
    assert faulted(ex, 13)


def test_vmlaunch_by_host_code_runs_the_guest_and_exits_to_host_rip():
    """A VMM in the simulated machine's own code: VMLAUNCH enters the guest; the guest's
    CPUID exits (§25.1.2); the processor goes on at HOST_RIP in root operation, with
    the root's own intercept controls back."""
    cpu = host_cpu()
    h = setup_vmcs(cpu, bytes.fromhex("0fa2"))
    host_code = 0x180000                 # the guest's code is at 0x100000
    host_rip = host_code + 0x100
    h.vmwrite("HOST_RIP", host_rip)
    cpu.mem.ram[host_rip:host_rip + 1] = b"\xf4"        # the host's exit handler: HLT
    cpu.mem.ram[host_code:host_code + 3] = VMLAUNCH
    cpu.eip = host_code
    cpu.intercepts.hlt_exiting = True
    ex = cpu.run(100)
    assert isinstance(ex, HaltExit) and cpu.eip == host_rip, ex
    assert h.vmread("VM_EXIT_REASON") == 10 and not cpu.vmx.nonroot
    assert h.vmread("GUEST_RIP") == 0x100000 and h.vmread("VM_EXIT_INSTRUCTION_LEN") == 2
    assert cpu.intercepts.hlt_exiting and not cpu.intercepts.cpuid_exiting
