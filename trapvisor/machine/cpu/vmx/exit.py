"""VM exit (SDM Vol. 3C ch. 27): from a CPU exit to the VMCS and the host.

In non-root operation the intercept controls are the VMCS's (``entry.py``),
so a typed exit of ``CPU.run`` (``exits.py``) is a VM exit; this module gives
its basic exit reason (Appendix C), exit qualification (§27.2.1, Tables 27-1
to 27-8), the VM-exit interruption information (§27.2.2), instruction length
and information (§27.2.4, §27.2.5), guest-linear and guest-physical address;
then it saves the guest state (§27.3), stores the VM-exit MSR-store list,
loads the host state (§27.5) and puts the root's intercept controls back.

Not VM exits: the instruction budget of the caller and a requested exit
(the simulated machine's, not the guest's), the guest's exit port, and the
machine stops that are this model's limits (an unimplemented instruction);
the processor then stays in non-root operation.  A triple fault in the guest
is exit reason 2 (§25.2).
"""

from __future__ import annotations

from .. import exits as X
from . import capabilities as C
from .state import load_host, save_guest

# Basic exit reasons (Appendix C, Table C-1), named as the SDM's list is in C
# headers (EXIT_REASON_*).
EXIT_REASONS = {
    0: "EXIT_REASON_EXCEPTION_NMI", 1: "EXIT_REASON_EXTERNAL_INTERRUPT",
    2: "EXIT_REASON_TRIPLE_FAULT", 3: "EXIT_REASON_INIT", 4: "EXIT_REASON_SIPI",
    7: "EXIT_REASON_INTERRUPT_WINDOW", 8: "EXIT_REASON_NMI_WINDOW", 9: "EXIT_REASON_TASK_SWITCH",
    10: "EXIT_REASON_CPUID", 12: "EXIT_REASON_HLT", 13: "EXIT_REASON_INVD",
    14: "EXIT_REASON_INVLPG", 15: "EXIT_REASON_RDPMC", 16: "EXIT_REASON_RDTSC",
    18: "EXIT_REASON_VMCALL", 19: "EXIT_REASON_VMCLEAR", 20: "EXIT_REASON_VMLAUNCH",
    21: "EXIT_REASON_VMPTRLD", 22: "EXIT_REASON_VMPTRST", 23: "EXIT_REASON_VMREAD",
    24: "EXIT_REASON_VMRESUME", 25: "EXIT_REASON_VMWRITE", 26: "EXIT_REASON_VMOFF",
    27: "EXIT_REASON_VMON", 28: "EXIT_REASON_CR_ACCESS", 29: "EXIT_REASON_DR_ACCESS",
    30: "EXIT_REASON_IO_INSTRUCTION", 31: "EXIT_REASON_MSR_READ", 32: "EXIT_REASON_MSR_WRITE",
    33: "EXIT_REASON_INVALID_STATE", 34: "EXIT_REASON_MSR_LOAD_FAIL",
    46: "EXIT_REASON_GDTR_IDTR", 47: "EXIT_REASON_LDTR_TR", 48: "EXIT_REASON_EPT_VIOLATION",
    49: "EXIT_REASON_EPT_MISCONFIG", 50: "EXIT_REASON_INVEPT",
    52: "EXIT_REASON_PREEMPTION_TIMER", 53: "EXIT_REASON_INVVPID", 54: "EXIT_REASON_WBINVD",
}
globals().update({name: n for n, name in EXIT_REASONS.items()})

INSTRUCTION_REASONS = {
    "cpuid": 10, "invd": 13, "invlpg": 14, "rdtsc": 16, "vmcall": 18, "vmclear": 19,
    "vmlaunch": 20, "vmptrld": 21, "vmptrst": 22, "vmread": 23, "vmresume": 24,
    "vmwrite": 25, "vmxoff": 26, "vmxon": 27, "rdmsr": 31, "wrmsr": 32, "invept": 50,
    "invvpid": 53, "wbinvd": 54,
}
DESCRIPTOR_REASON = {"lgdt": 46, "lidt": 46, "sgdt": 46, "sidt": 46,
                     "lldt": 47, "ltr": 47, "sldt": 47, "str": 47}
# Instruction identity in the instruction-information field of reasons 46/47 (Table 27-10/11).
DESCRIPTOR_IDENTITY = {"sgdt": 0, "sidt": 1, "lgdt": 2, "lidt": 3, "sldt": 0, "str": 1,
                       "lldt": 2, "ltr": 3}

# VM-exit interruption-information types (Table 24-17).
TYPE_EXTERNAL, TYPE_NMI, TYPE_HW_EXCEPTION, TYPE_SW_INTERRUPT = 0, 2, 3, 4
TYPE_PRIV_SW_EXCEPTION, TYPE_SW_EXCEPTION = 5, 6


def describe(exit) -> tuple[int, dict] | None:
    """(basic reason, exit information fields) of a CPU exit in non-root operation,
    or None if it is not a VM exit."""
    c = exit.__class__
    info: dict = {}
    if c is X.ExceptionExit:
        if exit.kind == "external":
            info["VM_EXIT_INTR_INFO"] = (1 << 31) | exit.vector | TYPE_EXTERNAL << 8
            return 1, info
        kind = TYPE_SW_EXCEPTION if exit.kind == "software" and exit.vector in (3, 4) else \
            TYPE_SW_INTERRUPT if exit.kind == "software" else TYPE_HW_EXCEPTION
        v = (1 << 31) | exit.vector | kind << 8
        if exit.error_code is not None:
            v |= 1 << 11
            info["VM_EXIT_INTR_ERROR_CODE"] = exit.error_code
        info["VM_EXIT_INTR_INFO"] = v
        return 0, info
    if c is X.IoExit:
        # Table 27-5: size-1 in 2:0, direction (1 = IN) bit 3, string 4, REP 5, immediate 6, port 31:16.
        q = (exit.size - 1) | (0 if exit.write else 8) | (16 if exit.string else 0) \
            | (32 if exit.rep else 0) | exit.port << 16
        info.update(EXIT_QUALIFICATION=q, VM_EXIT_INSTRUCTION_LEN=exit.length)
        return 30, info
    if c is X.HaltExit:
        info["VM_EXIT_INSTRUCTION_LEN"] = exit.length
        return 12, info
    if c is X.ControlRegisterExit:
        # Table 27-3: CR number 3:0, access type 5:4 (0 MOV to, 1 MOV from, 2 CLTS, 3 LMSW),
        # GPR 11:8, LMSW source data 31:16.
        access = {"clts": 2, "lmsw": 3}.get(exit.mnemonic, 0 if exit.write else 1)
        q = exit.cr | access << 4
        if exit.gpr is not None and access < 2:
            q |= exit.gpr << 8
        if access == 3:
            q |= (exit.source if exit.source is not None else exit.value & 0xFFFF) << 16
        info.update(EXIT_QUALIFICATION=q, VM_EXIT_INSTRUCTION_LEN=exit.length)
        return 28, info
    if c is X.DebugRegisterExit:
        # Table 27-4: DR number 2:0, direction bit 4 (1 = MOV from DR), GPR 11:8.
        info.update(EXIT_QUALIFICATION=exit.dr | (0 if exit.write else 16) | exit.gpr << 8,
                    VM_EXIT_INSTRUCTION_LEN=exit.length)
        return 29, info
    if c is X.InstructionExit:
        n = INSTRUCTION_REASONS.get(exit.mnemonic)
        if n is None:
            return None
        info["VM_EXIT_INSTRUCTION_LEN"] = exit.length
        if n == 14:
            info["EXIT_QUALIFICATION"] = exit.operand
        elif n in (19, 21, 22, 23, 25, 27, 50, 53):
            info["EXIT_QUALIFICATION"] = (exit.operand or 0) & 0xFFFFFFFF
            info["VMX_INSTRUCTION_INFO"] = exit.info
        return n, info
    if c is X.DescriptorTableExit:
        n = DESCRIPTOR_REASON.get(exit.mnemonic.lower(), 46)
        info.update(VM_EXIT_INSTRUCTION_LEN=exit.length,
                    VMX_INSTRUCTION_INFO=DESCRIPTOR_IDENTITY.get(exit.mnemonic.lower(), 0) << 28)
        return n, info
    if c is X.TaskSwitchExit:
        # Table 27-2: selector 15:0, source 31:30 (0 CALL, 1 IRET, 2 JMP, 3 IDT task gate).
        src = {"call": 0, "iret": 1, "jmp": 2, "int": 3}[exit.source]
        info["EXIT_QUALIFICATION"] = exit.selector & 0xFFFF | src << 30
        if src == 3:
            kind = {"external": TYPE_EXTERNAL, "software": TYPE_SW_INTERRUPT}.get(exit.kind, TYPE_HW_EXCEPTION)
            v = (1 << 31) | exit.vector | kind << 8
            if exit.error_code is not None:
                v |= 1 << 11
                info["IDT_VECTORING_ERROR_CODE"] = exit.error_code
            info["IDT_VECTORING_INFO_FIELD"] = v
        return 9, info
    if c is X.InterruptWindowExit:
        return 7, info
    if c is X.PreemptionTimerExit:
        return 52, info
    if c is X.EptViolationExit:
        info.update(EXIT_QUALIFICATION=exit.qualification, GUEST_PHYSICAL_ADDRESS=exit.gpa)
        if exit.linear is not None:
            info["GUEST_LINEAR_ADDRESS"] = exit.linear
        return 48, info
    if c is X.EptMisconfigExit:
        info["GUEST_PHYSICAL_ADDRESS"] = exit.gpa
        return 49, info
    if c is X.MachineStopped and exit.stop.reason == "triple fault":
        return 2, info
    return None


_CLEARED = ("EXIT_QUALIFICATION", "VM_EXIT_INTR_INFO", "VM_EXIT_INTR_ERROR_CODE",
            "VM_EXIT_INSTRUCTION_LEN", "VMX_INSTRUCTION_INFO", "GUEST_LINEAR_ADDRESS",
            "GUEST_PHYSICAL_ADDRESS", "IDT_VECTORING_INFO_FIELD", "IDT_VECTORING_ERROR_CODE")


def vm_exit_for(vmx, exit):
    """Perform the VM exit a CPU exit in non-root operation stands for; returns the
    VmExit, or None if it is not one (the CPU stays in non-root operation)."""
    d = describe(exit)
    if d is None:
        return None
    basic, info = d
    cpu = vmx.cpu
    if basic == 2:
        cpu.stop = None             # the triple fault is the VM's, not the machine's
    v = vmx.current
    for name in _CLEARED:
        v[name] = 0
    v["VM_EXIT_REASON"] = basic
    for name, value in info.items():
        v[name] = value
    if basic in (0, 1) and cpu.delivering is not None and "IDT_VECTORING_INFO_FIELD" not in info:
        # The exit arose while an event was being delivered (§27.2.4): IDT-vectoring info.
        v["IDT_VECTORING_INFO_FIELD"] = (1 << 31) | cpu.delivering | TYPE_HW_EXCEPTION << 8
    save_guest(cpu, v)
    if basic == 2:
        v["GUEST_ACTIVITY_STATE"] = 2       # shutdown
    if vmx.controls[3] & C.EXIT_SAVE_PREEMPTION_TIMER and cpu.intercepts.preemption_deadline is not None:
        v["VMX_PREEMPTION_TIMER_VALUE"] = max(0, cpu.intercepts.preemption_deadline - cpu.steps()) \
            >> vmx.profile.preemption_rate
    store_msr_list(cpu, v["VM_EXIT_MSR_STORE_ADDR"], v["VM_EXIT_MSR_STORE_COUNT"])
    return _to_host(vmx, basic, False)


def entry_failure(vmx, basic: int, qualification: int):
    """A VM entry that failed on guest state or MSR loading (§26.8): the exit
    reason with bit 31 set, the host state loaded; no guest state is saved."""
    v = vmx.current
    for name in _CLEARED:
        v[name] = 0
    v["VM_EXIT_REASON"] = basic | 1 << 31
    v["EXIT_QUALIFICATION"] = qualification
    return _to_host(vmx, basic, True)


def _to_host(vmx, basic: int, failed: bool):
    from .entry import restore_root_controls
    cpu = vmx.cpu
    v = vmx.current
    was_nonroot = vmx.nonroot
    vmx.nonroot = False
    if was_nonroot:
        restore_root_controls(vmx)
    cpu.ept = None
    load_host(cpu, v)
    vmx.switch_tlb(0, keep=bool(v["VIRTUAL_PROCESSOR_ID"]) and was_nonroot)
    from .entry import load_msr_list
    load_msr_list(cpu, v["VM_EXIT_MSR_LOAD_ADDR"], v["VM_EXIT_MSR_LOAD_COUNT"])
    vmx.exits += 1
    vmx.exit_counts[basic] = vmx.exit_counts.get(basic, 0) + 1
    return X.VmExit(basic, EXIT_REASONS.get(basic, f"EXIT_REASON_{basic}"), failed)


def store_msr_list(cpu, addr: int, count: int) -> None:
    """The VM-exit MSR-store list (§27.4): each entry's value from its MSR."""
    from ..cpu import CpuFault
    from ..ops_msr import read_msr
    for i in range(count):
        e = addr + 16 * i
        try:
            value = read_msr(cpu, cpu.phys_read(e, 4))
        except CpuFault:
            continue
        cpu.phys_write(e + 8, 4, value & 0xFFFFFFFF)
        cpu.phys_write(e + 12, 4, value >> 32)

