"""Operands of a decoded instruction, turned into closures once at translation.

iced-x86 tells us what an operand is (register, memory with base/index/scale/
displacement/segment, immediate); this module turns each into a reader
``() -> int`` and/or a writer ``(int) -> None`` bound to one CPU, so the
compiled instruction does no decoding work when it runs.

For memory operands the effective address is a separate closure ``ea()``
(SDM Vol. 1 §3.7.5) so that read-modify-write instructions compute it once.
"""

from __future__ import annotations

import iced_x86 as iced

from .constants import CS, DS, ES, FS, GS, SS

R = iced.Register
K = iced.OpKind

# iced register -> (index into cpu.regs, size in bytes, shift)
GPR: dict[int, tuple[int, int, int]] = {}
for i, n in enumerate(("EAX", "ECX", "EDX", "EBX", "ESP", "EBP", "ESI", "EDI")):
    GPR[getattr(R, n)] = (i, 4, 0)
for i, n in enumerate(("AX", "CX", "DX", "BX", "SP", "BP", "SI", "DI")):
    GPR[getattr(R, n)] = (i, 2, 0)
for i, n in enumerate(("AL", "CL", "DL", "BL")):
    GPR[getattr(R, n)] = (i, 1, 0)
for i, n in enumerate(("AH", "CH", "DH", "BH")):
    GPR[getattr(R, n)] = (i, 1, 8)

SEGREG = {R.ES: ES, R.CS: CS, R.SS: SS, R.DS: DS, R.FS: FS, R.GS: GS}
CREG = {getattr(R, f"CR{i}"): i for i in range(16) if hasattr(R, f"CR{i}")}
DREG = {getattr(R, f"DR{i}"): i for i in range(16) if hasattr(R, f"DR{i}")}

MASK = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF}
SIGN = {1: 0x80, 2: 0x8000, 4: 0x80000000}

IMM_KINDS = {K.IMMEDIATE8, K.IMMEDIATE16, K.IMMEDIATE32, K.IMMEDIATE8TO16,
             K.IMMEDIATE8TO32, K.IMMEDIATE8_2ND}
MEM_KINDS = {K.MEMORY}


class Unsupported(Exception):
    """An instruction or operand form this CPU does not implement."""


def op_size(ins, i: int) -> int:
    """Size in bytes of operand ``i``."""
    kind = ins.op_kind(i)
    if kind == K.REGISTER:
        reg = ins.op_register(i)
        if reg in GPR:
            return GPR[reg][1]
        if reg in SEGREG:
            return 2
        return 4
    if kind == K.MEMORY:
        return iced.MemorySizeInfo(ins.memory_size).size
    if kind in (K.IMMEDIATE8, K.IMMEDIATE8_2ND):
        return 1
    if kind in (K.IMMEDIATE16, K.IMMEDIATE8TO16):
        return 2
    return 4


def mem_segment(ins) -> int:
    return SEGREG[ins.memory_segment]


def ea_fn(cpu, ins):
    """Closure computing the effective address (offset within the segment)."""
    regs = cpu.regs
    base = ins.memory_base
    index = ins.memory_index
    scale = ins.memory_index_scale
    disp = ins.memory_displacement
    addr32 = ins.memory_displ_size != 2 and not _is16(base) and not _is16(index)
    if not addr32:
        return _ea16(cpu, ins)
    disp &= 0xFFFFFFFF
    b = GPR[base][0] if base != R.NONE else None
    x = GPR[index][0] if index != R.NONE else None
    if b is None and x is None:
        return lambda: disp
    if x is None:
        if disp == 0:
            return lambda: regs[b]
        return lambda: (regs[b] + disp) & 0xFFFFFFFF
    if b is None:
        return lambda: (regs[x] * scale + disp) & 0xFFFFFFFF
    if scale == 1:
        return lambda: (regs[b] + regs[x] + disp) & 0xFFFFFFFF
    return lambda: (regs[b] + regs[x] * scale + disp) & 0xFFFFFFFF


def _is16(reg) -> bool:
    return reg != R.NONE and reg in GPR and GPR[reg][1] == 2


def _ea16(cpu, ins):
    """16-bit addressing (address-size prefix): BX/BP + SI/DI + disp16, wrapping at 64 KiB."""
    regs = cpu.regs
    base, index = ins.memory_base, ins.memory_index
    disp = ins.memory_displacement & 0xFFFF
    b = GPR[base][0] if base != R.NONE else None
    x = GPR[index][0] if index != R.NONE else None
    if b is None and x is None:
        return lambda: disp
    if x is None:
        return lambda: (regs[b] + disp) & 0xFFFF
    if b is None:
        return lambda: (regs[x] + disp) & 0xFFFF
    return lambda: (regs[b] + regs[x] + disp) & 0xFFFF


def reg_reader(cpu, reg):
    idx, size, shift = GPR[reg]
    regs = cpu.regs
    if size == 4:
        return lambda: regs[idx]
    if size == 2:
        return lambda: regs[idx] & 0xFFFF
    if shift:
        return lambda: (regs[idx] >> 8) & 0xFF
    return lambda: regs[idx] & 0xFF


def reg_writer(cpu, reg):
    idx, size, shift = GPR[reg]
    regs = cpu.regs
    if size == 4:
        def w(v):
            regs[idx] = v
    elif size == 2:
        def w(v):
            regs[idx] = (regs[idx] & 0xFFFF0000) | v
    elif shift:
        def w(v):
            regs[idx] = (regs[idx] & 0xFFFF00FF) | (v << 8)
    else:
        def w(v):
            regs[idx] = (regs[idx] & 0xFFFFFF00) | v
    return w


def mem_reader(cpu, seg, size):
    """Closure (offset) -> value for a memory operand of ``size`` bytes."""
    return {1: cpu.rd8, 2: cpu.rd16, 4: cpu.rd32}[size].__func__.__get__(cpu)


def imm_value(ins, i: int) -> int:
    kind = ins.op_kind(i)
    if kind == K.IMMEDIATE8:
        return ins.immediate8
    if kind == K.IMMEDIATE8_2ND:
        return ins.immediate8_2nd
    if kind == K.IMMEDIATE16:
        return ins.immediate16
    if kind == K.IMMEDIATE8TO16:
        return ins.immediate8to16 & 0xFFFF
    if kind == K.IMMEDIATE8TO32:
        return ins.immediate8to32 & 0xFFFFFFFF
    if kind == K.IMMEDIATE32:
        return ins.immediate32
    raise Unsupported(f"immediate kind {kind}")


def reader(cpu, ins, i: int, size: int | None = None):
    """A closure returning operand ``i``'s value (register, memory or immediate)."""
    kind = ins.op_kind(i)
    if kind == K.REGISTER:
        reg = ins.op_register(i)
        if reg in GPR:
            return reg_reader(cpu, reg)
        if reg in SEGREG:
            s = SEGREG[reg]
            sel = cpu.sel
            return lambda: sel[s]
        raise Unsupported(f"register operand {reg}")
    if kind == K.MEMORY:
        size = size or op_size(ins, i)
        ea = ea_fn(cpu, ins)
        seg = mem_segment(ins)
        rd = {1: cpu.rd8, 2: cpu.rd16, 4: cpu.rd32}[size]
        return lambda: rd(seg, ea())
    if kind in IMM_KINDS:
        v = imm_value(ins, i)
        return lambda: v
    raise Unsupported(f"operand kind {kind}")


def writer(cpu, ins, i: int, size: int | None = None):
    kind = ins.op_kind(i)
    if kind == K.REGISTER:
        reg = ins.op_register(i)
        if reg in GPR:
            return reg_writer(cpu, reg)
        raise Unsupported(f"register operand {reg}")
    if kind == K.MEMORY:
        size = size or op_size(ins, i)
        ea = ea_fn(cpu, ins)
        seg = mem_segment(ins)
        wr = {1: cpu.wr8, 2: cpu.wr16, 4: cpu.wr32}[size]
        return lambda v: wr(seg, ea(), v)
    raise Unsupported(f"operand kind {kind} is not writable")


def sign_extend(v: int, size: int) -> int:
    s = SIGN[size]
    return (v ^ s) - s


def reader16(cpu, ins, i: int):
    """A 16-bit source operand (a selector or the MSW).  With a register it may
    be a 32-bit one (iced decodes e.g. ``0F 00 /4`` as VERR r32/m16): only its
    low 16 bits are used (SDM Vol. 2 LAR, LSL, VERR, LLDT, LTR, LMSW)."""
    r = reader(cpu, ins, i, 2)
    return lambda: r() & 0xFFFF


def rmw(cpu, ins, size):
    """(read, write) closures for a read-modify-write destination operand 0.

    For memory the effective address is computed once per execution and
    shared between the read and the write through a one-element cell.
    """
    if ins.op0_kind == K.REGISTER:
        return reg_reader(cpu, ins.op0_register), reg_writer(cpu, ins.op0_register), None
    ea = ea_fn(cpu, ins)
    seg = mem_segment(ins)
    rd = {1: cpu.rd8, 2: cpu.rd16, 4: cpu.rd32}[size]
    wr = {1: cpu.wr8, 2: cpu.wr16, 4: cpu.wr32}[size]
    return (rd, wr, (seg, ea))
