"""VM entry (SDM Vol. 3C ch. 26): checks, loading the guest, event injection,
and the VMCS execution controls mapped onto the CPU's intercept controls.

Order (§26.1): the checks on the VMX controls (§26.2.1) and on the host-state
area (§26.2.2) fail the instruction with VMfailValid(7) or VMfailValid(8)
and the processor stays where it was; the checks on the guest-state area
(§26.3.1) fail the *entry*: a VM exit with basic reason 33 and bit 31 of the
exit reason set, exit qualification 0 (or 4 for the VMCS link pointer,
§26.8), the host state loaded.  Then the guest state is loaded (§26.3.2),
the VM-entry MSR-load list (§26.4) and the event in the VM-entry
interruption-information field is delivered through the guest's IDT (§26.6).

The execution controls become the CPU's intercept controls (``intercepts.py``,
whose table in docs/architecture.md names each VMX counterpart): exception
bitmap, I/O bitmaps A and B, CR0/CR4 masks and shadows, CR3-load/-store
exiting, HLT, INVLPG, RDTSC, MOV-DR, MSR bitmaps, descriptor-table exiting,
interrupt-window exiting, the preemption timer, TSC offsetting; and the
unconditional exits of non-root operation (CPUID, the VMX instructions,
§25.1.2).  The root's controls are kept and put back at VM exit.
"""

from __future__ import annotations

from ..constants import EFLAGS_RESERVED_1, IF, VM
from . import capabilities as C
from .ept import Ept, eptp_valid
from .vmcs import Vmcs

# Exit reasons of the entry failures (Appendix C).
EXIT_REASON_INVALID_GUEST_STATE = 33
EXIT_REASON_MSR_LOADING = 34
QUAL_VMCS_LINK_POINTER = 4

# VM-entry interruption-information types (Table 24-16).
INTR_EXTERNAL, INTR_NMI, INTR_HW_EXCEPTION, INTR_SW_INTERRUPT = 0, 2, 3, 4
INTR_PRIV_SW_EXCEPTION, INTR_SW_EXCEPTION = 5, 6
ERROR_CODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17})


def _ctl_ok(value: int, allowed: tuple[int, int]) -> bool:
    low, high = allowed
    return value & low == low and not value & ~high & 0xFFFFFFFF


def check_controls(vmx, v: Vmcs) -> bool:
    """§26.2.1: the controls against the capability MSRs and each other."""
    p = vmx.profile
    pin, proc = v["PIN_BASED_VM_EXEC_CONTROL"], v["CPU_BASED_VM_EXEC_CONTROL"]
    proc2 = v["SECONDARY_VM_EXEC_CONTROL"] if proc & C.CPU_ACTIVATE_SECONDARY else 0
    if not (_ctl_ok(pin, p.allowed("pin")) and _ctl_ok(proc, p.allowed("proc"))
            and _ctl_ok(proc2, p.allowed("proc2")) and _ctl_ok(v["VM_EXIT_CONTROLS"], p.allowed("exit"))
            and _ctl_ok(v["VM_ENTRY_CONTROLS"], p.allowed("entry"))):
        return False
    if v["CR3_TARGET_COUNT"] > 4:
        return False
    for flag, field in ((C.CPU_USE_IO_BITMAPS, "IO_BITMAP_A"), (C.CPU_USE_IO_BITMAPS, "IO_BITMAP_B"),
                        (C.CPU_USE_MSR_BITMAPS, "MSR_BITMAP")):
        if proc & flag and v[field] & 0xFFF or v[field] >> 32 and proc & flag:
            return False
    if proc2 & C.SEC_ENABLE_EPT and not eptp_valid(v["EPT_POINTER"], p.ept_vpid_cap):
        return False
    if proc2 & C.SEC_UNRESTRICTED_GUEST and not proc2 & C.SEC_ENABLE_EPT:
        return False
    if proc2 & C.SEC_ENABLE_VPID and v["VIRTUAL_PROCESSOR_ID"] == 0:
        return False
    if not pin & C.PIN_NMI_EXITING and pin & C.PIN_VIRTUAL_NMIS:
        return False
    for count, addr in (("VM_EXIT_MSR_STORE_COUNT", "VM_EXIT_MSR_STORE_ADDR"),
                        ("VM_EXIT_MSR_LOAD_COUNT", "VM_EXIT_MSR_LOAD_ADDR"),
                        ("VM_ENTRY_MSR_LOAD_COUNT", "VM_ENTRY_MSR_LOAD_ADDR")):
        if v[count] and (v[addr] & 0xF or v[addr] >> 32):
            return False
    return check_injection(v)


def check_injection(v: Vmcs) -> bool:
    """§26.2.1.3: the VM-entry interruption-information field."""
    info = v["VM_ENTRY_INTR_INFO_FIELD"]
    if not info >> 31:
        return True
    vector, kind = info & 0xFF, (info >> 8) & 7
    if kind in (1, 7) or info & 0x7FFFF000:
        return False
    if kind == INTR_NMI and vector != 2:
        return False
    if kind == INTR_HW_EXCEPTION and vector > 31:
        return False
    has_error = bool(info & (1 << 11))
    wants_error = kind == INTR_HW_EXCEPTION and vector in ERROR_CODE_VECTORS and v["GUEST_CR0"] & 1
    if has_error != bool(wants_error):
        return False
    if has_error and v["VM_ENTRY_EXCEPTION_ERROR_CODE"] & 0xFFFF8000:
        return False
    if kind in (INTR_SW_INTERRUPT, INTR_PRIV_SW_EXCEPTION, INTR_SW_EXCEPTION) \
            and not 1 <= v["VM_ENTRY_INSTRUCTION_LEN"] <= 15:
        return False
    return True


def check_host(vmx, v: Vmcs) -> bool:
    """§26.2.2: host control registers and selectors (an IA-32 host)."""
    p = vmx.profile
    cr0, cr4 = v["HOST_CR0"], v["HOST_CR4"]
    if cr0 & p.cr0_fixed0() != p.cr0_fixed0() or cr4 & C.CR4_VMXE == 0:
        return False
    from ..constants import CR4_SUPPORTED
    if cr4 & ~(CR4_SUPPORTED | C.CR4_VMXE):
        return False
    for name in ("ES", "CS", "SS", "DS", "FS", "GS", "TR"):
        if v[f"HOST_{name}_SELECTOR"] & 7:
            return False
    return bool(v["HOST_CS_SELECTOR"] and v["HOST_TR_SELECTOR"] and v["HOST_SS_SELECTOR"])


def _g_ok(limit: int, ar: int) -> bool:
    g = ar & 0x8000
    return not (limit & 0xFFF != 0xFFF and g) and not (limit >> 20 and not g)


def check_guest(vmx, v: Vmcs) -> int | None:
    """§26.3.1: None if the guest state is valid, else the exit qualification."""
    p = vmx.profile
    proc = v["CPU_BASED_VM_EXEC_CONTROL"]
    proc2 = v["SECONDARY_VM_EXEC_CONTROL"] if proc & C.CPU_ACTIVATE_SECONDARY else 0
    unrestricted = bool(proc2 & C.SEC_UNRESTRICTED_GUEST)
    cr0, cr4 = v["GUEST_CR0"], v["GUEST_CR4"]
    fixed0 = p.cr0_fixed0(unrestricted)
    from ..constants import CR4_SUPPORTED
    if cr0 & fixed0 != fixed0 or (cr0 & C.CR0_PG and not cr0 & C.CR0_PE):
        return 0
    if not cr4 & C.CR4_VMXE or cr4 & ~(CR4_SUPPORTED | C.CR4_VMXE):
        return 0
    rflags = v["GUEST_RFLAGS"]
    if rflags & 0xFFC08028 or not rflags & EFLAGS_RESERVED_1:
        return 0
    info = v["VM_ENTRY_INTR_INFO_FIELD"]
    if info >> 31 and (info >> 8) & 7 == INTR_EXTERNAL and not rflags & IF:
        return 0
    # §26.3.1.2 segment registers.
    vm86 = bool(rflags & VM)
    sel = {n: v[f"GUEST_{n}_SELECTOR"] for n in ("ES", "CS", "SS", "DS", "FS", "GS", "TR", "LDTR")}
    ar = {n: v[f"GUEST_{n}_AR_BYTES"] for n in sel}
    lim = {n: v[f"GUEST_{n}_LIMIT"] for n in sel}
    base = {n: v[f"GUEST_{n}_BASE"] for n in sel}
    if sel["TR"] & 4 or ar["TR"] & (1 << 16) or ar["TR"] & 0x1F not in (3, 11) \
            or not ar["TR"] & 0x80 or ar["TR"] & 0xFFFE0F00 or not _g_ok(lim["TR"], ar["TR"]):
        return 0
    if not ar["LDTR"] & (1 << 16):
        if sel["LDTR"] & 4 or ar["LDTR"] & 0x1F != 2 or not ar["LDTR"] & 0x80 \
                or ar["LDTR"] & 0xFFFE0F00 or not _g_ok(lim["LDTR"], ar["LDTR"]):
            return 0
    if vm86:
        for n in ("ES", "CS", "SS", "DS", "FS", "GS"):
            if base[n] != sel[n] << 4 or lim[n] != 0xFFFF or ar[n] != 0xF3:
                return 0
    else:
        cs, ss = ar["CS"], ar["SS"]
        if cs & (1 << 16) or cs & 0x1F not in ((0x19, 0x1B, 0x1D, 0x1F) + ((0x13,) if unrestricted else ())):
            return 0
        cs_dpl, ss_dpl = (cs >> 5) & 3, (ss >> 5) & 3
        if not unrestricted and sel["SS"] & 3 != sel["CS"] & 3:
            return 0
        if cs & 0x1F in (0x19, 0x1B) and cs_dpl != ss_dpl:
            return 0
        if cs & 0x1F in (0x1D, 0x1F) and cs_dpl > ss_dpl:
            return 0
        if not ss & (1 << 16):
            if ss & 0x1F not in (0x13, 0x17):
                return 0
            if not unrestricted and ss_dpl != sel["SS"] & 3:
                return 0
        for n in ("ES", "CS", "SS", "DS", "FS", "GS"):
            a = ar[n]
            if a & (1 << 16):
                continue
            if not a & 0x80 or not a & 0x10 or a & 0xFFFE0F00 or not _g_ok(lim[n], a):
                return 0
            if n not in ("CS", "SS"):
                typ = a & 0xF
                if not typ & 1 or (typ & 8 and not typ & 2):
                    return 0
                if not unrestricted and typ <= 11 and (a >> 5) & 3 < sel[n] & 3:
                    return 0
    if v["GUEST_GDTR_LIMIT"] >> 16 or v["GUEST_IDTR_LIMIT"] >> 16:
        return 0
    # §26.3.1.5 non-register state.
    activity = v["GUEST_ACTIVITY_STATE"]
    if activity not in (0, 1) or (activity == 1 and (ar["SS"] >> 5) & 3 != 0):
        return 0
    intr = v["GUEST_INTERRUPTIBILITY_INFO"]
    if intr & ~0x1F & 0xFFFFFFFF or intr & 3 == 3 or (intr & 1 and not rflags & IF):
        return 0
    if info >> 31 and (info >> 8) & 7 == INTR_EXTERNAL and intr & 3:
        return 0
    if v["GUEST_PENDING_DBG_EXCEPTIONS"] & ~0x1500F & 0xFFFFFFFF:
        return 0
    if v["VMCS_LINK_POINTER"] != 0xFFFFFFFFFFFFFFFF:
        return QUAL_VMCS_LINK_POINTER
    return None


def _io_ports(cpu, v: Vmcs):
    """The ports the I/O bitmaps intercept (§24.6.4): A for 0-7FFFH, B for 8000H-FFFFH."""
    ports = set()
    for name, first in (("IO_BITMAP_A", 0), ("IO_BITMAP_B", 0x8000)):
        data = bytes(cpu.phys_read(v[name] + i, 1) for i in range(0x1000)) \
            if v[name] + 0x1000 > cpu.ram_size else bytes(cpu.ram[v[name]:v[name] + 0x1000])
        for i, byte in enumerate(data):
            while byte:
                low = byte & -byte
                ports.add(first + i * 8 + low.bit_length() - 1)
                byte ^= low
    return frozenset(ports)


def _msr_sets(cpu, v: Vmcs):
    """The MSRs the MSR bitmaps intercept (§24.6.9): read low 0-1FFFH, read high
    C0000000H-C0001FFFH, write low, write high -- 1 KiB each; an MSR in neither
    range always exits (§25.1.3), which ``intercepts.exits_on_msr`` cannot say
    with sets: they are marked by ``None`` in ``outside``."""
    base = v["MSR_BITMAP"]
    out = []
    for off in (0, 0x800):
        s = set()
        for half, first in ((0, 0), (0x400, 0xC0000000)):
            data = bytes(cpu.ram[base + off + half:base + off + half + 0x400])
            for i, byte in enumerate(data):
                while byte:
                    low = byte & -byte
                    s.add(first + i * 8 + low.bit_length() - 1)
                    byte ^= low
        out.append(s)
    return out


class _MsrBitmap:
    """A set-like view: MSR n exits if its bitmap bit is set or n is outside both ranges."""

    __slots__ = ("bits",)

    def __init__(self, bits):
        self.bits = bits

    def __contains__(self, n):
        return n in self.bits or not (n <= 0x1FFF or 0xC0000000 <= n <= 0xC0001FFF)


def apply_controls(vmx, v: Vmcs) -> None:
    """The VMCS execution controls onto the CPU's intercept controls (non-root)."""
    cpu = vmx.cpu
    ic = cpu.intercepts
    vmx.root_intercepts = {name: getattr(ic, name) for name in ic.__slots__}
    pin, proc = v["PIN_BASED_VM_EXEC_CONTROL"], v["CPU_BASED_VM_EXEC_CONTROL"]
    proc2 = v["SECONDARY_VM_EXEC_CONTROL"] if proc & C.CPU_ACTIVATE_SECONDARY else 0
    ic.clear()
    ic.exception_bitmap = v["EXCEPTION_BITMAP"]
    ic.external_interrupt_exiting = bool(pin & C.PIN_EXTERNAL_INTERRUPT_EXITING)
    if proc & C.CPU_USE_IO_BITMAPS:
        ic.io_exiting = _io_ports(cpu, v)
    elif proc & C.CPU_UNCONDITIONAL_IO_EXITING:
        ic.io_exiting = True
    ic.cr_write_exiting = (1 << 3) if proc & C.CPU_CR3_LOAD_EXITING else 0
    ic.cr_read_exiting = (1 << 3) if proc & C.CPU_CR3_STORE_EXITING else 0
    ic.cr0_guest_host_mask, ic.cr0_read_shadow = v["CR0_GUEST_HOST_MASK"], v["CR0_READ_SHADOW"]
    ic.cr4_guest_host_mask, ic.cr4_read_shadow = v["CR4_GUEST_HOST_MASK"], v["CR4_READ_SHADOW"]
    ic.keep_owned_bits = True
    ic.descriptor_table_exiting = bool(proc2 & C.SEC_DESCRIPTOR_TABLE_EXITING)
    ic.hlt_exiting = bool(proc & C.CPU_HLT_EXITING)
    ic.invlpg_exiting = bool(proc & C.CPU_INVLPG_EXITING)
    ic.rdtsc_exiting = bool(proc & C.CPU_RDTSC_EXITING)
    ic.tsc_offset = v["TSC_OFFSET"] if proc & C.CPU_USE_TSC_OFFSETTING else 0
    ic.mov_dr_exiting = bool(proc & C.CPU_MOV_DR_EXITING)
    if proc & C.CPU_USE_MSR_BITMAPS:
        reads, writes = _msr_sets(cpu, v)
        ic.msr_exiting = (_MsrBitmap(reads), _MsrBitmap(writes))
    else:
        ic.msr_exiting = True
    ic.interrupt_window_exiting = bool(proc & C.CPU_INTERRUPT_WINDOW_EXITING)
    ic.cpuid_exiting = True
    ic.vmx_instruction_exiting = True
    ic.task_switch_exiting = True
    if pin & C.PIN_PREEMPTION_TIMER:
        ic.preemption_deadline = cpu.steps() + (v["VMX_PREEMPTION_TIMER_VALUE"] << vmx.profile.preemption_rate)
    vmx.controls = (pin, proc, proc2, v["VM_EXIT_CONTROLS"])


def restore_root_controls(vmx) -> None:
    ic = vmx.cpu.intercepts
    for name, value in vmx.root_intercepts.items():
        setattr(ic, name, value)
    vmx.root_intercepts = None


def vm_entry(vmx, launch: bool):
    """(status, VmExit or None): the entry of §26 after VMLAUNCH/VMRESUME's own checks."""
    from .exit import entry_failure
    from .instructions import ERR_ENTRY_INVALID_CONTROLS, ERR_ENTRY_INVALID_HOST_STATE, valid
    v = vmx.current
    if not check_controls(vmx, v):
        return valid(ERR_ENTRY_INVALID_CONTROLS), None
    if not check_host(vmx, v):
        return valid(ERR_ENTRY_INVALID_HOST_STATE), None
    qual = check_guest(vmx, v)
    if qual is not None:
        return None, entry_failure(vmx, EXIT_REASON_INVALID_GUEST_STATE, qual)
    cpu = vmx.cpu
    pin, proc = v["PIN_BASED_VM_EXEC_CONTROL"], v["CPU_BASED_VM_EXEC_CONTROL"]
    proc2 = v["SECONDARY_VM_EXEC_CONTROL"] if proc & C.CPU_ACTIVATE_SECONDARY else 0
    cpu.ept = Ept(cpu, v["EPT_POINTER"]) if proc2 & C.SEC_ENABLE_EPT else None
    vpid = v["VIRTUAL_PROCESSOR_ID"] if proc2 & C.SEC_ENABLE_VPID else 0
    ept_root = v["EPT_POINTER"] & 0xFFFFF000 if cpu.ept is not None else 0
    # Linear and combined mappings are tagged by VPID and EPTP; without VPID, VM entry
    # invalidates the mappings of VPID 0 (§28.3.3.1).
    vmx.switch_tlb((vpid, ept_root), keep=bool(vpid))
    from .state import load_guest
    load_guest(cpu, v)
    fail = load_msr_list(cpu, v["VM_ENTRY_MSR_LOAD_ADDR"], v["VM_ENTRY_MSR_LOAD_COUNT"])
    if fail is not None:
        cpu.ept = None
        return None, entry_failure(vmx, EXIT_REASON_MSR_LOADING, fail)
    if launch:
        v.launched = True
    vmx.nonroot = True
    vmx.entries += 1
    apply_controls(vmx, v)
    info = v["VM_ENTRY_INTR_INFO_FIELD"]
    if info >> 31:
        v["VM_ENTRY_INTR_INFO_FIELD"] = info & 0x7FFFFFFF      # cleared by the entry (§24.8.3)
        inject(cpu, v, info)
    return None, None


def load_msr_list(cpu, addr: int, count: int):
    """The VM-entry MSR-load list (§26.4): 16-byte entries (MSR index, reserved,
    value); returns None, or the 1-based index of the entry that failed."""
    from ..cpu import CpuFault
    from ..ops_msr import write_msr
    for i in range(count):
        e = addr + 16 * i
        n, reserved = cpu.phys_read(e, 4), cpu.phys_read(e + 4, 4)
        value = cpu.phys_read(e + 8, 4) | cpu.phys_read(e + 12, 4) << 32
        if reserved or C.IA32_VMX_BASIC <= n <= C.IA32_VMX_TRUE_ENTRY_CTLS:
            return i + 1
        try:
            write_msr(cpu, n, value)
        except CpuFault:
            return i + 1
    return None


def inject(cpu, v: Vmcs, info: int) -> None:
    """Event injection (§26.6): deliver the event through the guest's IDT as if it
    had arisen just now, with the double-fault rules for exceptions; a software
    interrupt or exception returns past the instruction length given."""
    from ..cpu import CpuFault, ExitFault
    from ..interrupts import deliver_event, raise_exception
    vector, kind = info & 0xFF, (info >> 8) & 7
    error = v["VM_ENTRY_EXCEPTION_ERROR_CODE"] if info & (1 << 11) else None
    cpu.halted = False
    try:
        if kind == INTR_EXTERNAL:
            cpu.interrupts_delivered += 1
            deliver_event(cpu, vector, None, kind="external", injected=True)
        elif kind in (INTR_HW_EXCEPTION, INTR_NMI):
            from ..interrupts import FAULT_VECTORS
            cpu.exception_counts[vector] = cpu.exception_counts.get(vector, 0) + 1
            deliver_event(cpu, vector, error, kind="exception", push_rf=vector in FAULT_VECTORS,
                          injected=True)
        else:
            length = v["VM_ENTRY_INSTRUCTION_LEN"]
            cpu.event_ip = cpu.eip
            cpu.eip = (cpu.eip + length) & 0xFFFFFFFF
            deliver_event(cpu, vector, None, kind="software" if kind == INTR_SW_INTERRUPT else "exception",
                          injected=True)
    except ExitFault as f:
        cpu.stop = f.exit
    except CpuFault as f:
        raise_exception(cpu, f.vector, f.error_code)
