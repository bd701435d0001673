"""System and privilege-sensitive instructions.

Privileged instructions (#GP(0) at CPL > 0, SDM Vol. 3A §5.9): LGDT LIDT LLDT
LTR LMSW CLTS MOV CRn/DRn INVLPG INVD WBINVD HLT RDMSR WRMSR.  IOPL-sensitive
ones (SDM Vol. 1 §18.2.1, Vol. 2 CLI/STI/IN/OUT): CLI STI IN OUT INS OUTS,
the last four also consulting the TSS I/O permission bitmap (SDM Vol. 1
§18.5.2).  The 17 sensitive-but-unprivileged instructions of Robin and Irvine
(2000) (../shared/reference/virtualization.md §2): SGDT SIDT SLDT SMSW STR
PUSHF POPF LAR LSL VERR VERW PUSH/POP Sreg, MOV Sreg, far CALL/JMP/RET, INT n
- they run at any CPL and behave exactly as on a real Intel CPU, including the
silent POPF rule.  With ``cpu.strict`` (the hypothetical virtualizable x86 of
Popek and Goldberg's Theorem 1) each of them raises #GP(0) when CPL > 0.
"""

from __future__ import annotations

import iced_x86 as iced

from . import descriptors as D
from . import flags as F
from .constants import (
    CR0_PE, CR0_TS, CR4_SUPPORTED, CR4_TSD, CS, DS, ES, FS, GP, GS, IF, SS, UD,
    BR, BP, OF_VEC, MSR_IA32_TSC, MSR_IA32_APIC_BASE, MSR_IA32_SYSENTER_CS,
    MSR_IA32_SYSENTER_ESP, MSR_IA32_SYSENTER_EIP, ARITH_FLAGS, VM, RF, EFLAGS_RESERVED_1,
    SYS_CALL_GATE32, SYS_CALL_GATE16, SYS_LDT, SYS_TSS32_AVAIL, SYS_TSS16_AVAIL,
    SYS_TSS32_BUSY, SYS_TSS16_BUSY, ZF, NP, SS_VEC, CR0_PG, TS,
)
from .cpu import CpuFault, ExitFault, MachineStop
from .exits import ControlRegisterExit, DescriptorTableExit, HaltExit, InstructionExit, IoExit
from . import tasks
from .interrupts import iret, set_flags_by_privilege, software_interrupt
from .operands import (
    CREG, DREG, GPR, K, SEGREG, ea_fn, mem_segment, op_size, reader, reg_reader,
    reg_writer, writer, Unsupported,
)
from .registry import END, JUMP, NORMAL, handles

M = iced.Mnemonic


def reader16(cpu, ins, i: int):
    """A 16-bit source operand (a selector or the MSW).  With a register it may
    be a 32-bit one (iced decodes e.g. ``0F 00 /4`` as VERR r32/m16): only its
    low 16 bits are used (SDM Vol. 2 LAR, LSL, VERR, LLDT, LTR, LMSW)."""
    r = reader(cpu, ins, i, 2)
    return lambda: r() & 0xFFFF


def require_cpl0(cpu) -> None:
    if cpu.cpl != 0:
        raise CpuFault(GP, 0)


def strict_trap(cpu) -> None:
    """On the strict (virtualizable) CPU, a sensitive instruction traps outside ring 0."""
    if cpu.strict and cpu.cpl > 0:
        raise CpuFault(GP, 0)


# --------------------------------------------------------------- CLI / STI
@handles(M.CLI)
def c_cli(cpu, ins):
    def cli():
        if cpu.cpl > cpu.iopl:
            raise CpuFault(GP, 0)
        cpu.eflags_rest &= ~IF
    return cli, NORMAL


@handles(M.STI)
def c_sti(cpu, ins):
    def sti():
        if cpu.cpl > cpu.iopl:
            raise CpuFault(GP, 0)
        if not cpu.eflags_rest & IF:
            cpu.inhibit_irq = True   # interrupts stay blocked for one more instruction
        cpu.eflags_rest |= IF
    return sti, END


# ------------------------------------------------------------ PUSHF / POPF
@handles(M.PUSHFD, M.PUSHF)
def c_pushf(cpu, ins):
    size = 4 if ins.mnemonic == M.PUSHFD else 2

    def pushf():
        strict_trap(cpu)
        # VM and RF are pushed as 0 (SDM Vol. 2 PUSHF).
        v = cpu.get_eflags() & ~(VM | RF)
        if size == 4:
            cpu.push32(v)
        else:
            cpu.push16(v & 0xFFFF)
    return pushf, NORMAL


@handles(M.POPFD, M.POPF)
def c_popf(cpu, ins):
    size = 4 if ins.mnemonic == M.POPFD else 2

    def popf():
        strict_trap(cpu)
        v = cpu.pop32() if size == 4 else cpu.pop16()
        had_if = cpu.eflags_rest & IF
        set_flags_by_privilege(cpu, v, cpu.cpl, size, keep_rf=False)
        if not had_if and cpu.eflags_rest & IF:
            cpu.inhibit_irq = False
    return popf, END


# ------------------------------------------------------------------ IN/OUT
def check_io(cpu, port: int, size: int) -> None:
    """I/O permission: CPL <= IOPL, else every bit for the accessed ports in the
    TSS I/O permission bitmap must be clear (SDM Vol. 1 §18.5.2)."""
    if not cpu.cr0 & CR0_PE or cpu.cpl <= cpu.iopl:
        return
    if not cpu.tr_attr & 0x80 or (cpu.tr_attr & 0xF) not in (SYS_TSS32_AVAIL, SYS_TSS32_BUSY) \
            or cpu.tr_limit < 0x67:
        raise CpuFault(GP, 0)
    iomap = cpu.sys_read(cpu.tr_base + 0x66, 2)
    off = iomap + (port >> 3)
    if off + 1 > cpu.tr_limit:
        raise CpuFault(GP, 0)
    bits = cpu.sys_read(cpu.tr_base + off, 2)
    want = ((1 << size) - 1) << (port & 7)
    if bits & want:
        raise CpuFault(GP, 0)


def _port_operand(cpu, ins, i: int):
    """A closure giving the port of IN/OUT operand ``i``: DX or an imm8."""
    if ins.op_kind(i) == K.REGISTER:
        regs = cpu.regs
        return lambda: regs[2] & 0xFFFF
    port = ins.immediate8
    return lambda: port


@handles(M.IN)
def c_in(cpu, ins):
    size = op_size(ins, 0)
    dst = reg_writer(cpu, ins.op0_register)
    port_of = _port_operand(cpu, ins, 1)
    bus = cpu.io_bus

    ic, length = cpu.intercepts, ins.len

    def in_():
        port = port_of()
        check_io(cpu, port, size)
        if ic.io_exiting is not None and ic.exits_on_port(port):
            raise ExitFault(IoExit(port, size, False, length=length))
        dst(bus.read(port, size))
    return in_, END


@handles(M.OUT)
def c_out(cpu, ins):
    size = op_size(ins, 1)
    src = reg_reader(cpu, ins.op1_register)
    port_of = _port_operand(cpu, ins, 0)
    bus = cpu.io_bus

    ic, length = cpu.intercepts, ins.len

    def out():
        port = port_of()
        check_io(cpu, port, size)
        if ic.io_exiting is not None and ic.exits_on_port(port):
            raise ExitFault(IoExit(port, size, True, value=src(), length=length))
        bus.write(port, size, src())
    return out, END


# --------------------------------------------------------------------- HLT
@handles(M.HLT)
def c_hlt(cpu, ins):
    ic, length = cpu.intercepts, ins.len

    def hlt():
        require_cpl0(cpu)
        if ic.hlt_exiting:
            raise ExitFault(HaltExit(length))
        cpu.halted = True
    return hlt, END


# ------------------------------------------------------ control registers
def compile_mov_to_special(cpu, ins):
    reg = ins.op0_register
    if reg in SEGREG:
        return compile_mov_sreg(cpu, ins)
    src = reg_reader(cpu, ins.op1_register)
    if reg in CREG:
        n = CREG[reg]
        if n not in (0, 2, 3, 4):
            raise Unsupported(f"MOV CR{n}")

        ic, gpr, length = cpu.intercepts, GPR[ins.op1_register][0], ins.len

        def mov_cr():
            require_cpl0(cpu)
            v = src()
            # CPL is checked before the intercept (SDM Vol. 3C §25.1.1).
            if ic.exits_on_cr_write(n, _cr(cpu, n), v):
                raise ExitFault(ControlRegisterExit(n, True, v, gpr, "mov", length))
            write_cr(cpu, n, v)
        return mov_cr, END
    if reg in DREG:
        n = DREG[reg]

        def mov_dr():
            require_cpl0(cpu)
            general_detect(cpu)
            v = src()
            if n in (4, 5):
                if cpu.cr4 & 8:   # CR4.DE: DR4/DR5 are reserved
                    raise CpuFault(UD)
                n2 = n + 2
            else:
                n2 = n
            if n2 == 6:
                v = (v & 0xF00F) | 0xFFFF0FF0
            elif n2 == 7:
                v = (v & 0xFFFF2BFF) | 0x400
            cpu.dr[n2] = v
            if n2 != 6:
                debug_update(cpu)
        return mov_dr, END
    raise Unsupported(f"MOV to {reg}")


def general_detect(cpu) -> None:
    """DR7.GD: any MOV to or from a debug register is a #DB fault, with DR6.BD
    set and GD cleared for the handler (SDM Vol. 3A §17.2.4)."""
    if cpu.dr[7] & 0x2000:
        cpu.dr[6] |= 0x2000
        cpu.dr[7] &= ~0x2000
        raise CpuFault(1)


def debug_update(cpu) -> None:
    """Recompute the enabled breakpoints from DR0-DR3 and DR7 (SDM Vol. 3A §17.2):
    R/W 00 instruction, 01 data write, 11 data read/write (10, I/O, is not
    implemented); LEN 00/01/11 = 1/2/4 bytes, the address aligned down.  The CPU
    checks them in ``single_step`` and ``seg_lin``."""
    dr7 = cpu.dr[7]
    ex, da = [], []
    for n in range(4):
        if not (dr7 >> (2 * n)) & 3:
            continue
        rw = (dr7 >> (16 + 4 * n)) & 3
        size = (1, 2, 8, 4)[(dr7 >> (18 + 4 * n)) & 3]
        if rw == 0:
            ex.append((n, cpu.dr[n]))
        elif rw in (1, 3):
            lo = cpu.dr[n] & ~(size - 1) & 0xFFFFFFFF
            da.append((n, lo, lo + size - 1, rw == 1))
    cpu.bp_exec, cpu.bp_data = tuple(ex), tuple(da)
    cpu.update_ac()


def _cr(cpu, n: int) -> int:
    return (cpu.cr0, 0, cpu.cr2, cpu.cr3, cpu.cr4)[n]


def write_cr(cpu, n: int, v: int) -> None:
    """MOV to CRn with the checks of SDM Vol. 3A §2.5 and Vol. 2 MOV (Control Registers)."""
    if n == 0:
        if v & CR0_PG and not v & CR0_PE:
            raise CpuFault(GP, 0)
        if v & (1 << 29) and not v & (1 << 30):   # NW=1 with CD=0
            raise CpuFault(GP, 0)
        if not v & CR0_PE:
            raise MachineStop("real mode", "the guest cleared CR0.PE (real mode is not supported)")
        cpu.set_cr0(v & 0xE005003F)
    elif n == 2:
        cpu.cr2 = v
    elif n == 3:
        cpu.set_cr3(v)
    elif n == 4:
        if v & ~CR4_SUPPORTED:
            raise CpuFault(GP, 0)
        cpu.set_cr4(v)


def compile_mov_from_special(cpu, ins):
    reg = ins.op1_register
    if reg in SEGREG:
        return compile_mov_from_sreg(cpu, ins)
    dst = reg_writer(cpu, ins.op0_register)
    if reg in CREG:
        n = CREG[reg]
        if n not in (0, 2, 3, 4):
            raise Unsupported(f"MOV from CR{n}")

        ic, gpr, length = cpu.intercepts, GPR[ins.op0_register][0], ins.len

        def mov_from_cr():
            require_cpl0(cpu)
            if ic.cr_read_exiting >> n & 1:
                raise ExitFault(ControlRegisterExit(n, False, None, gpr, "mov", length))
            dst(ic.cr_read_value(n, _cr(cpu, n)))
        return mov_from_cr, NORMAL
    if reg in DREG:
        n = DREG[reg]

        def mov_from_dr():
            require_cpl0(cpu)
            general_detect(cpu)
            n2 = n
            if n in (4, 5):
                if cpu.cr4 & 8:
                    raise CpuFault(UD)
                n2 = n + 2
            dst(cpu.dr[n2])
        return mov_from_dr, NORMAL
    raise Unsupported(f"MOV from {reg}")


@handles(M.CLTS)
def c_clts(cpu, ins):
    ic, length = cpu.intercepts, ins.len

    def clts():
        require_cpl0(cpu)
        if ic.exits_on_cr_write(0, cpu.cr0, cpu.cr0 & ~CR0_TS):
            raise ExitFault(ControlRegisterExit(0, True, cpu.cr0 & ~CR0_TS, None, "clts", length))
        cpu.cr0 &= ~CR0_TS
    return clts, END


@handles(M.LMSW)
def c_lmsw(cpu, ins):
    src = reader16(cpu, ins, 0)

    ic, length = cpu.intercepts, ins.len

    def lmsw():
        require_cpl0(cpu)
        v = src()
        # LMSW loads PE, MP, EM, TS and cannot clear PE (SDM Vol. 2 LMSW).
        new = (cpu.cr0 & ~0xE) | (v & 0xF) | (cpu.cr0 & CR0_PE)
        if ic.exits_on_cr_write(0, cpu.cr0, new):
            raise ExitFault(ControlRegisterExit(0, True, new, None, "lmsw", length))
        cpu.set_cr0(new)
    return lmsw, END


@handles(M.SMSW)
def c_smsw(cpu, ins):
    size = op_size(ins, 0)
    dst = writer(cpu, ins, 0, 2 if ins.op0_kind == K.MEMORY else size)
    mem = ins.op0_kind == K.MEMORY

    ic = cpu.intercepts

    def smsw():
        strict_trap(cpu)
        # Register destination with 32-bit operand size receives all of CR0 on
        # P6 and later processors (the upper bits are "undefined" in the SDM).
        cr0 = ic.cr_read_value(0, cpu.cr0)      # the read shadow in the monitor's bits
        dst(cr0 & 0xFFFF if mem or size == 2 else cr0)
    return smsw, NORMAL


@handles(M.INVLPG)
def c_invlpg(cpu, ins):
    ea, seg = ea_fn(cpu, ins), mem_segment(ins)

    ic, length = cpu.intercepts, ins.len

    def invlpg():
        require_cpl0(cpu)
        lin = (cpu.base[seg] + ea()) & 0xFFFFFFFF
        if ic.invlpg_exiting:
            raise ExitFault(InstructionExit("invlpg", length, lin))
        cpu.invlpg(lin)
    return invlpg, END


@handles(M.WBINVD, M.INVD)
def c_wbinvd(cpu, ins):
    def wbinvd():
        require_cpl0(cpu)
    return wbinvd, NORMAL


# -------------------------------------------------------- descriptor tables
def _dt_operand(cpu, ins):
    return ea_fn(cpu, ins), mem_segment(ins)


@handles(M.LGDT, M.LIDT)
def c_lgdt(cpu, ins):
    ea, seg = _dt_operand(cpu, ins)
    is_gdt = ins.mnemonic == M.LGDT
    o16 = ins.code in (iced.Code.LGDT_M1632_16, iced.Code.LIDT_M1632_16) if hasattr(iced.Code, "LGDT_M1632_16") else False

    ic, name, length = cpu.intercepts, "lgdt" if is_gdt else "lidt", ins.len

    def lgdt():
        require_cpl0(cpu)
        if ic.descriptor_table_exiting:
            raise ExitFault(DescriptorTableExit(name, length))
        a = ea()
        limit = cpu.rd16(seg, a)
        base = cpu.rd32(seg, (a + 2) & 0xFFFFFFFF)
        if o16:
            base &= 0xFFFFFF
        if is_gdt:
            cpu.gdtr = (base, limit)
        else:
            cpu.idtr = (base, limit)
    return lgdt, END


@handles(M.SGDT, M.SIDT)
def c_sgdt(cpu, ins):
    if ins.op0_kind != K.MEMORY:
        raise Unsupported("SGDT with a register operand is #UD")
    ea, seg = _dt_operand(cpu, ins)
    is_gdt = ins.mnemonic == M.SGDT
    o16 = ins.code in (getattr(iced.Code, "SGDT_M1632_16", -1), getattr(iced.Code, "SIDT_M1632_16", -1))

    ic, name, length = cpu.intercepts, "sgdt" if is_gdt else "sidt", ins.len

    def sgdt():
        strict_trap(cpu)
        if ic.descriptor_table_exiting:
            raise ExitFault(DescriptorTableExit(name, length))
        base, limit = cpu.gdtr if is_gdt else cpu.idtr
        a = ea()
        # Check both writes before doing either (restartable).
        cpu.wr32(seg, (a + 2) & 0xFFFFFFFF, base & 0xFFFFFF if o16 else base)
        cpu.wr16(seg, a, limit)
    return sgdt, NORMAL


def _system_selector_load(cpu, sel, want_types, name):
    if sel & 4:
        raise CpuFault(GP, sel & 0xFFFC)
    d = D.read_descriptor(cpu, sel)
    if not D.d_is_system(d) or D.d_type(d) not in want_types:
        raise CpuFault(GP, sel & 0xFFFC)
    if not D.d_present(d):
        raise CpuFault(NP, sel & 0xFFFC)
    return d


@handles(M.LLDT)
def c_lldt(cpu, ins):
    src = reader16(cpu, ins, 0)

    ic, length = cpu.intercepts, ins.len

    def lldt():
        require_cpl0(cpu)
        if ic.descriptor_table_exiting:
            raise ExitFault(DescriptorTableExit("lldt", length))
        sel = src()
        if sel & ~3 == 0:
            cpu.ldtr, cpu.ldt_base, cpu.ldt_limit = sel, 0, 0
            return
        d = _system_selector_load(cpu, sel, (SYS_LDT,), "LDT")
        cpu.ldtr, cpu.ldt_base, cpu.ldt_limit = sel, D.d_base(d), D.d_limit(d)
    return lldt, END


@handles(M.LTR)
def c_ltr(cpu, ins):
    src = reader16(cpu, ins, 0)

    ic, length = cpu.intercepts, ins.len

    def ltr():
        require_cpl0(cpu)
        if ic.descriptor_table_exiting:
            raise ExitFault(DescriptorTableExit("ltr", length))
        sel = src()
        if sel & ~3 == 0:
            raise CpuFault(GP, 0)
        d = _system_selector_load(cpu, sel, (SYS_TSS32_AVAIL, SYS_TSS16_AVAIL), "TSS")
        # Mark the TSS busy in the GDT (type bit 1).
        addr = D.descriptor_address(cpu, sel)
        cpu.sys_write(addr + 5, 1, ((d >> 40) & 0xFF) | 2)
        d |= 2 << 40
        cpu.tr, cpu.tr_base, cpu.tr_limit, cpu.tr_attr = sel, D.d_base(d), D.d_limit(d), D.d_attr(d)
    return ltr, END


@handles(M.SLDT, M.STR)
def c_sldt(cpu, ins):
    is_ldt = ins.mnemonic == M.SLDT
    mem = ins.op0_kind == K.MEMORY
    size = 2 if mem else op_size(ins, 0)
    dst = writer(cpu, ins, 0, size)

    ic, name, length = cpu.intercepts, "sldt" if is_ldt else "str", ins.len

    def sldt():
        strict_trap(cpu)
        if ic.descriptor_table_exiting:
            raise ExitFault(DescriptorTableExit(name, length))
        # A 32-bit register destination gets the selector zero-extended (P6 and later).
        dst(cpu.ldtr if is_ldt else cpu.tr)
    return sldt, NORMAL


# ---------------------------------------------- LAR / LSL / VERR / VERW
def _visible_descriptor(cpu, sel):
    """The descriptor LAR/LSL/VERR/VERW may examine, or None (ZF=0)."""
    if sel & ~3 == 0:
        return None
    addr = D.descriptor_address(cpu, sel)
    if addr is None:
        return None
    d = cpu.sys_read(addr, 8)
    # Privilege: for all but conforming code, DPL >= max(CPL, RPL).
    if not (D.d_is_code(d) and D.d_type(d) & 4):
        if D.d_dpl(d) < cpu.cpl or D.d_dpl(d) < (sel & 3):
            return None
    return d


def _set_zf(cpu, on: bool) -> None:
    f = F.arith_flags(cpu.lf)
    cpu.lf = (F.EAGER, (f | ZF) if on else (f & ~ZF), 0, 0, 0)


# System types LAR accepts (SDM Vol. 2 LAR, Table): TSS16/32 avail+busy, LDT, call gates, task gate.
_LAR_TYPES = {1, 2, 3, 4, 5, 9, 11, 12}
_LSL_TYPES = {1, 2, 3, 9, 11}


@handles(M.LAR, M.LSL)
def c_lar(cpu, ins):
    size = op_size(ins, 0)
    src = reader16(cpu, ins, 1)
    dst = reg_writer(cpu, ins.op0_register)
    lar = ins.mnemonic == M.LAR

    def lar_lsl():
        strict_trap(cpu)
        sel = src()
        d = _visible_descriptor(cpu, sel)
        ok = d is not None and (not D.d_is_system(d) or D.d_type(d) in (_LAR_TYPES if lar else _LSL_TYPES))
        if ok:
            if lar:
                v = (d >> 32) & 0x00F0FF00
            else:
                v = D.d_limit(d)
            dst(v & (0xFFFF if size == 2 else 0xFFFFFFFF))
        _set_zf(cpu, ok)
    return lar_lsl, NORMAL


@handles(M.VERR, M.VERW)
def c_verr(cpu, ins):
    src = reader16(cpu, ins, 0)
    want_write = ins.mnemonic == M.VERW

    def verr():
        strict_trap(cpu)
        sel = src()
        d = _visible_descriptor(cpu, sel)
        ok = False
        if d is not None and not D.d_is_system(d):
            t = D.d_type(d)
            if want_write:
                ok = D.d_is_data(d) and bool(t & 2)
            else:
                ok = D.d_is_data(d) or bool(t & 2)
        _set_zf(cpu, ok)
    return verr, NORMAL


# ------------------------------------------------------ segment registers
def compile_mov_sreg(cpu, ins):
    s = SEGREG[ins.op0_register]
    if s == CS:
        raise Unsupported("MOV CS is #UD")
    src = reader(cpu, ins, 1, 2)

    def mov_sreg():
        strict_trap(cpu)
        D.load_data_segment(cpu, s, src() & 0xFFFF)   # MOV Sreg, r32 uses the low 16 bits
        if s == SS:
            cpu.inhibit_irq = True   # the next instruction (normally MOV ESP) runs shadowed
            cpu.ss_shadow = True     # ... and a single-step trap waits for it too
    return mov_sreg, END


def compile_mov_from_sreg(cpu, ins):
    s = SEGREG[ins.op1_register]
    mem = ins.op0_kind == K.MEMORY
    size = 2 if mem else op_size(ins, 0)
    dst = writer(cpu, ins, 0, size)

    def mov_from_sreg():
        strict_trap(cpu)
        dst(cpu.sel[s])   # a 32-bit register gets the selector zero-extended
    return mov_from_sreg, NORMAL


def compile_push_sreg(cpu, ins):
    s = SEGREG[ins.op0_register]
    size = 2 if ins.code in (iced.Code.PUSHW_ES, iced.Code.PUSHW_CS, iced.Code.PUSHW_SS,
                             iced.Code.PUSHW_DS, iced.Code.PUSHW_FS, iced.Code.PUSHW_GS) else 4

    def push_sreg():
        strict_trap(cpu)
        if size == 4:
            # A 32-bit push of a segment register writes only the low 16 bits on
            # recent Intel CPUs and leaves the upper half unchanged (SDM Vol. 2 PUSH);
            # QEMU writes a zero-extended dword. We follow the oracle (QEMU).
            cpu.push32(cpu.sel[s])
        else:
            cpu.push16(cpu.sel[s])
    return push_sreg, NORMAL


def compile_pop_sreg(cpu, ins):
    s = SEGREG[ins.op0_register]
    size = 2 if ins.code in (iced.Code.POPW_ES, iced.Code.POPW_SS, iced.Code.POPW_DS,
                             iced.Code.POPW_FS, iced.Code.POPW_GS) else 4
    regs = cpu.regs

    def pop_sreg():
        strict_trap(cpu)
        old = regs[4]
        v = (cpu.pop32() if size == 4 else cpu.pop16()) & 0xFFFF
        try:
            D.load_data_segment(cpu, s, v)
        except CpuFault:
            regs[4] = old
            raise
        if s == SS:
            cpu.inhibit_irq = True
            cpu.ss_shadow = True
    return pop_sreg, END


@handles(M.LDS, M.LES, M.LFS, M.LGS, M.LSS)
def c_lxs(cpu, ins):
    s = {M.LDS: DS, M.LES: ES, M.LFS: FS, M.LGS: GS, M.LSS: SS}[ins.mnemonic]
    size = op_size(ins, 0)
    ea, seg = ea_fn(cpu, ins), mem_segment(ins)
    dst = reg_writer(cpu, ins.op0_register)

    def lxs():
        strict_trap(cpu)     # a segment load like MOV Sreg: sensitive, so it traps on the strict CPU
        a = ea()
        off = cpu.rd32(seg, a) if size == 4 else cpu.rd16(seg, a)
        sel = cpu.rd16(seg, (a + size) & 0xFFFFFFFF)
        D.load_data_segment(cpu, s, sel)
        dst(off)
    return lxs, END


# ----------------------------------------------------------- far transfers
def _far_target(cpu, ins):
    """A closure returning (selector, offset, operand size) for a far JMP/CALL."""
    if ins.op0_kind in (K.FAR_BRANCH32, K.FAR_BRANCH16):
        sel, off = ins.far_branch_selector, ins.near_branch_target if False else (
            ins.far_branch32 if ins.op0_kind == K.FAR_BRANCH32 else ins.far_branch16)
        size = 4 if ins.op0_kind == K.FAR_BRANCH32 else 2
        return (lambda: (sel, off)), size
    size = 4 if ins.code in (iced.Code.JMP_M1632, iced.Code.CALL_M1632) else 2
    ea, seg = ea_fn(cpu, ins), mem_segment(ins)

    def target():
        a = ea()
        off = cpu.rd32(seg, a) if size == 4 else cpu.rd16(seg, a)
        return cpu.rd16(seg, (a + size) & 0xFFFFFFFF), off
    return target, size


def compile_far_jmp(cpu, ins):
    target, size = _far_target(cpu, ins)
    nxt = ins.next_ip & (0xFFFFFFFF if cpu.cs32 else 0xFFFF)   # saved in the TSS by a task switch

    def far_jmp():
        strict_trap(cpu)
        sel, off = target()
        far_transfer(cpu, sel, off, size, call=False, ret_eip=nxt)
    return far_jmp, JUMP


def compile_far_call(cpu, ins):
    target, size = _far_target(cpu, ins)
    nxt = ins.next_ip & (0xFFFFFFFF if cpu.cs32 else 0xFFFF)

    def far_call():
        strict_trap(cpu)
        sel, off = target()
        far_transfer(cpu, sel, off, size, call=True, ret_eip=nxt)
    return far_call, JUMP


def far_transfer(cpu, sel: int, off: int, size: int, call: bool, ret_eip) -> None:
    """Far JMP/CALL in protected mode: direct to a code segment, or through a call gate
    (SDM Vol. 2 CALL/JMP, Vol. 3A §5.8.4-5.8.6)."""
    if sel & ~3 == 0:
        raise CpuFault(GP, 0)
    d = D.read_descriptor(cpu, sel)
    if D.d_is_code(d):
        D.check_code_for_transfer(cpu, sel, d)
        if off > D.d_limit(d):
            raise CpuFault(GP, 0)
        if call:
            _push_return(cpu, size, cpu.sel[CS], ret_eip)
        D.load_cs(cpu, sel, d, cpu.cpl)
        cpu.eip = off
        return
    t = D.d_type(d)
    if D.d_is_system(d) and t in (SYS_CALL_GATE32, SYS_CALL_GATE16):
        return _through_call_gate(cpu, sel, d, call, ret_eip)
    if tasks.is_task_type(d):
        # A task switch (SDM Vol. 2 JMP/CALL, TASK-GATE and TASK-STATE-SEGMENT):
        # DPL >= max(CPL, RPL) of the TSS or gate, the TSS not busy.
        dpl = D.d_dpl(d)
        if dpl < cpu.cpl or dpl < (sel & 3):
            raise CpuFault(GP, sel & 0xFFFC)
        if t == 5:
            tsel, td = tasks.via_gate(cpu, sel, d)
        elif t & 2:
            raise CpuFault(GP, sel & 0xFFFC)
        else:
            tsel, td = sel, d
        tasks.switch(cpu, tsel, td, "call" if call else "jmp", ret_eip)
        return
    raise CpuFault(GP, sel & 0xFFFC)


def _push_return(cpu, size, cs, eip):
    regs = cpu.regs
    old = regs[4]
    try:
        if size == 4:
            cpu.push32(cs)
            cpu.push32(eip)
        else:
            cpu.push16(cs)
            cpu.push16(eip & 0xFFFF)
    except CpuFault:
        regs[4] = old
        raise


def _through_call_gate(cpu, gsel, g, call, ret_eip):
    gdpl = D.d_dpl(g)
    if gdpl < cpu.cpl or gdpl < (gsel & 3):
        raise CpuFault(GP, gsel & 0xFFFC)
    if not D.d_present(g):
        raise CpuFault(NP, gsel & 0xFFFC)
    gate32 = D.d_type(g) == SYS_CALL_GATE32
    sel = (g >> 16) & 0xFFFF
    off = (g & 0xFFFF) | ((g >> 32) & 0xFFFF0000)
    if not gate32:
        off &= 0xFFFF
    nparams = (g >> 32) & 0x1F
    if sel & ~3 == 0:
        raise CpuFault(GP, 0)
    d = D.read_descriptor(cpu, sel)
    if not D.d_is_code(d) or D.d_dpl(d) > cpu.cpl:
        raise CpuFault(GP, sel & 0xFFFC)
    if not call and not D.d_type(d) & 4 and D.d_dpl(d) != cpu.cpl:
        raise CpuFault(GP, sel & 0xFFFC)
    if not D.d_present(d):
        raise CpuFault(NP, sel & 0xFFFC)
    if off > D.d_limit(d):
        raise CpuFault(GP, 0)
    size = 4 if gate32 else 2
    conforming = D.d_type(d) & 4
    if call and not conforming and D.d_dpl(d) < cpu.cpl:
        # More privileged: switch to the inner stack, copy parameters.
        new_cpl = D.d_dpl(d)
        ss, esp = D.tss_stack(cpu, new_cpl)
        ssd = D.check_new_stack(cpu, ss, new_cpl)
        old_ss, old_esp = cpu.sel[SS], cpu.regs[4]
        mask = 0xFFFFFFFF if cpu.ss32 else 0xFFFF
        params = [cpu.rd(SS, (old_esp + i * size) & mask, size) for i in range(nparams)]
        ss_base = D.d_base(ssd)
        ss32 = bool(D.d_attr(ssd) & 0x4000)
        nmask = 0xFFFFFFFF if ss32 else 0xFFFF
        words = [old_ss, old_esp] + list(reversed(params)) + [cpu.sel[CS], ret_eip]
        p = newsp = D.check_stack_room(ssd, ss, esp, size * len(words))
        limit = D.d_limit(ssd)
        for w in reversed(words):
            cpu.sys_write(ss_base + p, size, w & ((1 << (8 * size)) - 1))
            p = (p + size) & nmask
        D.set_accessed(cpu, ss, ssd)
        cpu.set_segment_cache(SS, (ss & ~3) | new_cpl, ss_base, limit, D.d_attr(ssd) | 1)
        cpu.regs[4] = newsp if ss32 else (esp & 0xFFFF0000) | newsp
        D.load_cs(cpu, sel, d, new_cpl)
        cpu.eip = off
        return
    if call:
        _push_return(cpu, size, cpu.sel[CS], ret_eip)
    D.load_cs(cpu, sel, d, cpu.cpl)
    cpu.eip = off


@handles(M.RETF)
def c_retf(cpu, ins):
    size = 2 if ins.code in (iced.Code.RETFW, iced.Code.RETFW_IMM16) else 4
    extra = ins.immediate16 if ins.op_count else 0

    def retf():
        strict_trap(cpu)
        far_return(cpu, size, extra)
    return retf, JUMP


def far_return(cpu, size: int, extra: int) -> None:
    """RET far, to the same or an outer privilege level (SDM Vol. 2 RET)."""
    regs = cpu.regs
    mask = 0xFFFFFFFF if cpu.ss32 else 0xFFFF
    sp = regs[4] & mask
    rd = cpu.rd32 if size == 4 else cpu.rd16
    new_eip = rd(SS, sp)
    new_cs = rd(SS, (sp + size) & mask) & 0xFFFF
    d = D.check_return_cs(cpu, new_cs)
    rpl = new_cs & 3
    if new_eip > D.d_limit(d):
        raise CpuFault(GP, 0)
    if rpl > cpu.cpl:
        base = (sp + 2 * size + extra) & mask
        new_esp = rd(SS, base)
        new_ss = rd(SS, (base + size) & mask) & 0xFFFF
        ssd = D.check_return_ss(cpu, new_ss, rpl, SS_VEC)
        D.load_cs(cpu, new_cs, d, rpl)
        D.set_accessed(cpu, new_ss, ssd)
        D.load_cache(cpu, SS, new_ss, ssd)
        nm = 0xFFFFFFFF if cpu.ss32 else 0xFFFF
        esp = (new_esp + extra) & nm
        regs[4] = esp if cpu.ss32 else (regs[4] & 0xFFFF0000) | esp
        D.invalidate_outer_segments(cpu)
    else:
        D.load_cs(cpu, new_cs, d, cpu.cpl)
        esp = (sp + 2 * size + extra) & mask
        regs[4] = esp if cpu.ss32 else (regs[4] & 0xFFFF0000) | esp
    cpu.eip = new_eip


# ---------------------------------------------------- INT n, INT3, INTO, IRET
@handles(M.INT, M.INT3, M.INTO, M.INT1)
def c_int(cpu, ins):
    op = ins.mnemonic
    nxt = ins.next_ip & (0xFFFFFFFF if cpu.cs32 else 0xFFFF)
    ip = ins.ip
    if op == M.INT:
        vector = ins.immediate8

        def int_n():
            strict_trap(cpu)
            software_interrupt(cpu, vector, nxt, ip)
        return int_n, JUMP
    if op == M.INT3:
        def int3():
            software_interrupt(cpu, BP, nxt, ip)
        return int3, JUMP
    if op == M.INT1:
        def int1():
            # ICEBP raises #DB as a trap: like every exception, it exits to a monitor
            # whose exception bitmap has bit 1 (deliver_event checks), else goes
            # through the IDT.
            from .interrupts import deliver_event
            cpu.eip = nxt
            deliver_event(cpu, 1, None, kind="exception")
        return int1, JUMP

    def into():
        if F.arith_flags(cpu.lf) & 0x800:
            software_interrupt(cpu, OF_VEC, nxt, ip)
        else:
            cpu.eip = nxt
    return into, JUMP


@handles(M.IRET, M.IRETD)
def c_iret(cpu, ins):
    size = 4 if ins.mnemonic == M.IRETD else 2

    nxt = ins.next_ip & (0xFFFFFFFF if cpu.cs32 else 0xFFFF)

    def iret_():
        # IRET changes CPL and IF without trapping: control sensitive, so the
        # strict (virtualizable) CPU traps it outside ring 0.
        strict_trap(cpu)
        iret(cpu, size, nxt)
    return iret_, JUMP


@handles(M.BOUND)
def c_bound(cpu, ins):
    size = op_size(ins, 0)
    idx = reg_reader(cpu, ins.op0_register)
    ea, seg = ea_fn(cpu, ins), mem_segment(ins)
    sign = 1 << (size * 8 - 1)

    def bound():
        a = ea()
        lo = cpu.rd(seg, a, size)
        hi = cpu.rd(seg, (a + size) & 0xFFFFFFFF, size)
        v = idx()
        sx = lambda x: (x ^ sign) - sign  # noqa: E731
        if sx(v) < sx(lo) or sx(v) > sx(hi):
            raise CpuFault(BR)
    return bound, NORMAL


@handles(M.UD2, M.UD0, M.UD1)
def c_ud2(cpu, ins):
    def ud2():
        raise CpuFault(UD)
    return ud2, JUMP


@handles(M.ARPL)
def c_arpl(cpu, ins):
    rd = reader(cpu, ins, 0, 2)
    wr = writer(cpu, ins, 0, 2)
    src = reg_reader(cpu, ins.op1_register)

    def arpl():
        d = rd()
        s = src()
        if (d & 3) < (s & 3):
            wr((d & ~3) | (s & 3))
            _set_zf(cpu, True)
        else:
            _set_zf(cpu, False)
    return arpl, NORMAL


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


# CPUID.1:EDX feature bits we implement (SDM Vol. 2 CPUID, Table 3-11).
CPUID_EDX = (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 8) | (1 << 9) \
    | (1 << 11) | (1 << 13) | (1 << 15)   # VME DE PSE TSC MSR CX8 APIC SEP PGE CMOV


@handles(M.CPUID)
def c_cpuid(cpu, ins):
    regs = cpu.regs

    def cpuid():
        leaf = regs[0]
        if leaf == 0:
            # Vendor "TrapvisorCPU" in EBX, EDX, ECX.
            v = b"TrapvisorCPU"
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


# ------------------------------------------------------------- x87 and WAIT
# This CPU has no x87 unit (CPUID.1:EDX.FPU = 0); what it implements is the
# part of the x87 interface the system architecture defines: the #NM checks
# (SDM Vol. 3A §2.5, Table 2-2).  An x87 instruction raises #NM when CR0.EM
# or CR0.TS is set; WAIT/FWAIT raises #NM when CR0.MP and CR0.TS are both
# set and is otherwise a no-op (there is never an unmasked x87 exception
# pending).  FNOP with EM = TS = 0 is a no-op; any other x87 instruction with
# EM = TS = 0 stops the machine as not implemented.
_X87 = [getattr(M, n) for n in dir(M) if n.startswith("F") and n not in (
    "FEMMS", "FXSAVE", "FXSAVE64", "FXRSTOR", "FXRSTOR64")]


@handles(*_X87)
def c_x87(cpu, ins):
    from .constants import CR0_EM, CR0_TS, NM
    from .translate import _unimplemented
    nop = ins.mnemonic == M.FNOP
    missing = None if nop else _unimplemented(cpu, ins)

    def x87():
        if cpu.cr0 & (CR0_EM | CR0_TS):
            raise CpuFault(NM)
        if missing is not None:
            missing()
    return x87, (NORMAL if nop else JUMP)


@handles(M.WAIT)
def c_wait(cpu, ins):
    from .constants import CR0_MP, CR0_TS, NM

    def wait():
        if cpu.cr0 & CR0_MP and cpu.cr0 & CR0_TS:
            raise CpuFault(NM)
    return wait, NORMAL
