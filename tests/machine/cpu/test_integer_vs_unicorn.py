"""Differential tests of the integer instruction set against unicorn (QEMU TCG).

One hypothesis test per instruction family.  Each example builds a short
snippet (iced-x86 ``Instruction`` objects, encoded by the BlockEncoder) with
random operand forms -- register/register, register/memory, memory/register,
immediates of every width, 8-bit high registers, every addressing mode
including SIB and 16-bit addressing, segment overrides -- and random values
biased towards the edges (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF,
0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, ...), runs it on both machines and
compares registers, EIP, flags, memory and exceptions (``oracle.py``).

Example counts: ``settings(max_examples=...)`` per test, multiplied by the
environment variable ``TRAPVISOR_ORACLE_EXAMPLES`` (a factor, default 1), e.g.
``TRAPVISOR_ORACLE_EXAMPLES=20 pytest -n 2 tests/machine/cpu`` for a long run.
"""

from __future__ import annotations

import os
import random

import iced_x86 as iced
import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from . import oracle as O
from .oracle import CODE, DATA, DATA_MID, DATA_SIZE, STACK, STACK_TOP, Case, check

C = iced.Code
R = iced.Register
M = iced.Mnemonic
OK = iced.OpCodeOperandKind
I = iced.Instruction

M32 = 0xFFFFFFFF

# ----------------------------------------------------------------- values
EDGES = {
    8: (0, 1, 2, 0x7E, 0x7F, 0x80, 0x81, 0xFE, 0xFF, 0x0F, 0x10),
    16: (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFE, 0x7FFF, 0x8000, 0x8001, 0xFFFE, 0xFFFF),
    32: (0, 1, 2, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFE, 0x7FFFFFFF,
         0x80000000, 0x80000001, 0xFFFFFFFE, 0xFFFFFFFF),
}


def value(bits: int):
    """A value of ``bits`` bits, biased towards the edges."""
    m = (1 << bits) - 1
    edges = EDGES[bits]
    return st.one_of(
        st.sampled_from(edges),
        st.integers(0, m),
        st.builds(lambda e, d: (e + d) & m, st.sampled_from(edges), st.integers(-3, 3)),
    )


SHIFT_COUNTS = (0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 63, 64, 65, 0xFF)


def shift_count():
    return st.one_of(st.sampled_from(SHIFT_COUNTS), st.integers(0, 0xFF))


def flags_value():
    """Initial EFLAGS: any arithmetic flags, DF either way."""
    return st.builds(lambda a, df: a | (O.DF if df else 0),
                     st.integers(0, 0x3F).map(_spread_flags), st.booleans())


def _spread_flags(bits6: int) -> int:
    out = 0
    for i, b in enumerate((O.CF, O.PF, O.AF, O.ZF, O.SF, O.OF)):
        if bits6 >> i & 1:
            out |= b
    return out


# ------------------------------------------------------------- registers
GPR32 = (R.EAX, R.ECX, R.EDX, R.EBX, R.ESP, R.EBP, R.ESI, R.EDI)
GPR16 = (R.AX, R.CX, R.DX, R.BX, R.SP, R.BP, R.SI, R.DI)
GPR8 = (R.AL, R.CL, R.DL, R.BL, R.AH, R.CH, R.DH, R.BH)
REGS = {1: GPR8, 2: GPR16, 4: GPR32}
SIZE_OF = {r: s for s, rs in REGS.items() for r in rs}


def reg_slot(reg) -> tuple[int, int, int]:
    """(index into the 8 GPRs, size in bytes, bit shift) of an iced register."""
    size = SIZE_OF[reg]
    i = REGS[size].index(reg)
    if size == 1 and i >= 4:
        return i - 4, 1, 8
    return i, size, 0


class Builder:
    """Draws one snippet's operands and initial state from a hypothesis ``data``."""

    def __init__(self, data, stack: bool = False, fill: bool = True):
        self.d = data
        self.regs = [data.draw(value(32), label="reg") for _ in range(8)]
        self.fixed: set[int] = set()   # registers whose value an address depends on
        self.stack = stack
        if stack:
            self.regs[4] = STACK_TOP - data.draw(st.sampled_from((0, 4, 8, 2, 0x100, 0x7FC)), label="esp-off")
            self.fixed.add(4)
        self.eflags = data.draw(flags_value(), label="eflags")
        self.writes: list[tuple[int, bytes]] = []
        if fill:
            seed = data.draw(st.integers(0, 2**32 - 1), label="memory seed")
            rnd = random.Random(seed)
            self.writes.append((DATA, rnd.randbytes(DATA_SIZE)))
            self.writes.append((STACK_TOP - 0x1000, rnd.randbytes(0x2000)))
        self.ignore_flags = 0

    def draw(self, strategy, label=None):
        return self.d.draw(strategy, label=label)

    def set_reg(self, reg, v: int, force: bool = False) -> None:
        i, size, shift = reg_slot(reg)
        if i in self.fixed and not force:
            return
        m = ((1 << (8 * size)) - 1) << shift
        self.regs[i] = (self.regs[i] & ~m & M32) | ((v << shift) & m)

    def write(self, addr: int, v: int, size: int) -> None:
        self.writes.append((addr, (v & ((1 << (8 * size)) - 1)).to_bytes(size, "little")))

    # -- operands ----------------------------------------------------------
    def reg(self, size: int, val=None, exclude=()):
        choices = [r for r in REGS[size] if reg_slot(r)[0] not in exclude]
        r = self.draw(st.sampled_from(choices), label=f"r{8 * size}")
        v = self.draw(val if val is not None else value(8 * size), label="value")
        self.set_reg(r, v)
        return r

    def fixed_reg(self, reg, val=None):
        size = SIZE_OF[reg]
        self.set_reg(reg, self.draw(val if val is not None else value(8 * size), label=f"{reg}"))
        return reg

    def address(self, size: int) -> int:
        """A data-area address for an operand of ``size`` bytes (page crossings included)."""
        return DATA_MID + self.draw(st.one_of(st.integers(-0x1000, 0x1000),
                                              st.integers(-size - 2, 2)), label="addr-off")

    def mem(self, size: int, val=None, absolute: bool = False, seg: bool = True, addr=None):
        """A memory operand of ``size`` bytes (0: no value, e.g. LEA) in the data area."""
        if addr is None:
            addr = self.address(max(size, 1))
        if size:
            self.write(addr, self.draw(val if val is not None else value(8 * min(size, 4)), label="mem"),
                       min(size, 4))
            if size == 8:
                self.write(addr + 4, self.draw(value(32), label="mem-hi"), 4)
        segreg = R.NONE
        if seg and self.draw(st.integers(0, 5), label="seg?") == 0:
            segreg = self.draw(st.sampled_from((R.DS, R.ES, R.SS, R.FS, R.GS)), label="seg")
        mode = "abs" if absolute else self.draw(
            st.sampled_from(("abs", "base", "base", "sib", "sib", "index", "a16")), label="addr-mode")
        if mode == "abs":
            return iced.MemoryOperand(displ=addr, displ_size=4, seg=segreg)
        if mode == "a16":
            return self._mem16(addr, segreg)
        free32 = [r for r in GPR32 if GPR32.index(r) not in self.fixed or GPR32.index(r) == 4]
        if mode == "base":
            base = self.draw(st.sampled_from(free32), label="base")
            return self._base_index(addr, base, R.NONE, 1, segreg)
        index = self.draw(st.sampled_from([r for r in free32 if r != R.ESP]), label="index")
        scale = self.draw(st.sampled_from((1, 2, 4, 8)), label="scale")
        if mode == "index":
            return self._base_index(addr, R.NONE, index, scale, segreg)
        base = self.draw(st.sampled_from([r for r in free32 if r != index]), label="base")
        return self._base_index(addr, base, index, scale, segreg)

    def _base_index(self, addr, base, index, scale, segreg):
        total = 0
        if index != R.NONE:
            xi = GPR32.index(index)
            if xi not in self.fixed:
                self.regs[xi] = self.draw(st.one_of(st.integers(0, 64), st.integers(0, M32),
                                                    st.sampled_from((M32, 0x80000000))), label="index-value")
                self.fixed.add(xi)
            total += self.regs[xi] * scale
        disp_choice = self.draw(st.sampled_from((0, 1, 4)), label="disp-size")
        if base != R.NONE:
            bi = GPR32.index(base)
            if bi in self.fixed:
                disp = (addr - self.regs[bi] - total) & M32
                if bi == 4 and self.stack:
                    # ESP-based operand in a stack test: address the stack instead.
                    disp = self.draw(st.integers(-16, 64), label="esp-disp") & M32
                    addr = (self.regs[4] + disp) & M32
            else:
                disp = {0: 0, 1: self.draw(st.integers(-128, 127), label="d8"),
                        4: self.draw(st.integers(-0x80000000, 0x7FFFFFFF), label="d32")}[disp_choice] & M32
                self.regs[bi] = (addr - total - disp) & M32
                self.fixed.add(bi)
        else:
            disp = (addr - total) & M32
        disp_s = disp - (1 << 32) if disp & 0x80000000 else disp
        dsize = 0 if disp == 0 and base not in (R.NONE, R.EBP) else (1 if -128 <= disp_s < 128 else 4)
        if base == R.NONE:
            dsize = 4
        self.last_addr = addr
        return iced.MemoryOperand(base, index, scale, disp_s, dsize, False, segreg)

    def _mem16(self, addr, segreg):
        """16-bit addressing: [BX|BP] + [SI|DI] + disp, wrapping at 64 KiB."""
        form = self.draw(st.sampled_from(((R.BX, R.SI), (R.BX, R.DI), (R.BP, R.SI), (R.BP, R.DI),
                                          (R.SI, R.NONE), (R.DI, R.NONE), (R.BX, R.NONE),
                                          (R.BP, R.NONE), (R.NONE, R.NONE))), label="a16 form")
        base, index = form
        regs16 = [r for r in (base, index) if r != R.NONE]
        if any(GPR16.index(r) in self.fixed for r in regs16):
            return iced.MemoryOperand(displ=addr, displ_size=4, seg=segreg)
        disp = self.draw(st.sampled_from((0, 1, 2)), label="disp16-size")
        d = {0: 0, 1: self.draw(st.integers(-128, 127)), 2: self.draw(st.integers(0, 0xFFFF))}[disp]
        if not regs16:
            d, disp = addr, 2
        elif base == R.BP and index == R.NONE and disp == 0:
            disp = 1
        rest = addr - d
        if len(regs16) == 2:
            v2 = self.draw(st.integers(0, 0xFFFF), label="a16 index")
            self._set16(regs16[1], v2)
            rest -= v2
        self._set16(regs16[0], rest & 0xFFFF) if regs16 else None
        ds = {0: 0, 1: 1, 2: 2}[disp]
        if ds == 1 and not -128 <= d < 128:
            ds = 2
        d16 = d & 0xFFFF
        return iced.MemoryOperand(base, index, 1, d16 - 0x10000 if ds == 1 and d16 & 0x8000 else d16,
                                  ds, False, segreg)

    def _set16(self, reg, v):
        i = GPR16.index(reg)
        self.regs[i] = (self.draw(st.integers(0, 0xFFFF), label="a16 high") << 16) | v
        self.fixed.add(i)

    def case(self, instrs, **kw) -> Case:
        return Case(O.assemble(instrs), list(self.regs), self.eflags, list(self.writes),
                    ignore_flags=self.ignore_flags, **kw)


# ----------------------------------------------------- generic instruction
_KIND_SIZE = {
    OK.R8_OR_MEM: 1, OK.R16_OR_MEM: 2, OK.R32_OR_MEM: 4,
    OK.R8_REG: 1, OK.R16_REG: 2, OK.R32_REG: 4,
    OK.R8_OPCODE: 1, OK.R16_OPCODE: 2, OK.R32_OPCODE: 4,
}
_FIXED_REG = {OK.AL: R.AL, OK.AX: R.AX, OK.EAX: R.EAX, OK.CL: R.CL, OK.DX: R.DX}


def codes_for(*mnemonics, exclude=()) -> list[int]:
    """Every legacy-encoded 32-bit-mode Code for these mnemonics."""
    want = set(mnemonics)
    out = []
    for code in range(_N_CODES):
        info = iced.OpCodeInfo(code)
        if info.mnemonic in want and info.mode32 and info.encoding == iced.EncodingKind.LEGACY \
                and code not in exclude:
            out.append(code)
    return out


_N_CODES = max(v for k, v in vars(iced.Code).items() if not k.startswith("_") and isinstance(v, int)) + 1

_CODE_NAMES = {v: k for k, v in vars(iced.Code).items() if not k.startswith("_") and isinstance(v, int)}


def code_name(code: int) -> str:
    return _CODE_NAMES.get(code, str(code))


def build(b: Builder, code: int, *, imm=None, reg_val=None, mem_val=None, force_mem=None,
          absolute_mem=False, exclude_regs=()) -> iced.Instruction:
    """One instruction of ``code`` with drawn operands.

    ``imm``: strategy for IMM8 operands (e.g. shift counts); ``reg_val`` /
    ``mem_val``: value strategies for register / memory operands.
    """
    info = iced.OpCodeInfo(code)
    kinds = [info.op_kind(i) for i in range(info.op_count)]
    ops: list = [None] * len(kinds)
    # Memory operand first: it pins the registers its address depends on.
    for i, k in enumerate(kinds):
        if k in (OK.R8_OR_MEM, OK.R16_OR_MEM, OK.R32_OR_MEM, OK.MEM, OK.MEM_OFFS):
            is_mem = k in (OK.MEM, OK.MEM_OFFS) or (
                force_mem if force_mem is not None else b.draw(st.booleans(), label="mem?"))
            if is_mem:
                size = 0 if k == OK.MEM and info.mnemonic == M.LEA else \
                    8 if k == OK.MEM else iced.MemorySizeInfo(info.memory_size).size
                ops[i] = ("m", b.mem(size, val=mem_val, absolute=absolute_mem or k == OK.MEM_OFFS))
    for i, k in enumerate(kinds):
        if ops[i] is not None:
            continue
        if k in _KIND_SIZE:
            ops[i] = ("r", b.reg(_KIND_SIZE[k], val=reg_val, exclude=exclude_regs))
        elif k in _FIXED_REG:
            r = _FIXED_REG[k]
            v = reg_val if reg_val is not None else value(8 * SIZE_OF[r])
            if k == OK.CL and imm is not None:
                v = imm
            ops[i] = ("r", b.fixed_reg(r, v))
        elif k == OK.IMM8:
            ops[i] = ("u", b.draw(imm if imm is not None else value(8), label="imm8"))
        elif k == OK.IMM16:
            ops[i] = ("u", b.draw(value(16), label="imm16"))
        elif k == OK.IMM32:
            ops[i] = ("u", b.draw(value(32), label="imm32"))
        elif k in (OK.IMM8SEX16, OK.IMM8SEX32):
            ops[i] = ("i", b.draw(st.one_of(st.sampled_from((0, 1, -1, 127, -128, 2, -2)),
                                            st.integers(-128, 127)), label="simm8"))
        elif k == OK.IMM8_CONST_1:
            ops[i] = ("u", 1)
        else:
            raise NotImplementedError(f"{code_name(code)}: operand kind {k}")
    return make(code, ops)


def make(code: int, ops: list) -> iced.Instruction:
    sig = "".join("i" if t in ("u", "i") else t for t, _ in ops)
    args = [v for _, v in ops]
    signed = any(t == "i" for t, _ in ops)
    fn = {
        "": I.create, "r": I.create_reg, "m": I.create_mem,
        "rr": I.create_reg_reg, "rm": I.create_reg_mem, "mr": I.create_mem_reg,
        "ri": I.create_reg_i32 if signed else I.create_reg_u32,
        "mi": I.create_mem_i32 if signed else I.create_mem_u32,
        "i": I.create_i32 if signed else I.create_u32,
        "ii": I.create_u32_u32,
        "rri": I.create_reg_reg_i32 if signed else I.create_reg_reg_u32,
        "rmi": I.create_reg_mem_i32 if signed else I.create_reg_mem_u32,
        "mri": I.create_mem_reg_i32 if signed else I.create_mem_reg_u32,
        "rrr": I.create_reg_reg_reg, "mrr": I.create_mem_reg_reg,
    }[sig]
    return fn(code, *args)


def run(b: Builder, instrs, **kw):
    check(b.case(instrs, **kw))


def family_settings(n: int = 150):
    extra = {}
    if os.environ.get("TRAPVISOR_ORACLE_SHRINK", "1") == "0":
        extra["phases"] = [Phase.explicit, Phase.reuse, Phase.generate]
    return settings(max_examples=O.scaled_examples(n), deadline=None, derandomize=False, **extra,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def one_instruction_test(codes, n=150, stack=False, **build_kw):
    """A test running one instruction of a random Code from ``codes``."""
    @family_settings(n)
    @given(st.data())
    def test(data):
        code = data.draw(st.sampled_from(codes), label="code")
        b = Builder(data, stack=stack)
        run(b, [build(b, code, **build_kw)])
    return test


# =============================================================== families
MOV_CODES = codes_for(M.MOV, M.MOVZX, M.MOVSX, exclude={
    C.MOV_RM16_SREG, C.MOV_R32M16_SREG, C.MOV_SREG_RM16, C.MOV_SREG_R32M16, C.MOV_R32_CR,
    C.MOV_R32_DR, C.MOV_CR_R32, C.MOV_DR_R32, C.MOV_R32_TR, C.MOV_TR_R32})
test_mov = one_instruction_test(MOV_CODES)

test_lea = one_instruction_test(codes_for(M.LEA))

test_xchg = one_instruction_test(codes_for(M.XCHG))

test_xadd = one_instruction_test(codes_for(M.XADD))

test_bswap = one_instruction_test([C.BSWAP_R32])

ARITH_CODES = codes_for(M.ADD, M.ADC, M.SUB, M.SBB, M.CMP)
test_arith = one_instruction_test(ARITH_CODES, n=250)

# F6 /1 and F7 /1 are undocumented aliases of TEST that real CPUs execute;
# QEMU raises #UD for them (docs/undefined-flags.md, "Deliberate differences").
LOGIC_CODES = codes_for(M.AND, M.OR, M.XOR, M.TEST, exclude={C.TEST_RM8_IMM8_F6R1, C.TEST_RM16_IMM16_F7R1,
                                                             C.TEST_RM32_IMM32_F7R1})
test_logic = one_instruction_test(LOGIC_CODES, n=200)

UNARY_CODES = codes_for(M.INC, M.DEC, M.NEG, M.NOT)
test_unary = one_instruction_test(UNARY_CODES, n=200)

test_mul = one_instruction_test(codes_for(M.MUL, exclude=()) + [C.IMUL_RM8, C.IMUL_RM16, C.IMUL_RM32], n=200)

test_imul = one_instruction_test([C.IMUL_R16_RM16, C.IMUL_R32_RM32, C.IMUL_R16_RM16_IMM16,
                                  C.IMUL_R32_RM32_IMM32, C.IMUL_R16_RM16_IMM8, C.IMUL_R32_RM32_IMM8],
                                 n=200)

test_convert = one_instruction_test(codes_for(M.CBW, M.CWDE, M.CWD, M.CDQ), n=60)

SHIFT_CODES = codes_for(M.SHL, M.SAL, M.SHR, M.SAR)
test_shift = one_instruction_test(SHIFT_CODES, n=300, imm=shift_count())

ROTATE_CODES = codes_for(M.ROL, M.ROR, M.RCL, M.RCR)
test_rotate = one_instruction_test(ROTATE_CODES, n=300, imm=shift_count())

test_shld_shrd = one_instruction_test(codes_for(M.SHLD, M.SHRD), n=300, imm=shift_count())

test_bsf_bsr = one_instruction_test(codes_for(M.BSF, M.BSR), n=200)

test_flag_ops = one_instruction_test(codes_for(M.CLC, M.STC, M.CMC, M.CLD, M.STD, M.LAHF, M.SAHF), n=80)

test_nop = one_instruction_test(codes_for(M.NOP, M.PAUSE), n=40)

test_bcd = one_instruction_test(codes_for(M.DAA, M.DAS, M.AAA, M.AAS, M.AAM, M.AAD), n=200,
                                imm=st.one_of(st.sampled_from((0, 1, 10, 16, 0xFF)), st.integers(0, 255)))
