"""Descriptor-table registers and pointer validation: LGDT LIDT LLDT LTR, SGDT
SIDT SLDT STR, LAR LSL VERR VERW, ARPL.

LGDT, LIDT, LLDT and LTR load GDTR, IDTR, LDTR and TR (SDM Vol. 3A §2.4,
memory-management registers; Vol. 2 for each) and are privileged; SGDT, SIDT,
SLDT and STR store them at any CPL, sensitive but unprivileged (Robin and
Irvine, see ``privilege.py``), so they trap on the strict CPU.  LAR, LSL,
VERR, VERW and ARPL check a selector the way a procedure validates a pointer
it was handed (SDM Vol. 3A §5.10) and report the result in ZF.  Descriptors
are read and decoded by ``descriptors.py``.
"""

from __future__ import annotations

import iced_x86 as iced

from . import descriptors as D
from . import flags as F
from .constants import GP, NP, SYS_LDT, SYS_TSS16_AVAIL, SYS_TSS32_AVAIL, ZF
from .cpu import CpuFault, ExitFault
from .exits import DescriptorTableExit
from .operands import (
    K, Unsupported, ea_fn, mem_segment, op_size, reader, reader16, reg_reader, reg_writer,
    writer,
)
from .privilege import require_cpl0, strict_trap
from .registry import END, NORMAL, handles

M = iced.Mnemonic


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


# -------------------------------------------------------------------- ARPL
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
