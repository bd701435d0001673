"""VM entry (SDM Vol. 3C ch. 26): the checks on the controls (§26.2.1, VMfailValid(7)),
the host state (§26.2.2, VMfailValid(8)) and the guest state (§26.3.1, a VM-entry
failure: exit reason 33 with bit 31, §26.8), loading the guest state (§26.3.2),
and event injection (§26.6)."""

import struct

import pytest

from trapvisor.machine.cpu.exits import HaltExit, VmExit
from trapvisor.machine.cpu.vmx import VmxFailure
from trapvisor.machine.cpu.vmx import capabilities as C

from .vmxlib import GUEST_CODE, HANDLER, guest_tables, host_cpu, run_guest, setup_vmcs

HLT = b"\xf4"


def launch_fails(h, error):
    with pytest.raises(VmxFailure) as e:
        h.launch()
    assert e.value.error == error
    assert not h.vmx.nonroot


@pytest.mark.parametrize("field,value", [
    ("PIN_BASED_VM_EXEC_CONTROL", 0),                              # default-1 bits clear (A.3.1)
    ("CPU_BASED_VM_EXEC_CONTROL", 1 << 0),                         # reserved, not allowed-1
    ("VM_EXIT_CONTROLS", 0x36DFF | C.EXIT_HOST_ADDRESS_SPACE_SIZE),  # no IA-32e host
    ("CR3_TARGET_COUNT", 5),                                       # more than IA32_VMX_MISC says
    ("VM_ENTRY_INTR_INFO_FIELD", 1 << 31 | 3 << 8 | 40),           # hardware exception vector > 31
    ("VM_ENTRY_INTR_INFO_FIELD", 1 << 31 | 3 << 8 | 13),           # #GP without its error code
    ("VM_ENTRY_INTR_INFO_FIELD", 1 << 31 | 1 << 8 | 2),            # reserved type 1
    ("VM_ENTRY_INTR_INFO_FIELD", 1 << 31 | 4 << 8 | 0x80),         # INT n with length 0
])
def test_invalid_controls_fail_the_instruction_with_error_7(field, value):
    """§26.2.1.1-26.2.1.3."""
    h = setup_vmcs(host_cpu(), HLT)
    h.vmwrite(field, value)
    launch_fails(h, 7)


def test_secondary_controls_do_not_exist_on_the_early_profile():
    h = setup_vmcs(host_cpu("early"), HLT)
    h.vmwrite("CPU_BASED_VM_EXEC_CONTROL", h.vmread("CPU_BASED_VM_EXEC_CONTROL") | C.CPU_ACTIVATE_SECONDARY)
    h.vmwrite("SECONDARY_VM_EXEC_CONTROL", C.SEC_ENABLE_EPT)
    launch_fails(h, 7)


def test_cr3_exiting_may_be_0_only_with_true_controls():
    """Appendix A.2: CR3-load/store exiting are default-1; only a processor with the
    TRUE MSRs (IA32_VMX_BASIC bit 55) lets them be 0."""
    for profile, ok in (("early", False), ("late", True)):
        h = setup_vmcs(host_cpu(profile), HLT, proc=C.CPU_HLT_EXITING)
        proc = h.vmread("CPU_BASED_VM_EXEC_CONTROL")
        h.vmwrite("CPU_BASED_VM_EXEC_CONTROL", proc & ~(C.CPU_CR3_LOAD_EXITING | C.CPU_CR3_STORE_EXITING))
        if ok:
            assert isinstance(run_guest(h.cpu, h), VmExit)
        else:
            launch_fails(h, 7)


@pytest.mark.parametrize("proc2,eptp,vpid", [
    (C.SEC_UNRESTRICTED_GUEST, None, 0),             # unrestricted guest needs EPT
    (C.SEC_ENABLE_VPID, None, 0),                    # VPID 0 with VPIDs enabled
    (C.SEC_ENABLE_EPT, 0x8000 | 1 << 3 | 6, 0),      # EPTP: a 2-level walk
    (C.SEC_ENABLE_EPT, 0x8000 | 3 << 3 | 5, 0),      # EPTP: memory type 5
])
def test_secondary_control_consistency_is_checked(proc2, eptp, vpid):
    h = setup_vmcs(host_cpu(), HLT, proc2=proc2 | (C.SEC_ENABLE_EPT if eptp is not None else 0))
    if eptp is not None:
        h.vmwrite("EPT_POINTER", eptp)
    h.vmwrite("VIRTUAL_PROCESSOR_ID", vpid)
    launch_fails(h, 7)


@pytest.mark.parametrize("field,value", [
    ("HOST_CR0", 0x21),               # PG clear (IA32_VMX_CR0_FIXED0)
    ("HOST_CR4", 0x10),               # VMXE clear
    ("HOST_CS_SELECTOR", 0),
    ("HOST_TR_SELECTOR", 0x1B),       # RPL 3
    ("HOST_SS_SELECTOR", 0),          # null SS: only for a 64-bit host
])
def test_invalid_host_state_fails_the_instruction_with_error_8(field, value):
    """§26.2.2."""
    h = setup_vmcs(host_cpu(), HLT)
    h.vmwrite(field, value)
    launch_fails(h, 8)


@pytest.mark.parametrize("field,value,qualification", [
    ("GUEST_CS_AR_BYTES", 0xC093, 0),          # CS must be code
    ("GUEST_CR0", 0x80000020, 0),              # PE clear without unrestricted guest
    ("GUEST_CR4", 0x10, 0),                    # VMXE clear (IA32_VMX_CR4_FIXED0)
    ("GUEST_RFLAGS", 0x0, 0),                  # bit 1 must be 1
    ("GUEST_SS_SELECTOR", 0x13, 0),            # SS.RPL != CS.RPL
    ("GUEST_TR_AR_BYTES", 0x89, 0),            # TR: an available TSS
    ("GUEST_DS_AR_BYTES", 0xC092, 0),          # data segment not accessed
    ("GUEST_GDTR_LIMIT", 0x10000, 0),          # limit bits 31:16
    ("GUEST_INTERRUPTIBILITY_INFO", 1, 0),     # blocking by STI with IF = 0
    ("GUEST_ACTIVITY_STATE", 3, 0),            # wait-for-SIPI, not supported
    ("VMCS_LINK_POINTER", 0, 4),               # must be all ones (§26.3.1.5)
])
def test_invalid_guest_state_is_a_vm_entry_failure(field, value, qualification):
    """§26.3.1 and §26.8: exit reason 33 with bit 31 set, the qualification, the host
    state loaded, the guest not entered."""
    cpu = host_cpu()
    h = setup_vmcs(cpu, HLT)
    h.vmwrite("HOST_RIP", 0x12345)
    h.vmwrite(field, value)
    ex = h.launch()
    assert isinstance(ex, VmExit) and ex.entry_failure and ex.basic == 33
    assert h.vmread("VM_EXIT_REASON") == 1 << 31 | 33
    assert h.vmread("EXIT_QUALIFICATION") == qualification
    assert cpu.eip == 0x12345 and not cpu.vmx.nonroot and not h.vmx.current.launched


def test_injecting_an_external_interrupt_with_if_0_is_invalid_guest_state():
    h = setup_vmcs(host_cpu(), HLT)
    h.vmwrite("VM_ENTRY_INTR_INFO_FIELD", 1 << 31 | 0x30)
    ex = h.launch()
    assert ex.entry_failure and ex.basic == 33


def test_entry_with_blocking_by_mov_ss_fails_with_error_26():
    cpu = host_cpu()
    h = setup_vmcs(cpu, HLT)
    cpu.inhibit_irq = cpu.ss_shadow = True
    launch_fails(h, 26)


def test_a_successful_entry_loads_the_guest_state_and_marks_the_vmcs_launched():
    """§26.3.2: the processor has the guest's registers; VMLAUNCH sets the launch state."""
    cpu = host_cpu()
    h = setup_vmcs(cpu, bytes.fromhex("0fa2"), proc=C.CPU_HLT_EXITING)
    h.vmwrite("GUEST_RSP", 0x8FFF0)
    h.vmwrite("GUEST_RFLAGS", 0x202 | 1 << 4)     # IF, AF
    h.vmwrite("GUEST_FS_BASE", 0x5000)
    h.vmwrite("GUEST_TR_BASE", 0x7800)
    assert h.launch() is None
    assert cpu.vmx.nonroot and h.vmx.current.launched
    assert cpu.eip == GUEST_CODE and cpu.regs[4] == 0x8FFF0 and cpu.get_eflags() & 0x212 == 0x212
    assert cpu.base[4] == 0x5000 and cpu.tr_base == 0x7800 and cpu.cpl == 0
    assert cpu.intercepts.cpuid_exiting and cpu.intercepts.hlt_exiting
    ex = cpu.run(100)
    assert ex.name == "EXIT_REASON_CPUID" and h.vmread("GUEST_RSP") == 0x8FFF0
    assert h.vmread("GUEST_FS_BASE") == 0x5000 and h.vmread("GUEST_RFLAGS") & 0x212 == 0x212


@pytest.mark.parametrize("info,error,length,vector,pushed_eip", [
    (1 << 31 | 0 << 8 | 0x30, None, 0, 0x30, GUEST_CODE),               # external interrupt
    (1 << 31 | 3 << 8 | 1 << 11 | 13, 0x18, 0, 13, GUEST_CODE),         # #GP(18h)
    (1 << 31 | 4 << 8 | 0x21, None, 2, 0x21, GUEST_CODE + 2),           # INT 21h, length 2
])
def test_event_injection_delivers_through_the_guest_idt(info, error, length, vector, pushed_eip):
    """§26.6: the event is delivered as if it had arisen at the guest's RIP, whatever the
    exiting controls say (external-interrupt exiting and the exception bitmap are on
    here); a software interrupt returns past the instruction length; the field is
    cleared (§24.8.3)."""
    cpu = host_cpu()
    h = setup_vmcs(cpu, bytes.fromhex("90" * 8), proc=C.CPU_HLT_EXITING,
                   pin=C.PIN_EXTERNAL_INTERRUPT_EXITING)
    h.vmwrite("EXCEPTION_BITMAP", 1 << 13)
    guest_tables(cpu)
    h.vmwrite("GUEST_RFLAGS", 0x202)
    h.vmwrite("VM_ENTRY_INTR_INFO_FIELD", info)
    if error is not None:
        h.vmwrite("VM_ENTRY_EXCEPTION_ERROR_CODE", error)
    h.vmwrite("VM_ENTRY_INSTRUCTION_LEN", length)
    ex = run_guest(cpu, h)
    assert ex.name == "EXIT_REASON_HLT"
    assert h.vmread("GUEST_RIP") == HANDLER + 16 * vector
    esp = h.vmread("GUEST_RSP")
    frame = struct.unpack_from("<4I", cpu.mem.ram, esp)
    if error is not None:
        assert frame[0] == error
        frame = frame[1:]
    assert frame[0] == pushed_eip and frame[1] == 0x08 and frame[2] & 0x200
    assert not h.vmread("VM_ENTRY_INTR_INFO_FIELD") >> 31
