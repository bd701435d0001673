"""The VMX instructions (SDM Vol. 3C ch. 30) and their conventions (§30.2).

Each instruction is a function on the processor (``vmxon(cpu, addr)``, ...)
returning None for VMsucceed, ``("invalid",)`` for VMfailInvalid or
``("valid", n)`` for VMfailValid with VM-instruction error n (§30.4, Table
30-1); the compiled instruction turns that into RFLAGS (VMsucceed clears CF,
PF, AF, ZF, SF, OF; VMfailInvalid sets CF; VMfailValid sets ZF and stores n
in the VM-instruction error field), and :class:`~.VmxHost` into an exception.
The checks come in the order of each instruction's Operation section:
#UD outside VMX operation (VMXON: with CR4.VMXE clear), in real or virtual-
8086 mode; a VM exit in non-root operation (``intercepts.
vmx_instruction_exiting``, §25.1.2); #GP(0) at CPL > 0; then the VMfail
cases.

Encodings (SDM Vol. 2): VMCALL 0F 01 C1, VMLAUNCH 0F 01 C2, VMRESUME 0F 01 C3,
VMXOFF 0F 01 C4, VMREAD 0F 78, VMWRITE 0F 79, VMPTRLD 0F C7 /6, VMPTRST
0F C7 /7, VMCLEAR 66 0F C7 /6, VMXON F3 0F C7 /6, INVEPT 66 0F 38 80,
INVVPID 66 0F 38 81.  A CPU without VMX compiles none of them (they stay
"not implemented", as before VMX existed).
"""

from __future__ import annotations

import iced_x86 as iced

from ..constants import ARITH_FLAGS, CF, CR0_PE, GP, UD, VM, ZF
from ..cpu import CpuFault, ExitFault
from ..exits import InstructionExit
from ..operands import GPR, SEGREG, Unsupported, ea_fn, mem_segment, reg_reader, reg_writer
from ..registry import JUMP, NORMAL, handles
from . import capabilities as C
from .vmcs import REVISION_MASK, VM_INSTRUCTION_ERROR, Vmcs, is_read_only, resolve

M = iced.Mnemonic
R = iced.Register

# VM-instruction error numbers (Table 30-1).
ERR_VMCALL_IN_ROOT = 1
ERR_VMCLEAR_INVALID_ADDRESS = 2
ERR_VMCLEAR_VMXON_POINTER = 3
ERR_VMLAUNCH_NONCLEAR = 4
ERR_VMRESUME_NONLAUNCHED = 5
ERR_ENTRY_INVALID_CONTROLS = 7
ERR_ENTRY_INVALID_HOST_STATE = 8
ERR_VMPTRLD_INVALID_ADDRESS = 9
ERR_VMPTRLD_VMXON_POINTER = 10
ERR_VMPTRLD_WRONG_REVISION = 11
ERR_UNSUPPORTED_COMPONENT = 12
ERR_VMWRITE_READ_ONLY = 13
ERR_VMXON_IN_ROOT = 15
ERR_ENTRY_MOV_SS_BLOCKING = 26
ERR_INVALID_INVEPT_INVVPID_OPERAND = 28

ERROR_NAMES = {
    1: "VMCALL executed in VMX root operation", 2: "VMCLEAR with invalid physical address",
    3: "VMCLEAR with VMXON pointer", 4: "VMLAUNCH with non-clear VMCS",
    5: "VMRESUME with non-launched VMCS", 6: "VMRESUME after VMXOFF",
    7: "VM entry with invalid control field(s)", 8: "VM entry with invalid host-state field(s)",
    9: "VMPTRLD with invalid physical address", 10: "VMPTRLD with VMXON pointer",
    11: "VMPTRLD with incorrect VMCS revision identifier",
    12: "VMREAD/VMWRITE from/to unsupported VMCS component",
    13: "VMWRITE to read-only VMCS component", 15: "VMXON executed in VMX root operation",
    26: "VM entry with events blocked by MOV SS",
    28: "invalid operand to INVEPT/INVVPID",
}

INVALID = ("invalid",)


def valid(n: int):
    return ("valid", n)


def vmfail(vmx, n: int):
    """VMfail(n): VMfailValid if there is a current VMCS, else VMfailInvalid (§30.2)."""
    return INVALID if vmx.current is None else valid(n)


def _bad_address(addr: int) -> bool:
    # 4-KiB aligned, within the 32-bit physical-address width (IA32_VMX_BASIC bit 48).
    return bool(addr & 0xFFF or addr >> 32)


# -- the instructions' operations --------------------------------------------------------
def vmxon(cpu, addr: int):
    vmx = cpu.vmx
    if vmx.vmxon:
        return vmfail(vmx, ERR_VMXON_IN_ROOT)
    p = vmx.profile
    fc = vmx.feature_control
    if (cpu.cr0 & p.cr0_fixed0()) != p.cr0_fixed0() or not cpu.cr4 & C.CR4_VMXE \
            or not fc & C.FEATURE_CONTROL_LOCK or not fc & C.FEATURE_CONTROL_VMX_OUTSIDE_SMX:
        raise CpuFault(GP, 0)
    if _bad_address(addr):
        return INVALID
    rev = cpu.phys_read(addr, 4)
    if rev & REVISION_MASK != p.revision or rev >> 31:
        return INVALID
    vmx.vmxon, vmx.vmxon_ptr, vmx.current = True, addr, None
    return None


def vmxoff(cpu):
    vmx = cpu.vmx
    vmx.vmxon, vmx.vmxon_ptr, vmx.current = False, None, None
    return None


def vmclear(cpu, addr: int):
    vmx = cpu.vmx
    if _bad_address(addr):
        return vmfail(vmx, ERR_VMCLEAR_INVALID_ADDRESS)
    if addr == vmx.vmxon_ptr:
        return vmfail(vmx, ERR_VMCLEAR_VMXON_POINTER)
    v = vmx.cached.pop(addr, None)
    if v is None:
        v = Vmcs(addr)                 # nothing cached: only the launch state is written
        cpu.phys_write(addr + 8, 4, 0)
    else:
        v.launched = False
        v.store(cpu)
    if vmx.current is not None and vmx.current.address == addr:
        vmx.current = None
    return None


def vmptrld(cpu, addr: int):
    vmx = cpu.vmx
    if _bad_address(addr):
        return vmfail(vmx, ERR_VMPTRLD_INVALID_ADDRESS)
    if addr == vmx.vmxon_ptr:
        return vmfail(vmx, ERR_VMPTRLD_VMXON_POINTER)
    rev = cpu.phys_read(addr, 4)
    if rev & REVISION_MASK != vmx.profile.revision or rev >> 31:
        return vmfail(vmx, ERR_VMPTRLD_WRONG_REVISION)
    v = vmx.cached.get(addr)
    if v is None:
        v = vmx.cached[addr] = Vmcs.load(cpu, addr)
    vmx.current = v
    return None


def vmread(cpu, enc: int):
    """(value, status)."""
    vmx = cpu.vmx
    if vmx.current is None:
        return 0, INVALID
    r = resolve(enc)
    if r is None:
        return 0, valid(ERR_UNSUPPORTED_COMPONENT)
    full, high = r
    v = vmx.current.get(full)
    return ((v >> 32) if high else v) & 0xFFFFFFFF, None


def vmwrite(cpu, enc: int, value: int):
    vmx = cpu.vmx
    if vmx.current is None:
        return INVALID
    r = resolve(enc)
    if r is None:
        return valid(ERR_UNSUPPORTED_COMPONENT)
    full, high = r
    if is_read_only(full):
        return valid(ERR_VMWRITE_READ_ONLY)
    cur = vmx.current.get(full)
    value &= 0xFFFFFFFF
    if high:
        value = (cur & 0xFFFFFFFF) | value << 32
    elif full >> 13 & 3 == 1:           # the full encoding of a 64-bit field: the low half
        value = (cur & ~0xFFFFFFFF) | value
    vmx.current.set(full, value)
    return None


def vm_entry_instruction(cpu, launch: bool):
    """VMLAUNCH/VMRESUME past their #UD/#GP checks: (status, VmExit of an entry failure)."""
    from .entry import vm_entry
    vmx = cpu.vmx
    if vmx.current is None:
        return INVALID, None
    if cpu.inhibit_irq and cpu.ss_shadow:
        return valid(ERR_ENTRY_MOV_SS_BLOCKING), None
    if launch and vmx.current.launched:
        return valid(ERR_VMLAUNCH_NONCLEAR), None
    if not launch and not vmx.current.launched:
        return valid(ERR_VMRESUME_NONLAUNCHED), None
    return vm_entry(vmx, launch)


def invept(cpu, kind: int, eptp: int):
    vmx = cpu.vmx
    cap = vmx.profile.ept_vpid_cap
    ok = {1: C.EPT_CAP_INVEPT_SINGLE, 2: C.EPT_CAP_INVEPT_ALL}.get(kind, 0)
    if not cap & ok:
        return vmfail(vmx, ERR_INVALID_INVEPT_INVVPID_OPERAND)
    root = eptp & 0xFFFFF000
    # Single-context: the mappings derived from this EPTP; all-context: every EPTP (§30.3).
    vmx.invalidate(lambda tag: tag != 0 and (kind == 2 or tag[1] == root))
    return None


def invvpid(cpu, kind: int, vpid: int, linear: int):
    vmx = cpu.vmx
    cap = vmx.profile.ept_vpid_cap
    ok = {0: C.VPID_CAP_INDIVIDUAL, 1: C.VPID_CAP_SINGLE, 2: C.VPID_CAP_ALL,
          3: C.VPID_CAP_SINGLE_GLOBALS}.get(kind, 0)
    vpid &= 0xFFFF
    if not cap & ok or (kind != 2 and vpid == 0):
        return vmfail(vmx, ERR_INVALID_INVEPT_INVVPID_OPERAND)
    if kind == 0:
        page = (linear & 0xFFFFFFFF) >> 12
        for tag, (tlb, glob) in list(vmx.tlbs.items()) + [(vmx.tlb_tag, (cpu._tlb, cpu.tlb_global))]:
            if tag != 0 and tag[0] == vpid:
                for t in tlb:
                    t.pop(page, None)
                glob.discard(page)
        return None
    vmx.invalidate(lambda tag: tag != 0 and (kind == 2 or tag[0] == vpid))
    return None


# -- compiling them ------------------------------------------------------------------------
def set_status(cpu, status) -> None:
    """VMsucceed / VMfailInvalid / VMfailValid(n) in RFLAGS (§30.2)."""
    f = cpu.get_eflags() & ~ARITH_FLAGS
    if status is None:
        pass
    elif status[0] == "invalid":
        f |= CF
    else:
        f |= ZF
        cpu.vmx.current.set(VM_INSTRUCTION_ERROR, status[1])
    cpu.set_eflags(f)


def _instruction_info(ins, reg1=None, reg2=None) -> int:
    """VM-exit instruction-information field of a VMX instruction (Tables 27-13, 27-14)."""
    info = 1 << 7                               # address size 32
    if reg1 is not None:
        return info | 1 << 10 | (reg1 << 3) | ((reg2 or 0) << 28)
    scale = {1: 0, 2: 1, 4: 2, 8: 3}.get(ins.memory_index_scale, 0)
    info |= scale | SEGREG[ins.memory_segment] << 15
    if ins.memory_index != R.NONE:
        info |= GPR[ins.memory_index][0] << 18
    else:
        info |= 1 << 22
    if ins.memory_base != R.NONE:
        info |= GPR[ins.memory_base][0] << 23
    else:
        info |= 1 << 27
    if reg2 is not None:
        info |= reg2 << 28
    return info


def _guard(cpu, ins, name, info=0, qualification=0, ud_outside=True):
    """The checks common to the VMX instructions; returns the closure prologue."""
    ic, length = cpu.intercepts, ins.len
    vmx = cpu.vmx

    def check():
        if ud_outside and not vmx.vmxon or not cpu.cr0 & CR0_PE or cpu.eflags_rest & VM:
            raise CpuFault(UD)
        if ic.vmx_instruction_exiting:
            raise ExitFault(InstructionExit(name, length, qualification, info))
        if cpu.cpl != 0:
            raise CpuFault(GP, 0)
    return check


def _need_vmx(cpu):
    if cpu.vmx is None:
        raise Unsupported("VMX instructions on a CPU without VMX")


def _mem64(cpu, ins):
    ea, seg = ea_fn(cpu, ins), mem_segment(ins)

    def read():
        off = ea()
        lo = cpu.rd32(seg, off)
        hi = cpu.rd32(seg, (off + 4) & 0xFFFFFFFF)
        return lo | hi << 32
    return read, ea, seg


@handles(M.VMXON, M.VMCLEAR, M.VMPTRLD)
def c_vm_pointer(cpu, ins):
    _need_vmx(cpu)
    if ins.op0_kind != iced.OpKind.MEMORY:
        raise Unsupported("register operand")
    name = {M.VMXON: "vmxon", M.VMCLEAR: "vmclear", M.VMPTRLD: "vmptrld"}[ins.mnemonic]
    op = {M.VMXON: vmxon, M.VMCLEAR: vmclear, M.VMPTRLD: vmptrld}[ins.mnemonic]
    read, _, _ = _mem64(cpu, ins)
    is_vmxon = ins.mnemonic == M.VMXON
    check = _guard(cpu, ins, name, _instruction_info(ins), ins.memory_displacement,
                   ud_outside=not is_vmxon)

    def run():
        if is_vmxon and not cpu.cr4 & C.CR4_VMXE:
            raise CpuFault(UD)          # VMXON with CR4.VMXE = 0 (§30.3 VMXON)
        check()
        set_status(cpu, op(cpu, read()))
    return run, NORMAL


@handles(M.VMPTRST)
def c_vmptrst(cpu, ins):
    _need_vmx(cpu)
    ea, seg = ea_fn(cpu, ins), mem_segment(ins)
    check = _guard(cpu, ins, "vmptrst", _instruction_info(ins), ins.memory_displacement)
    vmx = cpu.vmx

    def run():
        check()
        ptr = 0xFFFFFFFFFFFFFFFF if vmx.current is None else vmx.current.address
        off = ea()
        cpu.rd32(seg, (off + 4) & 0xFFFFFFFF)       # both halves checked before either store
        cpu.wr32(seg, off, ptr & 0xFFFFFFFF)
        cpu.wr32(seg, (off + 4) & 0xFFFFFFFF, ptr >> 32)
        set_status(cpu, None)
    return run, NORMAL


@handles(M.VMREAD)
def c_vmread(cpu, ins):
    _need_vmx(cpu)
    enc = reg_reader(cpu, ins.op1_register)
    reg2 = GPR[ins.op1_register][0]
    if ins.op0_kind == iced.OpKind.REGISTER:
        dst = reg_writer(cpu, ins.op0_register)
        info = _instruction_info(ins, GPR[ins.op0_register][0], reg2)
        mem = None
    else:
        ea, seg = ea_fn(cpu, ins), mem_segment(ins)
        info = _instruction_info(ins, None, reg2)
        mem = (ea, seg)
    check = _guard(cpu, ins, "vmread", info, ins.memory_displacement if mem else 0)

    def run():
        check()
        value, status = vmread(cpu, enc())
        if status is None:
            if mem is None:
                dst(value)
            else:
                cpu.wr32(mem[1], mem[0](), value)
        set_status(cpu, status)
    return run, NORMAL


@handles(M.VMWRITE)
def c_vmwrite(cpu, ins):
    _need_vmx(cpu)
    enc = reg_reader(cpu, ins.op0_register)
    reg2 = GPR[ins.op0_register][0]
    if ins.op1_kind == iced.OpKind.REGISTER:
        src = reg_reader(cpu, ins.op1_register)
        info = _instruction_info(ins, GPR[ins.op1_register][0], reg2)
    else:
        ea, seg = ea_fn(cpu, ins), mem_segment(ins)
        src = lambda: cpu.rd32(seg, ea())          # noqa: E731
        info = _instruction_info(ins, None, reg2)
    check = _guard(cpu, ins, "vmwrite", info)

    def run():
        check()
        set_status(cpu, vmwrite(cpu, enc(), src()))
    return run, NORMAL


@handles(M.VMXOFF)
def c_vmxoff(cpu, ins):
    _need_vmx(cpu)
    check = _guard(cpu, ins, "vmxoff")

    def run():
        check()
        set_status(cpu, vmxoff(cpu))
    return run, NORMAL


@handles(M.VMCALL)
def c_vmcall(cpu, ins):
    _need_vmx(cpu)
    ic, length = cpu.intercepts, ins.len
    vmx = cpu.vmx

    def run():
        # In non-root operation VMCALL always exits (§25.1.2), whatever the mode.
        if ic.vmx_instruction_exiting:
            raise ExitFault(InstructionExit("vmcall", length))
        if not vmx.vmxon:
            raise CpuFault(UD)
        if cpu.cpl != 0:
            raise CpuFault(GP, 0)
        set_status(cpu, vmfail(vmx, ERR_VMCALL_IN_ROOT))
    return run, NORMAL


@handles(M.VMLAUNCH, M.VMRESUME)
def c_vmlaunch(cpu, ins):
    _need_vmx(cpu)
    launch = ins.mnemonic == M.VMLAUNCH
    check = _guard(cpu, ins, "vmlaunch" if launch else "vmresume")
    vmx = cpu.vmx
    next_ip = ins.next_ip32

    def run():
        check()
        vmx.monitor_driven = False
        cpu.eip = next_ip                 # where a failed entry (VMfail) goes on
        status, failure = vm_entry_instruction(cpu, launch)
        if status is not None:
            set_status(cpu, status)
            return
        # Entered (or an entry failure loaded the host state): the run loop starts
        # afresh in the new mode (Vmx.run).
        from . import VmEntered
        cpu.stop = VmEntered()
    return run, JUMP


@handles(M.INVEPT, M.INVVPID)
def c_invept(cpu, ins):
    _need_vmx(cpu)
    is_ept = ins.mnemonic == M.INVEPT
    cap = cpu.vmx.profile.ept_vpid_cap
    if not cap & (C.EPT_CAP_INVEPT if is_ept else C.VPID_CAP_INVVPID):
        raise Unsupported("INVEPT/INVVPID not supported by this profile")   # #UD on such a part
    kind_reg = reg_reader(cpu, ins.op0_register)
    ea, seg = ea_fn(cpu, ins), mem_segment(ins)
    check = _guard(cpu, ins, "invept" if is_ept else "invvpid",
                   _instruction_info(ins, None, GPR[ins.op0_register][0]), ins.memory_displacement)

    def run():
        check()
        kind = kind_reg()
        off = ea()
        lo = cpu.rd32(seg, off) | cpu.rd32(seg, (off + 4) & 0xFFFFFFFF) << 32
        hi = cpu.rd32(seg, (off + 8) & 0xFFFFFFFF) | cpu.rd32(seg, (off + 12) & 0xFFFFFFFF) << 32
        if is_ept:
            set_status(cpu, invept(cpu, kind, lo))
        else:
            set_status(cpu, invvpid(cpu, kind, lo, hi))
    return run, NORMAL


