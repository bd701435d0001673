"""The x87 instructions: the register stack, loads and stores, arithmetic, comparisons,
control and state save/restore (SDM Vol. 2A/2B, the F* instructions; Vol. 1 chapter 8).

The arithmetic is ``fpu_x87.py``'s; this module decodes operands, moves values
between memory and the register stack, and applies the rules around every
instruction:

* CR0.EM = 1 or CR0.TS = 1: #NM before any x87 instruction; WAIT/FWAIT
  raises #NM only when TS and MP are both set (SDM Vol. 3A 2.5, Table 2-2;
  Vol. 1 8.7);
* a pending unmasked exception (status word ES) is reported before the next
  waiting x87 instruction and WAIT: #MF with CR0.NE = 1, FERR# (IRQ 13 on
  the PC) with NE = 0 (SDM Vol. 1 8.7, 8.7.1).  The non-waiting forms
  FNINIT, FNCLEX, FNSTSW, FNSTCW, FNSTENV, FNSAVE never report it;
* an exception unmasked in the control word that occurs before the result
  (IE, DE, ZE) leaves the destination and TOP unchanged (SDM Vol. 1 8.5,
  "pre-computation exceptions");
* every non-control instruction records its address (FCS:FIP) and, with a
  memory operand, the operand's (FDS:FDP) (SDM Vol. 1 8.1.8); the 11-bit
  opcode register is kept as 0;
* FNSTENV/FLDENV/FNSAVE/FRSTOR use the 32-bit protected-mode layout (SDM Vol.
  1 Figures 8-9, 8-10) or the 16-bit one with a 16-bit operand size.

Instructions this P6 core lacks raise #UD: FISTTP (SSE3) and FXSAVE/FXRSTOR
(CPUID.FXSR is clear in the model).
"""

from __future__ import annotations

import math

import iced_x86 as iced

from . import fpu_x87 as X
from .constants import CF, CR0_EM, CR0_MP, CR0_NE, CR0_TS, CS, MF, NM, PF, UD, ZF
from .cpu import CpuFault
from .flags import EAGER
from .operands import ea_fn, mem_segment, op_size
from .registry import END, NORMAL, handles

M = iced.Mnemonic
K = iced.OpKind
R = iced.Register
ST0 = R.ST0


class X87:
    """The FPU's registers (SDM Vol. 1 Figure 8-1), as FNINIT leaves them (Table 8-5)."""

    def __init__(self):
        self.regs = [0] * 8            # by physical register number
        self.init()

    def init(self) -> None:
        self.tags = [X.TAG_EMPTY] * 8
        self.top = 0
        self.cw = X.CW_DEFAULT
        self.sw = 0                    # without TOP (kept in ``top``)
        self.fip = self.fcs = self.fdp = self.fds = self.fop = 0

    # -- the stack ----------------------------------------------------------------------
    def phys(self, i: int) -> int:
        return (self.top + i) & 7

    def empty(self, i: int) -> bool:
        return self.tags[self.phys(i)] == X.TAG_EMPTY

    def get(self, i: int) -> int:
        return self.regs[self.phys(i)]

    def set(self, i: int, v: int) -> None:
        p = self.phys(i)
        self.regs[p] = v
        self.tags[p] = X.tag_of(v)

    def push(self, v: int) -> None:
        self.top = (self.top - 1) & 7
        self.set(0, v)

    def pop(self) -> None:
        self.tags[self.top] = X.TAG_EMPTY
        self.top = (self.top + 1) & 7

    # -- status and tag words ---------------------------------------------------------------
    def status_word(self) -> int:
        return (self.sw & ~(7 << X.TOP_SHIFT)) | (self.top << X.TOP_SHIFT)

    def set_status_word(self, v: int) -> None:
        self.top = (v >> X.TOP_SHIFT) & 7
        self.sw = v & ~(7 << X.TOP_SHIFT) & 0xFFFF

    def tag_word(self) -> int:
        return sum(t << (2 * i) for i, t in enumerate(self.tags))

    def set_tag_word(self, v: int) -> None:
        """FLDENV/FRSTOR: only "empty" is taken from memory; other tags follow the contents."""
        for i in range(8):
            self.tags[i] = X.TAG_EMPTY if (v >> (2 * i)) & 3 == 3 else X.tag_of(self.regs[i])

    @property
    def rc(self) -> int:
        return (self.cw >> X.RC_SHIFT) & 3


def fpu(cpu) -> X87:
    f = cpu.__dict__.get("fpu")
    if f is None:
        f = cpu.fpu = X87()
    return f


# -- the rules around every instruction ----------------------------------------------------
def check_available(cpu) -> None:
    if cpu.cr0 & (CR0_EM | CR0_TS):
        raise CpuFault(NM)


def report_pending(cpu, f: X87) -> None:
    """A pending unmasked exception: #MF (CR0.NE = 1) or FERR# (SDM Vol. 1 8.7)."""
    if f.sw & X.ES:
        if cpu.cr0 & CR0_NE:
            raise CpuFault(MF)
        ferr = getattr(cpu, "ferr", None)
        if ferr is not None:
            ferr()


def finish(f: X87, flags: X.Flags, *, c1_from_rounding: bool = True) -> bool:
    """Fold an operation's exceptions into the status word; True if the result may be
    written (no unmasked pre-computation exception)."""
    bits = flags.bits
    if c1_from_rounding:
        f.sw = (f.sw & ~X.C1) | (X.C1 if flags.c1 else 0)
    f.sw |= bits
    unmasked = bits & ~f.cw & X.EXCEPTIONS
    if unmasked:
        f.sw |= X.ES | X.BUSY
    return not unmasked & (X.IE | X.DE | X.ZE)


def stack_fault(f: X87, overflow: bool) -> bool:
    """Stack overflow or underflow (SDM Vol. 1 8.5.1.1): IE and SF, C1 = overflow; True when
    masked (the masked response goes on with the indefinite)."""
    f.sw = (f.sw & ~X.C1) | X.IE | X.SF | (X.C1 if overflow else 0)
    if not f.cw & X.IE:
        f.sw |= X.ES | X.BUSY
        return False
    return True


def record_pointers(cpu, f: X87, ins, ea=None) -> None:
    f.fip, f.fcs = ins.ip, cpu.sel[CS]
    if ea is not None:
        f.fdp, f.fds = ea, cpu.sel[mem_segment(ins)]


def x87(kind=NORMAL, *, waiting=True, control=False):
    """Decorate a compile function whose closure takes (cpu, f): the #NM/#MF checks first."""
    def deco(build):
        def compile_fn(cpu, ins):
            body = build(cpu, ins)

            def run():
                check_available(cpu)
                f = fpu(cpu)
                if waiting:
                    report_pending(cpu, f)
                if not control:
                    f.fip, f.fcs = ins.ip, cpu.sel[CS]
                body(f)
            return run, kind
        return compile_fn
    return deco


# -- memory operands -----------------------------------------------------------------------
def mem_ops(cpu, ins):
    ea, seg = ea_fn(cpu, ins), mem_segment(ins)

    def read(size):
        off = ea()
        v = 0
        for i in range(0, size - size % 4, 4):
            v |= cpu.rd32(seg, (off + i) & 0xFFFFFFFF) << (8 * i)
        if size % 4:
            v |= cpu.rd16(seg, (off + size - 2) & 0xFFFFFFFF) << (8 * (size - 2))
        return v

    def write(size, v):
        off = ea()
        for i in range(0, size - size % 4, 4):
            cpu.wr32(seg, (off + i) & 0xFFFFFFFF, (v >> (8 * i)) & 0xFFFFFFFF)
        if size % 4:
            cpu.wr16(seg, (off + size - 2) & 0xFFFFFFFF, (v >> (8 * (size - 2))) & 0xFFFF)
    return ea, seg, read, write


def _sti(ins, i: int) -> int:
    return ins.op_register(i) - ST0


FORMATS = {4: X.SINGLE, 8: X.DOUBLE}


def load_memory_value(f: X87, raw: int, size: int, kind: str, flags: X.Flags) -> int:
    if kind == "int":
        n = raw - (1 << (8 * size)) if raw >> (8 * size - 1) else raw
        return X.from_int(n, flags)
    if kind == "bcd":
        digits = 0
        for i in range(8, -1, -1):
            byte = (raw >> (8 * i)) & 0xFF
            digits = digits * 100 + (byte >> 4) * 10 + (byte & 0xF)
        return X.from_int(-digits if raw >> 79 else digits, flags) if digits else (X.SIGN80 if raw >> 79 else 0)
    if size == 10:
        return raw
    return X.from_binary(raw, FORMATS[size], flags)


# -- loads and stores -------------------------------------------------------------------------
@handles(M.FLD, M.FILD, M.FBLD)
def c_fld(cpu, ins):
    if ins.op0_kind == K.REGISTER:
        i = _sti(ins, 0)

        @x87()
        def build(cpu, ins):
            def fld_st(f):
                if f.empty(i):
                    if stack_fault(f, False):
                        f.push(X.INDEFINITE)
                    return
                v = f.get(i)
                if not f.empty(7):
                    if stack_fault(f, True):
                        f.push(X.INDEFINITE)
                    return
                f.sw &= ~X.C1
                f.push(v)
            return fld_st
        return build(cpu, ins)
    size = op_size(ins, 0)
    kind = "bcd" if ins.mnemonic == M.FBLD else ("int" if ins.mnemonic == M.FILD else "float")
    ea, seg, read, _ = mem_ops(cpu, ins)

    @x87()
    def build(cpu, ins):
        def fld_m(f):
            raw = read(size)
            record_pointers(cpu, f, ins, ea())
            flags = X.Flags()
            v = load_memory_value(f, raw, size, kind, flags)
            if not f.empty(7):
                if stack_fault(f, True):
                    f.push(X.INDEFINITE)
                return
            if finish(f, flags, c1_from_rounding=False):
                f.push(v)
        return fld_m
    return build(cpu, ins)


def _store_value(f: X87, v: int, size: int, kind: str, flags: X.Flags) -> int:
    if kind == "int":
        return X.to_int(v, 8 * size, f.rc, flags)
    if kind == "bcd":
        n = X.to_int(v, 64, f.rc, flags)
        if n >> 63:
            n -= 1 << 64
        if abs(n) >= 10 ** 18:
            flags.bits |= X.IE
            return 0xFFFF_C000_0000_0000_0000
        out = 0
        a = abs(n)
        for i in range(9):
            out |= ((a % 10) | ((a // 10 % 10) << 4)) << (8 * i)
            a //= 100
        return out | ((1 << 79) if n < 0 else 0)
    if size == 10:
        return v
    return X.to_binary(v, FORMATS[size], f.cw, flags)


@handles(M.FST, M.FSTP, M.FIST, M.FISTP, M.FBSTP)
def c_fst(cpu, ins):
    pop = ins.mnemonic in (M.FSTP, M.FISTP, M.FBSTP)
    if ins.op0_kind == K.REGISTER:
        i = _sti(ins, 0)

        @x87()
        def build(cpu, ins):
            def fst_st(f):
                if f.empty(0):
                    if not stack_fault(f, False):
                        return
                    f.set(i, X.INDEFINITE)
                else:
                    f.sw &= ~X.C1
                    f.set(i, f.get(0))
                if pop:
                    f.pop()
            return fst_st
        return build(cpu, ins)
    size = op_size(ins, 0)
    kind = "bcd" if ins.mnemonic == M.FBSTP else ("int" if ins.mnemonic in (M.FIST, M.FISTP) else "float")
    ea, seg, _, write = mem_ops(cpu, ins)

    @x87()
    def build(cpu, ins):
        def fst_m(f):
            record_pointers(cpu, f, ins, ea())
            flags = X.Flags()
            if f.empty(0):
                if not stack_fault(f, False):
                    return
                v = X.INDEFINITE
                flags.bits |= X.IE
            else:
                v = f.get(0)
            raw = _store_value(f, v, size, kind, flags)
            unmasked = flags.bits & ~f.cw & X.EXCEPTIONS
            if unmasked & (X.IE | X.DE):
                finish(f, flags)
                return
            write(size, raw)
            finish(f, flags)
            if pop:
                f.pop()
        return fst_m
    return build(cpu, ins)


@handles(M.FISTTP)
def c_fisttp(cpu, ins):
    def fisttp():
        raise CpuFault(UD)        # SSE3: not on this P6 core (CPUID.1:ECX.SSE3 = 0)
    return fisttp, NORMAL


@handles(M.FXSAVE, M.FXRSTOR)
def c_fxsave(cpu, ins):
    def fxsave():
        raise CpuFault(UD)        # CPUID.1:EDX.FXSR = 0 on this model (SDM Vol. 2A FXSAVE: #UD)
    return fxsave, NORMAL


CONSTANT_OF = {M.FLD1: "one", M.FLDZ: "zero", M.FLDPI: "pi", M.FLDL2E: "l2e", M.FLDL2T: "l2t",
               M.FLDLG2: "lg2", M.FLDLN2: "ln2"}


@handles(*CONSTANT_OF)
def c_fldconst(cpu, ins):
    name = CONSTANT_OF[ins.mnemonic]

    @x87()
    def build(cpu, ins):
        def fldc(f):
            if not f.empty(7):
                if stack_fault(f, True):
                    f.push(X.INDEFINITE)
                return
            f.sw &= ~X.C1
            f.push(X.constant(name, f.cw))
        return fldc
    return build(cpu, ins)


@handles(M.FXCH)
def c_fxch(cpu, ins):
    i = _sti(ins, 1) if ins.op_count == 2 else 1

    @x87()
    def build(cpu, ins):
        def fxch(f):
            if f.empty(0) or f.empty(i):
                if not stack_fault(f, False):
                    return
                a = X.INDEFINITE if f.empty(0) else f.get(0)
                b = X.INDEFINITE if f.empty(i) else f.get(i)
            else:
                a, b = f.get(0), f.get(i)
                f.sw &= ~X.C1
            f.set(0, b)
            f.set(i, a)
        return fxch
    return build(cpu, ins)


FCMOV = {M.FCMOVB: lambda e: e & CF, M.FCMOVE: lambda e: e & ZF, M.FCMOVBE: lambda e: e & (CF | ZF),
         M.FCMOVU: lambda e: e & PF, M.FCMOVNB: lambda e: not e & CF, M.FCMOVNE: lambda e: not e & ZF,
         M.FCMOVNBE: lambda e: not e & (CF | ZF), M.FCMOVNU: lambda e: not e & PF}


@handles(*FCMOV)
def c_fcmov(cpu, ins):
    cond = FCMOV[ins.mnemonic]
    i = _sti(ins, 1)

    @x87()
    def build(cpu, ins):
        def fcmov(f):
            if f.empty(0) or f.empty(i):
                if stack_fault(f, False):
                    f.set(0, X.INDEFINITE)
                return
            f.sw &= ~X.C1
            if cond(cpu.get_eflags()):
                f.set(0, f.get(i))
        return fcmov
    return build(cpu, ins)


# -- arithmetic -------------------------------------------------------------------------------
def _add(a, b, cw, fl):
    return X.add(a, b, cw, fl)


def _sub(a, b, cw, fl):
    return X.add(a, b, cw, fl, subtract=True)


ARITH = {
    M.FADD: _add, M.FADDP: _add, M.FIADD: _add,
    M.FMUL: X.multiply, M.FMULP: X.multiply, M.FIMUL: X.multiply,
    M.FSUB: _sub, M.FSUBP: _sub, M.FISUB: _sub,
    M.FSUBR: lambda a, b, cw, fl: _sub(b, a, cw, fl), M.FSUBRP: lambda a, b, cw, fl: _sub(b, a, cw, fl),
    M.FISUBR: lambda a, b, cw, fl: _sub(b, a, cw, fl),
    M.FDIV: X.divide, M.FDIVP: X.divide, M.FIDIV: X.divide,
    M.FDIVR: lambda a, b, cw, fl: X.divide(b, a, cw, fl), M.FDIVRP: lambda a, b, cw, fl: X.divide(b, a, cw, fl),
    M.FIDIVR: lambda a, b, cw, fl: X.divide(b, a, cw, fl),
}
POPPING = {M.FADDP, M.FMULP, M.FSUBP, M.FSUBRP, M.FDIVP, M.FDIVRP}
INTEGER_SOURCE = {M.FIADD, M.FIMUL, M.FISUB, M.FISUBR, M.FIDIV, M.FIDIVR}


@handles(*ARITH)
def c_farith(cpu, ins):
    op = ARITH[ins.mnemonic]
    pop = ins.mnemonic in POPPING
    if ins.op0_kind == K.MEMORY:
        size = op_size(ins, 0)
        kind = "int" if ins.mnemonic in INTEGER_SOURCE else "float"
        ea, seg, read, _ = mem_ops(cpu, ins)

        @x87()
        def build(cpu, ins):
            def farith_m(f):
                raw = read(size)
                record_pointers(cpu, f, ins, ea())
                if f.empty(0):
                    if stack_fault(f, False):
                        f.set(0, X.INDEFINITE)
                    return
                flags = X.Flags()
                b = load_memory_value(f, raw, size, kind, flags)
                r = op(f.get(0), b, f.cw, flags)
                if finish(f, flags):
                    f.set(0, r)
            return farith_m
        return build(cpu, ins)
    d, s = _sti(ins, 0), _sti(ins, 1)

    @x87()
    def build(cpu, ins):
        def farith(f):
            if f.empty(d) or f.empty(s):
                if stack_fault(f, False):
                    f.set(d, X.INDEFINITE)
                    if pop:
                        f.pop()
                return
            flags = X.Flags()
            r = op(f.get(d), f.get(s), f.cw, flags)
            if finish(f, flags):
                f.set(d, r)
                if pop:
                    f.pop()
        return farith
    return build(cpu, ins)


def _unary(fn):
    @x87()
    def build(cpu, ins):
        def unary(f):
            if f.empty(0):
                if stack_fault(f, False):
                    f.set(0, X.INDEFINITE)
                return
            flags = X.Flags()
            r = fn(f, f.get(0), flags)
            if finish(f, flags):
                f.set(0, r)
        return unary
    return build


def _chs(f, v, fl):
    return v ^ X.SIGN80


def _abs(f, v, fl):
    return v & ~X.SIGN80


UNARY = {
    M.FCHS: _chs, M.FABS: _abs,
    M.FSQRT: lambda f, v, fl: X.square_root(v, f.cw, fl),
    M.FRNDINT: lambda f, v, fl: X.round_to_integral(v, f.rc, fl) if not X.is_snan(v) else X.propagate_nan(v, None, fl),
    M.F2XM1: lambda f, v, fl: _nan_or(v, fl) or X.transcendental(lambda x: 2.0 ** x - 1.0, [v], f.cw, fl),
    M.FSIN: lambda f, v, fl: _trig(f, v, fl, math.sin),
    M.FCOS: lambda f, v, fl: _trig(f, v, fl, math.cos),
}


def _nan_or(v, fl):
    if X.is_nan(v):
        return X.propagate_nan(v, None, fl)
    if X.is_inf(v):
        return None
    return None


TRIG_LIMIT = 1 << 63       # |x| >= 2^63: out of range, C2 = 1 and ST0 unchanged (SDM FSIN)


def _trig(f, v, fl, fn):
    if X.is_nan(v):
        return X.propagate_nan(v, None, fl)
    if X.is_inf(v):
        fl.bits |= X.IE
        return X.INDEFINITE
    if X.is_zero(v):
        return v
    f.sw &= ~X.C2
    if abs(X.to_fraction(v)) >= TRIG_LIMIT:
        f.sw |= X.C2
        return v
    return X.transcendental(fn, [v], f.cw, fl)


@handles(*UNARY)
def c_funary(cpu, ins):
    return _unary(UNARY[ins.mnemonic])(cpu, ins)


def _two_operand(fn, *, pop: bool, keep_c1: bool = False):
    """ST1 = fn(ST0, ST1), then pop (FPATAN, FYL2X, FYL2XP1), or ST0 = fn(ST0, ST1) (FSCALE, FPREM)."""
    @x87()
    def build(cpu, ins):
        def two(f):
            if f.empty(0) or f.empty(1):
                if stack_fault(f, False):
                    f.set(1 if pop else 0, X.INDEFINITE)
                    if pop:
                        f.pop()
                return
            flags = X.Flags()
            r = fn(f, f.get(0), f.get(1), flags)
            if finish(f, flags, c1_from_rounding=not keep_c1):
                if pop:
                    f.set(1, r)
                    f.pop()
                else:
                    f.set(0, r)
        return two
    return build


def _fprem(ieee):
    def fn(f, a, b, flags):
        r, cc = X.remainder(a, b, f.cw, flags, ieee)
        f.sw = (f.sw & ~X.CC) | cc
        return r
    return fn


def _log_op(fn):
    def op(f, x, y, flags):
        special = X._operand_checks([x, y], flags)
        if special is not None:
            return special
        return X.transcendental(fn, [x, y], f.cw, flags)
    return op


TWO = {
    M.FSCALE: (lambda f, a, b, fl: X.scale(a, b, f.cw, fl), False),
    M.FPREM: (_fprem(False), False),
    M.FPREM1: (_fprem(True), False),
    M.FPATAN: (_log_op(lambda x, y: math.atan2(y, x)), True),
    M.FYL2X: (_log_op(lambda x, y: y * math.log2(x)), True),
    M.FYL2XP1: (_log_op(lambda x, y: y * math.log1p(x) / math.log(2)), True),
}


@handles(*TWO)
def c_ftwo(cpu, ins):
    fn, pop = TWO[ins.mnemonic]
    return _two_operand(fn, pop=pop, keep_c1=ins.mnemonic in (M.FPREM, M.FPREM1))(cpu, ins)


@handles(M.FPTAN, M.FSINCOS, M.FXTRACT)
def c_fpush_two(cpu, ins):
    m = ins.mnemonic

    @x87()
    def build(cpu, ins):
        def push_two(f):
            if f.empty(0):
                if stack_fault(f, False):
                    f.set(0, X.INDEFINITE)
                    f.push(X.INDEFINITE)
                return
            if not f.empty(7):
                if stack_fault(f, True):
                    f.set(0, X.INDEFINITE)
                    f.push(X.INDEFINITE)
                return
            v = f.get(0)
            flags = X.Flags()
            f.sw &= ~X.C2
            if m == M.FXTRACT:
                if X.is_nan(v):
                    a = b = X.propagate_nan(v, None, flags)
                else:
                    a, b = X.extract(v, flags)
            elif X.is_nan(v):
                a = b = X.propagate_nan(v, None, flags)
            elif X.is_inf(v):
                flags.bits |= X.IE
                a = b = X.INDEFINITE
            elif abs(X.to_fraction(v)) >= TRIG_LIMIT:
                f.sw |= X.C2
                return
            elif m == M.FPTAN:
                a, b = X.transcendental(math.tan, [v], f.cw, flags) if not X.is_zero(v) else v, X.CONSTANTS["one"]
            else:
                a = X.transcendental(math.sin, [v], f.cw, flags) if not X.is_zero(v) else v
                b = X.transcendental(math.cos, [v], f.cw, flags) if not X.is_zero(v) else X.CONSTANTS["one"]
            if finish(f, flags):
                f.set(0, a)
                f.push(b)
        return push_two
    return build(cpu, ins)


# -- comparisons ------------------------------------------------------------------------------
COMPARE = {M.FCOM: (1, False), M.FCOMP: (1, False), M.FCOMPP: (2, False), M.FUCOM: (1, True),
           M.FUCOMP: (1, True), M.FUCOMPP: (2, True), M.FICOM: (1, False), M.FICOMP: (2 - 1, False),
           M.FTST: (0, False)}
POPS = {M.FCOM: 0, M.FCOMP: 1, M.FCOMPP: 2, M.FUCOM: 0, M.FUCOMP: 1, M.FUCOMPP: 2, M.FICOM: 0,
        M.FICOMP: 1, M.FTST: 0}


@handles(*COMPARE)
def c_fcom(cpu, ins):
    m = ins.mnemonic
    unordered_ok = COMPARE[m][1]
    pops = POPS[m]
    mem = ins.op_count >= 1 and ins.op0_kind == K.MEMORY
    if mem:
        size = op_size(ins, 0)
        kind = "int" if m in (M.FICOM, M.FICOMP) else "float"
        ea, seg, read, _ = mem_ops(cpu, ins)
    other = 0 if m == M.FTST else (_sti(ins, 1) if ins.op_count == 2 else 1)

    @x87()
    def build(cpu, ins):
        def fcom(f):
            flags = X.Flags()
            if mem:
                raw = read(size)
                record_pointers(cpu, f, ins, ea())
            if f.empty(0) or (not mem and m != M.FTST and f.empty(other)):
                if stack_fault(f, False):
                    f.sw = (f.sw & ~X.CC) | X.C3 | X.C2 | X.C0
                    for _ in range(pops):
                        f.pop()
                return
            if mem:
                b = load_memory_value(f, raw, size, kind, flags)
            elif m == M.FTST:
                b = 0
            else:
                b = f.get(other)
            cc = X.compare(f.get(0), b, flags, quiet_nan_ok=unordered_ok)
            if finish(f, flags):
                f.sw = (f.sw & ~X.CC) | cc
                for _ in range(pops):
                    f.pop()
            f.sw &= ~X.C1
        return fcom
    return build(cpu, ins)


@handles(M.FCOMI, M.FCOMIP, M.FUCOMI, M.FUCOMIP)
def c_fcomi(cpu, ins):
    m = ins.mnemonic
    pop = m in (M.FCOMIP, M.FUCOMIP)
    unordered_ok = m in (M.FUCOMI, M.FUCOMIP)
    i = _sti(ins, 1)

    @x87()
    def build(cpu, ins):
        def fcomi(f):
            flags = X.Flags()
            if f.empty(0) or f.empty(i):
                if stack_fault(f, False):
                    _set_zpc(cpu, ZF | PF | CF)
                    if pop:
                        f.pop()
                return
            cc = X.compare(f.get(0), f.get(i), flags, quiet_nan_ok=unordered_ok)
            if finish(f, flags):
                _set_zpc(cpu, (ZF if cc & X.C3 else 0) | (PF if cc & X.C2 else 0) | (CF if cc & X.C0 else 0))
                if pop:
                    f.pop()
            f.sw &= ~X.C1
        return fcomi
    return build(cpu, ins)


def _set_zpc(cpu, bits: int) -> None:
    """FCOMI: ZF, PF, CF from the comparison; OF, SF and AF cleared (SDM Vol. 2A FCOMI)."""
    cpu.lf = (EAGER, bits, 0, 0, 0)


@handles(M.FXAM)
def c_fxam(cpu, ins):
    @x87()
    def build(cpu, ins):
        def fxam(f):
            f.sw = (f.sw & ~X.CC) | X.examine(f.get(0), f.empty(0))
        return fxam
    return build(cpu, ins)


# -- stack control ---------------------------------------------------------------------------
@handles(M.FINCSTP, M.FDECSTP, M.FFREE, M.FFREEP, M.FNOP)
def c_fstack(cpu, ins):
    m = ins.mnemonic
    i = _sti(ins, 0) if m in (M.FFREE, M.FFREEP) else 0

    @x87()
    def build(cpu, ins):
        def fstack(f):
            if m == M.FINCSTP:
                f.top = (f.top + 1) & 7
                f.sw &= ~X.C1
            elif m == M.FDECSTP:
                f.top = (f.top - 1) & 7
                f.sw &= ~X.C1
            elif m in (M.FFREE, M.FFREEP):
                f.tags[f.phys(i)] = X.TAG_EMPTY
                if m == M.FFREEP:
                    f.pop()
        return fstack
    return build(cpu, ins)


# -- control ----------------------------------------------------------------------------------
@handles(M.WAIT)
def c_wait(cpu, ins):
    def wait():
        if cpu.cr0 & CR0_TS and cpu.cr0 & CR0_MP:
            raise CpuFault(NM)
        report_pending(cpu, fpu(cpu))
    return wait, NORMAL


@handles(M.FNINIT, M.FNCLEX)
def c_fninit(cpu, ins):
    init = ins.mnemonic == M.FNINIT

    @x87(waiting=False, control=True)
    def build(cpu, ins):
        def fninit(f):
            if init:
                f.init()
            else:
                f.sw &= ~(X.EXCEPTIONS | X.SF | X.ES | X.BUSY)
        return fninit
    return build(cpu, ins)


@handles(M.FNSTSW)
def c_fnstsw(cpu, ins):
    to_ax = ins.op0_kind == K.REGISTER
    if not to_ax:
        ea, seg, _, write = mem_ops(cpu, ins)
    regs = cpu.regs

    @x87(waiting=False, control=True)
    def build(cpu, ins):
        def fnstsw(f):
            sw = f.status_word()
            if to_ax:
                regs[0] = (regs[0] & 0xFFFF0000) | sw
            else:
                write(2, sw)
        return fnstsw
    return build(cpu, ins)


@handles(M.FNSTCW, M.FLDCW)
def c_fcw(cpu, ins):
    store = ins.mnemonic == M.FNSTCW
    ea, seg, read, write = mem_ops(cpu, ins)

    @x87(waiting=not store, control=True)
    def build(cpu, ins):
        def fcw(f):
            if store:
                write(2, f.cw)
                return
            f.cw = read(2) | 0x40                  # bit 6 reads as 1 (SDM Vol. 1 Figure 8-6)
            # Unmasking an already flagged exception makes it pending (SDM Vol. 1 8.7).
            if f.sw & ~f.cw & X.EXCEPTIONS:
                f.sw |= X.ES | X.BUSY
            else:
                f.sw &= ~(X.ES | X.BUSY)
        return fcw
    return build(cpu, ins)


def _env_fields(f: X87) -> list[int]:
    return [f.cw, f.status_word(), f.tag_word(), f.fip, f.fcs | (f.fop << 16), f.fdp, f.fds]


def _store_env(f: X87, write_at, wide: bool) -> int:
    """FNSTENV's image: seven 32-bit fields (28 bytes), or seven 16-bit ones (14 bytes)."""
    step = 4 if wide else 2
    for n, v in enumerate(_env_fields(f)):
        if wide and n in (0, 1, 2, 6):
            v &= 0xFFFF
            v |= 0xFFFF0000                        # reserved halves read as ones on P6 cores
        write_at(n * step, step, v & ((1 << (8 * step)) - 1))
    return 7 * step


def _load_env(f: X87, read_at, wide: bool) -> int:
    step = 4 if wide else 2
    vals = [read_at(n * step, step) for n in range(7)]
    f.cw = (vals[0] & 0xFFFF) | 0x40
    f.set_status_word(vals[1] & 0xFFFF)
    f.set_tag_word(vals[2] & 0xFFFF)
    f.fip, f.fcs = vals[3], vals[4] & 0xFFFF
    f.fop = (vals[4] >> 16) & 0x7FF if wide else 0
    f.fdp, f.fds = vals[5], vals[6] & 0xFFFF
    if f.sw & ~f.cw & X.EXCEPTIONS:
        f.sw |= X.ES | X.BUSY
    else:
        f.sw &= ~(X.ES | X.BUSY)
    return 7 * step


@handles(M.FNSTENV, M.FLDENV, M.FNSAVE, M.FRSTOR)
def c_fenv(cpu, ins):
    m = ins.mnemonic
    size = op_size(ins, 0)
    wide = size in (28, 108)
    ea, seg = ea_fn(cpu, ins), mem_segment(ins)

    def at(base):
        def read_at(off, n):
            a = (base + off) & 0xFFFFFFFF
            return cpu.rd32(seg, a) if n == 4 else (cpu.rd16(seg, a) if n == 2 else 0)

        def write_at(off, n, v):
            a = (base + off) & 0xFFFFFFFF
            if n == 4:
                cpu.wr32(seg, a, v)
            else:
                cpu.wr16(seg, a, v)
        return read_at, write_at

    @x87(kind=END if m in (M.FLDENV, M.FRSTOR) else NORMAL,
         waiting=m in (M.FLDENV, M.FRSTOR), control=True)
    def build(cpu, ins):
        def fenv(f):
            base = ea()
            read_at, write_at = at(base)
            if m in (M.FNSTENV, M.FNSAVE):
                n = _store_env(f, write_at, wide)
                if m == M.FNSAVE:
                    for i in range(8):
                        v = f.get(i)
                        write_at(n + 10 * i, 4, v & 0xFFFFFFFF)
                        write_at(n + 10 * i + 4, 4, (v >> 32) & 0xFFFFFFFF)
                        write_at(n + 10 * i + 8, 2, v >> 64)
                    f.init()
                else:
                    f.cw |= X.EXCEPTIONS           # FNSTENV masks all exceptions
            else:
                n = 7 * (4 if wide else 2)
                regs = []
                if m == M.FRSTOR:          # all reads before any change (a fault leaves the FPU as it was)
                    for i in range(8):
                        lo = read_at(n + 10 * i, 4) | (read_at(n + 10 * i + 4, 4) << 32)
                        regs.append(lo | (read_at(n + 10 * i + 8, 2) << 64))
                    top = (read_at(4 if wide else 2, 2) >> X.TOP_SHIFT) & 7
                    for i, v in enumerate(regs):    # ST(i) in stack order from the new TOP
                        f.regs[(top + i) & 7] = v
                _load_env(f, read_at, wide)     # the tags follow the registers' contents
        return fenv
    return build(cpu, ins)
