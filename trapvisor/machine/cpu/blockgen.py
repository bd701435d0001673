"""Block-translation tier: one generated Python function per hot basic block.

The reference path (``translate.py``) runs a block as a tuple of per-
instruction closures; every instruction then pays a Python call, closure-cell
loads for its operands, list subscripts for each register and a tuple build
for its flags.  This tier compiles a block that has run ``HOT`` times into a
single function by generating Python source and ``exec``-ing it once
(``CPU.execute`` triggers it and runs the function instead of the closures):

* registers live in local variables for the whole block (loaded with one
  unpack at entry, stored back at exit, before a fallback call and on a
  fault);
* the common instruction forms gcc emits are inlined as straight-line Python
  (``FORMS`` below: MOV, MOVZX/MOVSX, LEA, the ALU family, INC/DEC/NEG/NOT,
  shifts, IMUL/MUL, CDQ/CWDE, XCHG, SETcc, CMOVcc, PUSH/POP/LEAVE, JMP, Jcc,
  CALL, RET); every other instruction calls its reference closure from the
  generated code (a *fallback*), so correctness falls back to the reference;
* memory operands inline the flat-segment / TLB / RAM fast path; anything
  else (TLB miss, unaligned access, MMIO, a store into a code page) calls the
  CPU's own ``rd*``/``wr*``;
* flags are lazy *within* the block: a flag-producing instruction keeps its
  operands and result in fresh locals (``a3``, ``r3``...); the ``cpu.lf``
  tuple is built only where something can observe it: before a fallback
  call, at block exit, and in the fault handler.  A flag consumer (Jcc,
  SETcc, CMOVcc, ADC, SBB, INC/DEC's CF) tests the producer's locals
  directly (``a7 != b7`` for CMP+JNE).  Producers nothing observes keep no
  locals at all (dead-flag elimination, see ``generate``);
* a block whose last instruction jumps back to its own start (most inner
  loops) loops inside the function while the budget lasts and nothing
  external can have happened (no slow-path access, no code invalidation):
  exactly the iterations the dispatch loop would have run;
* a block without fallbacks returns its successor block when it is already
  translated (chaining): the dispatch loop runs it without ``fetch_block``
  and without the between-block checks, which such a block cannot affect.

Exactness (QEMU's rule: the state is exact at every point where an
exception can be raised).  Each instruction performs every access that can
fault before it assigns a register local (stores before register updates,
like the closures), and sets ``idx`` (its index in the block) before its
first fault point.  Nothing is dropped that a fault point could see: a
producer's flags are only left unmaterialised if a later producer
overwrites all six flags with no fault point, fallback or consumer in
between.  The ``except`` clause stores the register locals back, rebuilds
``cpu.lf`` for the producer live before ``idx``, sets ``cpu.icount`` to the
count at the start of the current iteration and ``cpu.fault_index = idx``;
``CPU.execute`` then retires ``idx`` instructions and points EIP at the
faulting one, leaving the count the closure path leaves (it counts each
instruction as it retires).  Time is exact too: a slow-path access and a
fallback closure see ``cpu.icount`` = the instructions retired before them,
since MMIO, IN/OUT and RDTSC read the clock.  Self-modifying code behaves
as in the closure path: a store into a code page drops its blocks, the
running block finishes as decoded, the next execution sees the new code.

Context.  The generated code is specialised for the CPU context seen when
it was generated: paging on or off, which segments have base 0 and which
limit (``cpu.rlim``/``wlim``: a flat 4 GiB segment needs no check, a
truncated one -- a monitor's, see vmm/shadow_descriptors.py -- gets an
inline ``offset <= limit`` test; segments with a base go through
``rd*``/``wr*``), a 32-bit stack, a base-0 32-bit code segment and its limit
(``cpu.clim``: with a truncated CS every run-time jump target is checked at
the jump, static ones beyond it are left to the closures; no function at
all for a CS with a base).  Those change only through instructions that end
a block (segment loads, CR writes, far transfers, IRET, exceptions), so the
function checks them once at entry and returns False when they differ; the
dispatch loop then runs the closures and regenerates the block for the new
context.

The hot code (generated source, memory fast paths, the dispatch loop) is
dense on purpose: every extra attribute load or call in it is paid once per
guest instruction.  ``STRICT`` keeps each function's source as
``blk.gen.source`` for reading.
"""

from __future__ import annotations

import os
import sys
import weakref

import iced_x86 as iced

from . import flags as F
from .constants import CF, CS, DE, DF, GP, OF, SF, SS, ZF
from .cpu import FLAT, CpuFault
from .flags import CONDITIONS, PARITY, get_cf
from .audit import is_sensitive_form
from .operands import GPR, K, MASK, SEGREG, SIGN, Unsupported, imm_value, op_size

# A block is compiled after it has run this many times through the closures
# (cold code does not pay for exec).
HOT = int(os.environ.get("TRAPVISOR_BLOCKGEN_HOT", "8"))
# Tests set this: a generator error raises instead of leaving the block to the closures,
# and each function keeps its source (``gen.source``) for the assertion messages.
STRICT = os.environ.get("TRAPVISOR_BLOCKGEN_STRICT", "") == "1"
# Drop the operands of flag producers nothing observes (see generate); off only for A/B runs.
DEAD_FLAGS = True
# The largest block the generator accepts (translate.MAX_BLOCK bounds it anyway).
MAX_GEN = 128

Mn = iced.Mnemonic
REG = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
M32 = 0xFFFFFFFF
BIG = 1 << 40           # "no TLB entry": compares above any RAM size

_LITTLE = sys.byteorder == "little"


# ---------------------------------------------------------------- flag helpers
# Exact copies of the reference semantics in ops_integer.py (including the
# choices for flags Intel leaves undefined); called only when a tuple is
# materialised, never on the fast path.

def _szp(r, sign):
    f = PARITY[r & 0xFF]
    if r == 0:
        f |= ZF
    if r & sign:
        f |= SF
    return f


def shl_flags(a, c, r, sign, bits):
    cf = (a >> (bits - c)) & 1 if c <= bits else 0
    of = ((r & sign) != 0) != bool(cf)
    return _szp(r, sign) | (CF if cf else 0) | (OF if of else 0)


def shr_flags(a, c, r, sign):
    cf = (a >> (c - 1)) & 1
    f = _szp(r, sign) | (CF if cf else 0) | (OF if a & sign and c == 1 else 0)
    if c != 1:
        f = (f & ~OF) | (OF if ((r << 1) ^ r) & sign else 0)
    return f


def sar_flags(sa, c, r, sign):
    cf = (sa >> (c - 1)) & 1
    return _szp(r, sign) | (CF if cf else 0)


def rot_flags(old, r, sign, left):
    """ROL/ROR: CF and OF from the result, the other four flags as they were."""
    if left:
        cf = r & 1
        of = ((r & sign) != 0) != bool(cf)
    else:
        cf = 1 if r & sign else 0
        of = ((r & sign) != 0) != ((r & (sign >> 1)) != 0)
    return (F.arith_flags(old) & ~(CF | OF)) | (CF if cf else 0) | (OF if of else 0)


def div32(hi, lo, d):
    """DIV r/m32: (quotient, remainder) of EDX:EAX / d, or #DE."""
    if d == 0:
        raise CpuFault(DE)
    q, rem = divmod((hi << 32) | lo, d)
    if q > 0xFFFFFFFF:
        raise CpuFault(DE)
    return q, rem


def idiv32(hi, lo, d):
    """IDIV r/m32: signed, quotient truncated toward zero, or #DE."""
    if d == 0:
        raise CpuFault(DE)
    d = (d ^ 0x80000000) - 0x80000000
    n = (hi << 32) | lo
    n = (n ^ (1 << 63)) - (1 << 63)
    q = abs(n) // abs(d)
    if (n < 0) != (d < 0):
        q = -q
    rem = n - q * d
    if q >= 0x80000000 or q < -0x80000000:
        raise CpuFault(DE)
    return q & 0xFFFFFFFF, rem & 0xFFFFFFFF


def mul_flags(overflow, r_low, sign):
    f = (CF | OF) if overflow else 0
    f |= PARITY[r_low & 0xFF]
    if r_low == 0:
        f |= ZF
    if r_low & sign:
        f |= SF
    return f


# --------------------------------------------------------------- producers
class Prod:
    """A flag producer inside the block, described by expressions over its locals.

    kind: 'in' (flags live into the block: local ``lf``), 'fb' (after a
    fallback call: local ``lf`` reloaded from cpu.lf), 'add', 'adc', 'sub',
    'sbb', 'logic', 'inc', 'dec', 'eager' (``e`` is an expression for the six
    flag bits), 'cond' (a shift by CL: ``n`` is the count local; when it is 0
    the flags of ``prev`` stay).
    """

    def __init__(self, g, kind, a="0", b="0", r="0", c="0", s=0x80000000, e=None, n=None,
                 inner=None, prev=None):
        self.g, self.kind, self.a, self.b, self.r, self.c, self.s = g, kind, a, b, r, c, s
        self.e, self.n, self.inner, self.prev = e, n, inner, prev
        self.i = g.i                 # index of the producing instruction
        self.used = False            # something observes these flags (see generate)

    def _use(self) -> None:
        if self.i in self.g.dead and self.kind not in ("in", "fb", "cpu"):
            raise AssertionError(f"flags of instruction {self.i} were found dead but are read")
        self.used = True

    def mat(self) -> str:
        """Expression building the lazy-flags tuple."""
        self._use()
        k = self.kind
        if k == "in":
            if self.g.handler_livein:
                return self.g.handler_livein
            self.g.need_lf = True
            return "lf"
        if k == "fb":
            return "lf"
        if k == "cpu":
            return "cpu.lf"
        if k == "add":
            return f"({F.ADD}, {self.a}, {self.b}, {self.r}, {self.s})"
        if k == "adc":
            return f"({F.ADD} + {self.c}, {self.a}, {self.b}, {self.r}, {self.s})"
        if k == "sub":
            return f"({F.SUB}, {self.a}, {self.b}, {self.r}, {self.s})"
        if k == "sbb":
            return f"({F.SUB} + {self.c}, {self.a}, {self.b}, {self.r}, {self.s})"
        if k == "logic":
            return f"({F.LOGIC}, 0, 0, {self.r}, {self.s})"
        if k == "inc":
            return f"({F.INC}, {self.a}, {self.c}, {self.r}, {self.s})"
        if k == "dec":
            return f"({F.DEC}, {self.a}, {self.c}, {self.r}, {self.s})"
        if k == "eager":
            return f"({F.EAGER}, {self.e}, 0, 0, 0)"
        if k == "rot":      # ROL/ROR: e is filled in with the previous producer's tuple
            return f"({F.EAGER}, ROTF({self.prev.mat()}, {self.r}, {self.s}, {self.e}), 0, 0, 0)"
        if k == "cond":
            return f"({self.inner.mat()} if {self.n} else {self.prev.mat()})"
        raise AssertionError(k)

    def cf(self) -> str:
        """Expression for CF (0/1 or bool)."""
        self._use()
        k, a, b, r, c = self.kind, self.a, self.b, self.r, self.c
        if k == "in":
            self.g.need_cfin = True
            return "cf_in"
        if k == "fb":
            return "GCF(lf)"
        if k == "add":
            return f"({r} < {a})"
        if k == "adc":
            return f"(({r} <= {a}) if {c} else ({r} < {a}))"
        if k == "sub":
            return f"({a} < {b})"
        if k == "sbb":
            return f"(({a} <= {b}) if {c} else ({a} < {b}))"
        if k == "logic":
            return "0"
        if k in ("inc", "dec"):
            return c
        if k == "eager":
            return f"({self.e} & 1)"
        if k == "rot":
            return f"({self.r} & 1)" if self.e == "True" else f"(1 if {self.r} & {self.s} else 0)"
        if k == "cond":
            return f"({self.inner.cf()} if {self.n} else {self.prev.cf()})"
        raise AssertionError(k)

    def cond(self, cc: int) -> str:
        """Boolean expression for condition ``cc`` (0..15: O NO B AE E NE BE A S NS P NP L GE LE G)."""
        self._use()
        k, a, b, r, s = self.kind, self.a, self.b, self.r, self.s
        if k == "sub":
            t = {2: f"{a} < {b}", 3: f"{a} >= {b}", 4: f"{a} == {b}", 5: f"{a} != {b}",
                 6: f"{a} <= {b}", 7: f"{a} > {b}", 8: f"{r} & {s}", 9: f"not {r} & {s}",
                 12: f"({a} ^ {s}) < ({b} ^ {s})", 13: f"({a} ^ {s}) >= ({b} ^ {s})",
                 14: f"({a} ^ {s}) <= ({b} ^ {s})", 15: f"({a} ^ {s}) > ({b} ^ {s})"}.get(cc)
        elif k == "logic":
            t = {0: "False", 1: "True", 2: "False", 3: "True", 4: f"{r} == 0", 5: f"{r} != 0",
                 6: f"{r} == 0", 7: f"{r} != 0", 8: f"{r} & {s}", 9: f"not {r} & {s}",
                 12: f"{r} & {s}", 13: f"not {r} & {s}", 14: f"({r} == 0 or {r} & {s})",
                 15: f"not ({r} == 0 or {r} & {s})"}.get(cc)
        elif k in ("add", "adc", "inc", "dec"):
            t = {4: f"{r} == 0", 5: f"{r} != 0", 8: f"{r} & {s}", 9: f"not {r} & {s}"}.get(cc)
            if t is None and cc in (2, 3) and k != "adc":
                t = self.cf() if cc == 2 else f"not {self.cf()}"
        elif k == "rot" and cc in (2, 3):
            t = self.cf() if cc == 2 else f"not {self.cf()}"
        elif k == "eager" and r != "0" and cc in (4, 5, 8, 9):
            t = {4: f"{r} == 0", 5: f"{r} != 0", 8: f"{r} & {s}", 9: f"not {r} & {s}"}[cc]
        elif k == "eager":
            t = {0: f"{self.e} & {OF}", 1: f"not {self.e} & {OF}", 2: f"{self.e} & {CF}",
                 3: f"not {self.e} & {CF}", 4: f"{self.e} & {ZF}", 5: f"not {self.e} & {ZF}",
                 6: f"{self.e} & {CF | ZF}", 7: f"not {self.e} & {CF | ZF}",
                 8: f"{self.e} & {SF}", 9: f"not {self.e} & {SF}"}.get(cc)
        else:
            t = None
        if t is None:
            return f"C[{cc}]({self.mat()})"
        return f"({t})"


# ---------------------------------------------------------------- generator
class _Gen:
    def __init__(self, cpu, blk, dead=frozenset()):
        self.cpu, self.blk = cpu, blk
        self.dead = dead                   # instructions whose flags nothing observes
        self.prods: list[Prod] = []
        self.i = -1                        # index of the instruction being generated
        self.body: list[str] = []
        self.ind = 0
        self.paging = bool(cpu.paging)
        self.rs = cpu.ram_size
        # Base-0 segments (flat, or truncated by a monitor) when the block is generated
        # get the inline fast path (and a guard); a truncated one adds an offset check
        # against its limit.  The others go through the CPU's rd*/wr*, right in any context.
        self.rlim = list(cpu.rlim)
        self.wlim = list(cpu.wlim)
        # The code segment's limit: jump targets beyond it fault at the jump (unless flat).
        self.clim = cpu.clim
        self.ss32 = bool(cpu.ss32)
        self.rsegs: set[int] = set()   # segments read through the inline fast path
        self.wsegs: set[int] = set()   # segments written through it
        self.uses_stack = False
        self.written: set[int] = set()     # register indices assigned somewhere in the block
        self.dirty: set[int] = set()       # assigned since the last store-back to cpu.regs
        self.live = Prod(self, "in")       # the producer whose flags are live now (index -1)
        self.need_lf = False               # the body reads the live-in tuple
        self.need_cfin = False             # the body reads the live-in CF
        self.fault_points: list[tuple[int, Prod]] = []
        self.has_fallback = False
        self.fallback_idx: list[int] = []  # instructions run by their closure
        self.env: dict = {}
        self.loop = False                  # the block jumps back to its own start
        self.handler_livein = None         # see _handler_mat

    # -- emission helpers
    def L(self, line: str) -> None:
        self.body.append("    " * self.ind + line)

    def const(self, name: str, obj) -> str:
        self.env[name] = obj
        return name

    def fault_point(self) -> None:
        """The current instruction may fault from here on."""
        if not self.fault_points or self.fault_points[-1][0] != self.i:
            self.L(f"idx = {self.i}")
            self.fault_points.append((self.i, self.live))

    def slow(self) -> str:
        """Prefix of a slow-path call: publish the exact instruction count -- the
        instructions retired before this one, as the closures do: MMIO may read the
        clock -- and stop a self-loop after this iteration (the access may have had
        side effects)."""
        return f"cpu.icount = ic + {self.i}; slow = 1; "

    # -- registers
    def rreg(self, reg) -> str:
        idx, size, shift = GPR[reg]
        n = REG[idx]
        if size == 4:
            return n
        if size == 2:
            return f"({n} & 0xFFFF)"
        if shift:
            return f"(({n} >> 8) & 0xFF)"
        return f"({n} & 0xFF)"

    def wreg(self, reg, v: str) -> None:
        idx, size, shift = GPR[reg]
        n = REG[idx]
        if size == 4:
            if v != n:
                self.L(f"{n} = {v}")
        elif size == 2:
            self.L(f"{n} = ({n} & 0xFFFF0000) | ({v})")
        elif shift:
            self.L(f"{n} = ({n} & 0xFFFF00FF) | (({v}) << 8)")
        else:
            self.L(f"{n} = ({n} & 0xFFFFFF00) | ({v})")
        self.written.add(idx)
        self.dirty.add(idx)

    def wreg32(self, idx: int, v: str) -> None:
        self.L(f"{REG[idx]} = {v}")
        self.written.add(idx)
        self.dirty.add(idx)

    # -- memory
    def ea(self, ins) -> str:
        """Effective-address expression (32-bit addressing only)."""
        base, index = ins.memory_base, ins.memory_index
        if ins.memory_displ_size == 2:
            raise Unsupported("16-bit addressing")
        terms = []
        if base != iced.Register.NONE:
            b = GPR.get(base)
            if b is None or b[1] != 4:
                raise Unsupported("address base")
            terms.append(REG[b[0]])
        if index != iced.Register.NONE:
            x = GPR.get(index)
            if x is None or x[1] != 4:
                raise Unsupported("address index")
            sc = ins.memory_index_scale
            terms.append(REG[x[0]] if sc == 1 else f"{REG[x[0]]} * {sc}")
        disp = ins.memory_displacement & M32
        if not terms:
            return hex(disp)
        if disp:
            terms.append(hex(disp))
        if len(terms) == 1 and " " not in terms[0]:
            return terms[0]
        return f"({' + '.join(terms)}) & 0xFFFFFFFF"

    def addr(self, ins, name: str = "A") -> str:
        """Evaluate the EA into a local (or return it when it is a plain name/constant)."""
        e = self.ea(ins)
        if e.isidentifier() or e.startswith("0x"):
            return e
        self.L(f"{name} = {e}")
        return name

    def seg(self, ins) -> int:
        s = SEGREG.get(ins.memory_segment)
        if s is None:
            raise Unsupported("segment")
        return s

    def load(self, size: int, seg: int, a: str, dst: str) -> None:
        """``dst = <size-byte read at a>``; a must be a name or a constant."""
        self.fault_point()
        slow = f"{self.slow()}{dst} = rd{size * 8}({seg}, {a})"
        lim = self.rlim[seg]
        if lim < 0 or (a.startswith("0x") and int(a, 16) > lim):
            self.L(slow)
            return
        self.rsegs.add(seg)
        rs = self.rs
        within = "" if lim == FLAT or a.startswith("0x") else f" and {a} <= {lim:#x}"
        if self.paging:
            # dict subscript in a try: cheaper than a .get() call when the page is in the TLB
            self.L(f"try: F = tr[{a} >> 12]")
            self.L(f"except KeyError: F = {BIG}")
            if size == 1:
                self.L(f"if F < {rs}{within}: {dst} = ram[F | ({a} & 4095)]")
            elif size == 2:
                self.L(f"if F < {rs} and not {a} & 1{within}: {dst} = m16[(F | ({a} & 4095)) >> 1]")
            else:
                self.L(f"if F < {rs} and not {a} & 3{within}: {dst} = m32[(F | ({a} & 4095)) >> 2]")
        else:
            if a.startswith("0x"):
                v = int(a, 16)
                if v + size <= rs and not v & (size - 1):
                    self.L(f"{dst} = {('ram', 'm16', '', 'm32')[size - 1]}[{v >> (size // 2)}]")
                    return
            if size == 1:
                self.L(f"if {a} < {rs}{within}: {dst} = ram[{a}]")
            elif size == 2:
                self.L(f"if {a} < {rs} and not {a} & 1{within}: {dst} = m16[{a} >> 1]")
            else:
                self.L(f"if {a} < {rs} and not {a} & 3{within}: {dst} = m32[{a} >> 2]")
        self.L(f"else: {slow}")

    def store(self, size: int, seg: int, a: str, v: str) -> None:
        """Write v (already in range) at a; a must be a name or a constant."""
        self.fault_point()
        lim = self.wlim[seg]
        if lim < 0 or (a.startswith("0x") and int(a, 16) > lim):
            self.L(f"{self.slow()}wr{size * 8}({seg}, {a}, {v})")
            return
        self.wsegs.add(seg)
        rs = self.rs
        within = "" if lim == FLAT or a.startswith("0x") else f" and {a} <= {lim:#x}"
        # (looked up at run time: a monitor may redirect a CPU's invalidations)
        inv = "cpu.invalidate_code_page(P); slow = 1"
        if self.paging:
            self.L(f"try: F = tw[{a} >> 12]")
            self.L(f"except KeyError: F = {BIG}")
            cond = f"F < {rs}" + ("" if size == 1 else f" and not {a} & {size - 1}") + within
            pa = f"(F | ({a} & 4095))"
            self.L(f"if {cond}:")
            self.L(f"    P = F >> 12")
        else:
            cond = f"{a} < {rs}" + ("" if size == 1 else f" and not {a} & {size - 1}") + within
            pa = a
            self.L(f"if {cond}:")
            self.L(f"    P = {a} >> 12")
        self.L(f"    if cp[P]: {inv}")
        if size == 1:
            self.L(f"    ram[{pa}] = {v}")
        elif size == 2:
            self.L(f"    m16[{pa} >> 1] = {v}")
        else:
            self.L(f"    m32[{pa} >> 2] = {v}")
        self.L(f"else: {self.slow()}wr{size * 8}({seg}, {a}, {v})")

    # -- operands
    def read_op(self, ins, i: int, size: int, dst: str) -> str:
        """Expression for operand i's value (loading memory into local ``dst``)."""
        kind = ins.op_kind(i)
        if kind == K.REGISTER:
            reg = ins.op_register(i)
            if reg not in GPR:
                raise Unsupported("register")
            return self.rreg(reg)
        if kind == K.MEMORY:
            a = self.addr(ins)
            self.load(size, self.seg(ins), a, dst)
            return dst
        return hex(imm_value(ins, i) & MASK[size])

    # -- flags
    def produce(self, p: Prod) -> None:
        self.prods.append(p)
        self.live = p

    # -- near jumps under a truncated code segment
    def check_target(self, t: str) -> None:
        """A jump to the run-time target ``t`` past the code segment's limit faults
        at the jump, before it changes anything (#GP(0), SDM Vol. 3A §5.3)."""
        if self.clim != FLAT:
            self.fault_point()
            self.L(f"if {t} > {self.clim:#x}: raise CpuFault(GP, 0)")

    def static_target(self, t: int) -> int:
        if t > self.clim:
            raise Unsupported("target beyond the code segment limit")   # the closure faults
        return t

    # -- fallback to the reference closure
    def sync(self) -> None:
        for r in sorted(self.dirty):
            self.L(f"regs[{r}] = {REG[r]}")
        self.dirty.clear()

    def fallback(self, i: int, fn, last: bool) -> None:
        self.has_fallback = True
        self.fallback_idx.append(i)
        self.sync()
        if self.live.kind not in ("in", "fb"):     # else cpu.lf already holds them
            self.L(f"cpu.lf = {self.live.mat()}")
        # From here cpu.lf is the closure's: when it faults it leaves them exact
        # (a REP CMPS/SCAS that faults on element k keeps the flags of element
        # k-1), so the handler must not put the earlier producer's flags back.
        self.live = Prod(self, "cpu")
        self.fault_point()
        name = self.const(f"op{i}", fn)
        # The closure sees the exact count (IN/OUT/RDTSC read the clock); a REP string
        # closure adds its extra iterations, which ``ic`` then absorbs.
        self.L(f"cpu.icount = ic + {i}")
        self.L(f"{name}()")
        self.L(f"ic = cpu.icount - {i}")
        # The closure may have changed any register and the flags (POPF, SAHF, ...):
        # reload them, unless the block ends here (then nothing after it reads them).
        if not last:
            self.L("eax, ecx, edx, ebx, esp, ebp, esi, edi = regs")
            self.L("lf = cpu.lf")
        self.live = Prod(self, "fb")


# ------------------------------------------------------------ instruction forms
FORMS: dict = {}


def form(*mnemonics):
    def reg(fn):
        for m in mnemonics:
            FORMS[m] = fn
        return fn
    return reg


def _gpr(ins, i):
    return ins.op_kind(i) == K.REGISTER and ins.op_register(i) in GPR


@form(Mn.NOP)
def g_nop(g, ins, i):
    return None


@form(Mn.MOV)
def g_mov(g, ins, i):
    k0, k1 = ins.op0_kind, ins.op1_kind
    if (k0 == K.REGISTER and ins.op0_register not in GPR) or (k1 == K.REGISTER and ins.op1_register not in GPR):
        raise Unsupported("special register")
    size = op_size(ins, 0)
    if k0 == K.REGISTER:
        if k1 == K.MEMORY and size == 4:
            # Load straight into the register local: the read faults before the assignment.
            a = g.addr(ins)
            dst = REG[GPR[ins.op0_register][0]]
            g.load(4, g.seg(ins), a, dst)
            g.written.add(GPR[ins.op0_register][0])
            g.dirty.add(GPR[ins.op0_register][0])
            return None
        g.wreg(ins.op0_register, g.read_op(ins, 1, size, "V"))
        return None
    a = g.addr(ins)
    v = g.read_op(ins, 1, size, "V")
    g.store(size, g.seg(ins), a, v)
    return None


@form(Mn.MOVZX, Mn.MOVSX)
def g_movx(g, ins, i):
    ssize, dsize = op_size(ins, 1), op_size(ins, 0)
    v = g.read_op(ins, 1, ssize, "V")
    if ins.mnemonic == Mn.MOVSX:
        s = SIGN[ssize]
        v = f"((({v}) ^ {s}) - {s}) & {MASK[dsize]}"
    g.wreg(ins.op0_register, v)
    return None


@form(Mn.LEA)
def g_lea(g, ins, i):
    e = g.ea(ins)
    dsize = op_size(ins, 0)
    if dsize != 4:
        e = f"({e}) & 0xFFFF"
    g.wreg(ins.op0_register, e)
    return None


_ALU = {Mn.ADD: "add", Mn.SUB: "sub", Mn.CMP: "sub", Mn.AND: "logic", Mn.TEST: "logic",
        Mn.OR: "logic", Mn.XOR: "logic", Mn.ADC: "adc", Mn.SBB: "sbb"}


@form(Mn.ADD, Mn.SUB, Mn.CMP, Mn.AND, Mn.TEST, Mn.OR, Mn.XOR, Mn.ADC, Mn.SBB)
def g_alu(g, ins, i):
    op = ins.mnemonic
    size = op_size(ins, 0)
    mask, s = MASK[size], SIGN[size]
    kind = _ALU[op]
    writes = op not in (Mn.CMP, Mn.TEST)
    a, b, r, c = f"a{i}", f"b{i}", f"r{i}", f"c{i}"
    mem0 = ins.op0_kind == K.MEMORY
    if not mem0 and not _gpr(ins, 0):
        raise Unsupported("alu operand")
    if i in g.dead and not mem0 and kind not in ("adc", "sbb"):
        # Flags nobody observes: compute the result only (CMP/TEST: just the read, which may fault).
        bv = g.read_op(ins, 1, size, b)
        if writes:
            d = g.rreg(ins.op0_register)
            if op == Mn.XOR and ins.op1_kind == K.REGISTER and ins.op1_register == ins.op0_register:
                e = "0"
            else:
                e = {Mn.ADD: f"({d} + {bv}) & {mask}", Mn.SUB: f"({d} - {bv}) & {mask}",
                     Mn.AND: f"{d} & {bv}", Mn.OR: f"{d} | {bv}", Mn.XOR: f"{d} ^ {bv}"}[op]
            g.wreg(ins.op0_register, e)
        g.produce(Prod(g, kind))
        return None
    if mem0:
        addr = g.addr(ins)
        seg = g.seg(ins)
        g.load(size, seg, addr, a)
    else:
        g.L(f"{a} = {g.rreg(ins.op0_register)}")
    bv = g.read_op(ins, 1, size, b)
    if bv != b and not bv.startswith("0x"):
        g.L(f"{b} = {bv}")
    elif bv.startswith("0x"):
        b = bv
    if kind in ("adc", "sbb"):
        g.L(f"{c} = {g.live.cf()}")
    expr = {Mn.ADD: f"({a} + {b}) & {mask}", Mn.SUB: f"({a} - {b}) & {mask}",
            Mn.CMP: None, Mn.AND: f"{a} & {b}", Mn.TEST: f"{a} & {b}",
            Mn.OR: f"{a} | {b}", Mn.XOR: f"{a} ^ {b}",
            Mn.ADC: f"({a} + {b} + {c}) & {mask}", Mn.SBB: f"({a} - {b} - {c}) & {mask}"}[op]
    if op == Mn.XOR and ins.op1_kind == K.REGISTER and not mem0 and ins.op1_register == ins.op0_register:
        expr = "0"
    if expr is not None:
        g.L(f"{r} = {expr}")
        rx = r
    else:
        rx = f"(({a} - {b}) & {mask})"
    if writes:
        if mem0:
            g.store(size, seg, addr, r)
        else:
            g.wreg(ins.op0_register, r)
    g.produce(Prod(g, kind, a, b, rx, c, s))
    return None


@form(Mn.INC, Mn.DEC, Mn.NEG, Mn.NOT)
def g_unary(g, ins, i):
    op = ins.mnemonic
    size = op_size(ins, 0)
    mask, s = MASK[size], SIGN[size]
    a, r, c = f"a{i}", f"r{i}", f"c{i}"
    mem0 = ins.op0_kind == K.MEMORY
    if i in g.dead and not mem0 and op != Mn.NOT:
        d = g.rreg(ins.op0_register)
        g.wreg(ins.op0_register, {Mn.INC: f"({d} + 1) & {mask}", Mn.DEC: f"({d} - 1) & {mask}",
                                  Mn.NEG: f"(-{d}) & {mask}"}[op])
        g.produce(Prod(g, "logic"))
        return None
    if mem0:
        addr = g.addr(ins)
        seg = g.seg(ins)
        g.load(size, seg, addr, a)
    elif _gpr(ins, 0):
        g.L(f"{a} = {g.rreg(ins.op0_register)}")
    else:
        raise Unsupported("unary operand")
    if op == Mn.INC:
        g.L(f"{c} = {g.live.cf()}")
        g.L(f"{r} = ({a} + 1) & {mask}")
        p = Prod(g, "inc", a, "0", r, c, s)
    elif op == Mn.DEC:
        g.L(f"{c} = {g.live.cf()}")
        g.L(f"{r} = ({a} - 1) & {mask}")
        p = Prod(g, "dec", a, "0", r, c, s)
    elif op == Mn.NEG:
        g.L(f"{r} = (-{a}) & {mask}")
        p = Prod(g, "sub", "0", a, r, "0", s)
    else:
        g.L(f"{r} = {a} ^ {mask}")
        p = None
    if mem0:
        g.store(size, seg, addr, r)
    else:
        g.wreg(ins.op0_register, r)
    if p is not None:
        g.produce(p)
    return None


def _count_and_destination(g, ins, a: str, what: str):
    """What shifts and rotates share: the count (an immediate masked to 5 bits, or None
    for CL) and the destination's value in local ``a`` (loaded from memory, which may
    fault, or copied from its register).  Returns (count, put): put(r) writes the
    result back to the destination."""
    if ins.op1_kind == K.REGISTER:
        if ins.op1_register != iced.Register.CL:
            raise Unsupported(f"{what} count")
        cnt = None
    else:
        cnt = imm_value(ins, 1) & 0x1F
    size = op_size(ins, 0)
    if ins.op0_kind == K.MEMORY:
        addr, seg = g.addr(ins), g.seg(ins)
        g.load(size, seg, addr, a)

        def put(r: str) -> None:
            g.store(size, seg, addr, r)
    elif _gpr(ins, 0):
        g.L(f"{a} = {g.rreg(ins.op0_register)}")

        def put(r: str) -> None:
            g.wreg(ins.op0_register, r)
    else:
        raise Unsupported(f"{what} operand")
    return cnt, put


@form(Mn.SHL, Mn.SAL, Mn.SHR, Mn.SAR)
def g_shift(g, ins, i):
    op = ins.mnemonic
    size = op_size(ins, 0)
    mask, s = MASK[size], SIGN[size]
    bits = size * 8
    a, r, n = f"a{i}", f"r{i}", f"n{i}"
    mem0 = ins.op0_kind == K.MEMORY
    cnt, put = _count_and_destination(g, ins, a, "shift")
    if cnt == 0:
        return None          # count 0: nothing changes (the read above may still fault)
    c = str(cnt) if cnt is not None else n
    if i in g.dead and cnt is not None and not mem0 and size == 4:
        d = g.rreg(ins.op0_register)
        g.body.pop()         # the a{i} copy
        g.wreg(ins.op0_register, {Mn.SHL: f"({d} << {c}) & {mask}", Mn.SAL: f"({d} << {c}) & {mask}",
                                  Mn.SHR: f"{d} >> {c}",
                                  Mn.SAR: f"((({d} ^ {s}) - {s}) >> {c}) & {mask}"}[op])
        g.produce(Prod(g, "logic"))
        return None

    def compute():
        if op in (Mn.SHL, Mn.SAL):
            g.L(f"{r} = ({a} << {c}) & {mask}")
            return f"SHLF({a}, {c}, {r}, {s}, {bits})"
        if op == Mn.SHR:
            g.L(f"{r} = {a} >> {c}")
            return f"SHRF({a}, {c}, {r}, {s})"
        g.L(f"{r} = ((({a} ^ {s}) - {s}) >> {c}) & {mask}")
        return f"SARF((({a} ^ {s}) - {s}), {c}, {r}, {s})"

    if cnt is not None:
        e = compute()
        put(r)
        g.produce(Prod(g, "eager", r=r, s=s, e=e))
        return None
    # By CL: a zero count changes nothing (no write, flags stay).
    g.L(f"{n} = ecx & 0x1F")
    g.L(f"if {n}:")
    g.ind += 1
    e = compute()
    put(r)
    g.ind -= 1
    g.produce(Prod(g, "cond", n=n, inner=Prod(g, "eager", r=r, s=s, e=e), prev=g.live))
    return None


@form(Mn.IMUL)
def g_imul(g, ins, i):
    n = ins.op_count
    size = op_size(ins, 0)
    s, mask = SIGN[size], MASK[size]
    r, lo = f"r{i}", f"l{i}"
    if n == 1:
        if size != 4:
            raise Unsupported("imul size")
        b = g.read_op(ins, 0, 4, "V")
        g.L(f"{r} = ((eax ^ {s}) - {s}) * ((({b}) ^ {s}) - {s})")
        g.L(f"{lo} = {r} & 0xFFFFFFFF")
        g.wreg32(0, lo)
        g.wreg32(2, f"({r} >> 32) & 0xFFFFFFFF")
    else:
        if n == 2:
            av = g.rreg(ins.op0_register)
            bv = g.read_op(ins, 1, size, "V")
        else:
            av = g.read_op(ins, 1, size, "V")
            bv = hex(imm_value(ins, 2) & mask)
        g.L(f"{r} = ((({av}) ^ {s}) - {s}) * ((({bv}) ^ {s}) - {s})")
        g.L(f"{lo} = {r} & {mask}")
        g.wreg(ins.op0_register, lo)
    g.produce(Prod(g, "eager", r=lo, s=s, e=f"MULF({r} != (({lo} ^ {s}) - {s}), {lo}, {s})"))
    return None


@form(Mn.MUL)
def g_mul(g, ins, i):
    if op_size(ins, 0) != 4:
        raise Unsupported("mul size")
    r = f"r{i}"
    b = g.read_op(ins, 0, 4, "V")
    g.L(f"{r} = eax * {b}")
    g.wreg32(0, f"{r} & 0xFFFFFFFF")
    g.wreg32(2, f"{r} >> 32")
    g.produce(Prod(g, "eager", e=f"MULF({r} > 0xFFFFFFFF, {r} & 0xFFFFFFFF, 0x80000000)"))
    return None


@form(Mn.ROL, Mn.ROR)
def g_rotate(g, ins, i):
    op = ins.mnemonic
    size = op_size(ins, 0)
    mask, s = MASK[size], SIGN[size]
    bits = size * 8
    left = op == Mn.ROL
    a, r, n = f"a{i}", f"r{i}", f"n{i}"
    cnt, put = _count_and_destination(g, ins, a, "rotate")
    if cnt == 0:
        return None          # count 0: nothing changes (the read above may still fault)

    def result(cc: str) -> str:
        if left:
            return f"(({a} << {cc}) | ({a} >> ({bits} - {cc}))) & {mask}"
        return f"(({a} >> {cc}) | ({a} << ({bits} - {cc}))) & {mask}"

    prev = g.live
    if cnt is not None:
        cc = cnt % bits
        g.L(f"{r} = {result(str(cc)) if cc else a}")
        put(r)
        g.produce(Prod(g, "rot", r=r, s=s, e=str(left), prev=prev))
        return None
    g.L(f"{n} = ecx & 0x1F")
    g.L(f"if {n}:")
    g.ind += 1
    g.L(f"C_ = {n} % {bits}")
    g.L(f"{r} = {result('C_')} if C_ else {a}")
    put(r)
    g.ind -= 1
    g.produce(Prod(g, "cond", n=n, inner=Prod(g, "rot", r=r, s=s, e=str(left), prev=prev), prev=prev))
    return None


@form(Mn.DIV, Mn.IDIV)
def g_div(g, ins, i):
    if op_size(ins, 0) != 4:
        raise Unsupported("div size")
    v = g.read_op(ins, 0, 4, "V")
    g.fault_point()          # #DE
    g.L(f"Q, R_ = {'DIVU' if ins.mnemonic == Mn.DIV else 'DIVS'}(edx, eax, {v})")
    g.wreg32(0, "Q")
    g.wreg32(2, "R_")
    return None              # flags: left as they were (as the reference and the oracle do)


@form(Mn.BSWAP)
def g_bswap(g, ins, i):
    idx, size, _ = GPR[ins.op0_register]
    if size != 4:
        raise Unsupported("bswap16")
    x = REG[idx]
    g.wreg32(idx, f"(({x} & 0xFF) << 24) | (({x} & 0xFF00) << 8) | (({x} >> 8) & 0xFF00) | ({x} >> 24)")
    return None


@form(Mn.CLD, Mn.STD)
def g_direction(g, ins, i):
    g.L(f"cpu.eflags_rest {'&= ~' if ins.mnemonic == Mn.CLD else '|= '}{DF}")
    return None


@form(Mn.CDQ, Mn.CWDE)
def g_convert(g, ins, i):
    if ins.mnemonic == Mn.CDQ:
        g.wreg32(2, "0xFFFFFFFF if eax & 0x80000000 else 0")
    else:
        g.wreg32(0, "(((eax & 0xFFFF) ^ 0x8000) - 0x8000) & 0xFFFFFFFF")
    return None


@form(Mn.XCHG)
def g_xchg(g, ins, i):
    size = op_size(ins, 0)
    if ins.op0_kind == K.MEMORY or ins.op1_kind == K.MEMORY:
        mi, ri = (0, 1) if ins.op0_kind == K.MEMORY else (1, 0)
        if not _gpr(ins, ri):
            raise Unsupported("xchg")
        a = g.addr(ins)
        seg = g.seg(ins)
        g.load(size, seg, a, "V")
        g.store(size, seg, a, g.rreg(ins.op_register(ri)))
        g.wreg(ins.op_register(ri), "V")
        return None
    if not (_gpr(ins, 0) and _gpr(ins, 1)):
        raise Unsupported("xchg")
    g.L(f"T = {g.rreg(ins.op0_register)}")
    g.L(f"U = {g.rreg(ins.op1_register)}")
    g.wreg(ins.op0_register, "U")
    g.wreg(ins.op1_register, "T")
    return None


_SETCC = [getattr(Mn, "SET" + c) for c in ("O", "NO", "B", "AE", "E", "NE", "BE", "A",
                                           "S", "NS", "P", "NP", "L", "GE", "LE", "G")]
_CMOV = [getattr(Mn, "CMOV" + c) for c in ("O", "NO", "B", "AE", "E", "NE", "BE", "A",
                                           "S", "NS", "P", "NP", "L", "GE", "LE", "G")]
_JCC = [getattr(Mn, "J" + c) for c in ("O", "NO", "B", "AE", "E", "NE", "BE", "A",
                                       "S", "NS", "P", "NP", "L", "GE", "LE", "G")]


@form(*_SETCC)
def g_setcc(g, ins, i):
    cond = g.live.cond(ins.condition_code - 1)
    v = f"(1 if {cond} else 0)"
    if ins.op0_kind == K.MEMORY:
        a = g.addr(ins)
        g.L(f"V = {v}")
        g.store(1, g.seg(ins), a, "V")
    else:
        g.wreg(ins.op0_register, v)
    return None


@form(*_CMOV)
def g_cmov(g, ins, i):
    size = op_size(ins, 0)
    v = g.read_op(ins, 1, size, "V")   # the source is read (and may fault) even when false
    cond = g.live.cond(ins.condition_code - 1)
    g.L(f"if {cond}:")
    g.ind += 1
    n = len(g.body)
    g.wreg(ins.op0_register, v)
    if len(g.body) == n:
        g.L("pass")         # CMOVcc r32 to itself
    g.ind -= 1
    return None


def _stack(g) -> None:
    if not g.ss32:
        raise Unsupported("16-bit stack")     # the closures handle SP wrapping
    g.uses_stack = True


def _push_value(g, v: str) -> None:
    _stack(g)
    g.L("B = (esp - 4) & 0xFFFFFFFF")
    g.store(4, SS, "B", v)
    g.wreg32(4, "B")


@form(Mn.PUSH)
def g_push(g, ins, i):
    k = ins.op0_kind
    if ins.code in (iced.Code.PUSH_R16, iced.Code.PUSH_RM16, iced.Code.PUSHW_IMM8, iced.Code.PUSH_IMM16):
        raise Unsupported("push16")
    if k == K.REGISTER:
        if ins.op0_register not in GPR:
            raise Unsupported("push sreg")
        v = g.rreg(ins.op0_register)
    elif k == K.MEMORY:
        v = g.read_op(ins, 0, 4, "V")
    else:
        v = hex(imm_value(ins, 0) & M32)
    _push_value(g, v)
    return None


@form(Mn.POP)
def g_pop(g, ins, i):
    if ins.op0_kind != K.REGISTER or ins.op0_register not in GPR or op_size(ins, 0) != 4:
        raise Unsupported("pop form")
    _stack(g)
    g.load(4, SS, "esp", "V")
    g.wreg32(4, "(esp + 4) & 0xFFFFFFFF")
    g.wreg(ins.op0_register, "V")
    return None


@form(Mn.LEAVE)
def g_leave(g, ins, i):
    if ins.code == iced.Code.LEAVEW:
        raise Unsupported("leave16")
    _stack(g)
    g.load(4, SS, "ebp", "V")
    g.wreg32(4, "(ebp + 4) & 0xFFFFFFFF")
    g.wreg32(5, "V")
    return None


# Control transfers return the expression for the next EIP (terminators).
def _opsize16(ins) -> bool:
    return ins.op0_kind == K.NEAR_BRANCH16 or ins.code in (
        iced.Code.CALL_RM16, iced.Code.JMP_RM16, iced.Code.RETNW, iced.Code.RETNW_IMM16,
        iced.Code.CALL_REL16, iced.Code.JMP_REL16)


@form(Mn.JMP)
def g_jmp(g, ins, i):
    if ins.is_jmp_far or ins.is_jmp_far_indirect or _opsize16(ins):
        raise Unsupported("far/16-bit jmp")
    if ins.op0_kind == K.NEAR_BRANCH32:
        return ("jmp", g.static_target(ins.near_branch_target & M32))
    t = g.read_op(ins, 0, 4, "T")
    if t != "T":
        g.L(f"T = {t}")
    g.check_target("T")
    return ("ind", "T")


@form(*_JCC)
def g_jcc(g, ins, i):
    if _opsize16(ins):
        raise Unsupported("16-bit jcc")
    return ("jcc", g.live.cond(ins.condition_code - 1), g.static_target(ins.near_branch_target & M32),
            ins.next_ip & M32)


@form(Mn.CALL)
def g_call(g, ins, i):
    if ins.is_call_far or ins.is_call_far_indirect or _opsize16(ins):
        raise Unsupported("far/16-bit call")
    nxt = hex(ins.next_ip & M32)
    if ins.op0_kind == K.NEAR_BRANCH32:
        target = g.static_target(ins.near_branch_target & M32)
        _push_value(g, nxt)
        return ("jmp", target)
    t = g.read_op(ins, 0, 4, "T")
    if t != "T":
        g.L(f"T = {t}")
    g.check_target("T")
    _push_value(g, nxt)
    return ("ind", "T")


@form(Mn.RET)
def g_ret(g, ins, i):
    if ins.code not in (iced.Code.RETND, iced.Code.RETND_IMM16):
        raise Unsupported("16-bit ret")
    extra = ins.immediate16 if ins.op_count else 0
    _stack(g)
    g.load(4, SS, "esp", "T")
    g.check_target("T")
    g.wreg32(4, f"(esp + {4 + extra}) & 0xFFFFFFFF")
    return ("ind", "T")


# ---------------------------------------------------------------- assembly
class _Env:
    """Per-CPU objects the generated functions close over."""

    def __init__(self, cpu):
        self.ram = cpu.ram
        mv = memoryview(cpu.ram)
        self.m16 = mv.cast("H") if _LITTLE else None
        self.m32 = mv.cast("I") if _LITTLE else None


_ENVS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _env(cpu) -> _Env:
    e = _ENVS.get(cpu)
    if e is None or e.ram is not cpu.ram:
        e = _ENVS[cpu] = _Env(cpu)
    return e


def compile_block(cpu, blk):
    """The generated function for ``blk``, or None if it cannot have one."""
    if not _LITTLE or not blk.cs32 or blk.n > MAX_GEN or not cpu.cs32 or cpu.clim < 0:
        return None     # (a code segment with a base would need EIP-to-linear on every jump)
    src, env = generate(cpu, blk)
    code = compile(src, f"<block {blk.eip:#x}>", "exec")
    ns: dict = {}
    exec(code, env, ns)
    make = ns["make"]
    fn = make(*[env[k] for k in make.__code__.co_varnames[:make.__code__.co_argcount]])
    if STRICT:
        fn.source = src      # (not by default: thousands of blocks' text is a lot of memory)
    return fn


def _is_unimplemented(fn) -> bool:
    # translate._unimplemented's closure: the reference cannot run it, so neither do we.
    return getattr(fn, "__qualname__", "").startswith("_unimplemented.")


_STATE = ("written", "dirty", "live", "rsegs", "wsegs", "uses_stack",
          "need_lf", "need_cfin", "env")


def generate(cpu, blk):
    """Python source of the block function, and the globals it runs with.

    Two passes.  The first generates the block keeping every producer's
    operands in locals and records which producers anything observes (a
    consumer, a fallback, the exit, the back edge, or the fault handler for
    some fault point).  The second drops the locals of the others: their flags
    are overwritten before anything could see them, with no fault point in
    between, so the state stays exact everywhere.
    """
    g, src, env = _generate(cpu, blk, frozenset())
    dead = frozenset(p.i for p in g.prods) - frozenset(p.i for p in g.prods if p.used)
    if dead and DEAD_FLAGS:
        g, src, env = _generate(cpu, blk, dead)
    return src, env


def _generate(cpu, blk, dead, allow_loop: bool = True):
    g = _Gen(cpu, blk, dead)
    ops = blk.ops
    n = blk.n
    g.loop = allow_loop and blk.fallthrough is None and _self_target(blk)
    term = None
    # An auditor wraps the closures of sensitive instructions: those must run as closures.
    audited = getattr(cpu, "auditor", None) is not None
    for i, ins in enumerate(blk.ilist):
        g.i = i
        last = i == n - 1
        fn = FORMS.get(ins.mnemonic)
        res = None
        if fn is not None and (ins.code == iced.Code.INVALID or ins.has_rep_prefix
                               or ins.has_repne_prefix or _is_unimplemented(ops[i][1])
                               or (audited and is_sensitive_form(ins))):
            fn = None
        if fn is not None:
            mark = (len(g.body), len(g.fault_points), len(g.prods),
                    [copy_(getattr(g, a)) for a in _STATE])
            try:
                res = fn(g, ins, i)
                ok = True
            except Unsupported:
                ok = False
            if ok and (res is not None) != (last and blk.fallthrough is None):
                ok = False   # generated and reference block structure must agree
            if not ok:
                del g.body[mark[0]:]
                del g.fault_points[mark[1]:]
                del g.prods[mark[2]:]
                for a, v in zip(_STATE, mark[3]):
                    setattr(g, a, v)
                res = fn = None
        if fn is None:
            if g.loop:
                # A block with a fallback does not loop inside (the closure may observe anything).
                return _generate(cpu, blk, dead, allow_loop=False)
            g.fallback(i, ops[i][1], last)
            continue
        if last:
            term = res
    src, env = _assemble(g, term)
    return g, src, env


def copy_(v):
    return set(v) if isinstance(v, set) else dict(v) if isinstance(v, dict) else v


def _self_target(blk) -> bool:
    ins = blk.ilist[-1]
    return (ins.mnemonic == Mn.JMP or ins.mnemonic in _JCC) \
        and ins.op0_kind == K.NEAR_BRANCH32 and (ins.near_branch_target & M32) == blk.eip


def _chain_refs_livein(p: Prod) -> bool:
    """Does this producer's tuple depend on the flags live into the block?"""
    while p.kind in ("cond", "rot"):
        p = p.prev
    return p.kind == "in"


def _assemble(g: _Gen, term) -> tuple[str, dict]:
    blk, n = g.blk, g.blk.n
    last = g.live
    fallback_last = term is None and blk.fallthrough is None
    if g.loop and last.kind in ("cond", "rot") and _chain_refs_livein(last):
        g.need_lf = True     # the flags after an iteration may be the live-in ones

    # Exit: registers, flags, count, EIP (after the loop for a self-loop).
    exit_lines: list[str] = []
    E = exit_lines.append
    for r in sorted(g.written if g.loop else g.dirty):
        E(f"regs[{r}] = {REG[r]}")
    if last.kind not in ("in", "fb") and not fallback_last:
        E(f"cpu.lf = {last.mat()}")
    # Chaining: a block without fallbacks returns its successor block when that is
    # already translated, and the dispatch loop runs it without fetch_block or the
    # between-block checks (halt, stop, IRQ window), which nothing in such a block (no
    # fallback, no slow-path access) can have changed.  The successor's physical
    # address is found as fetch_block would: same page as this block (whose mapping
    # nothing in the block changed), else through the code TLB (tlb_r) with paging on.
    chain = not g.has_fallback
    vpage, pbase = blk.eip & ~0xFFF, blk.pages[0] << 12

    def chain_to(t: str, lines: list[str], pad: str) -> None:
        """Return the block at EIP ``t`` (a name or an int literal) if it is at hand."""
        L = lines.append
        if not chain:
            return
        # Past a truncated CS's limit there is no block to chain to: fetch_block raises
        # the #GP there (a fall-through, or a self-loop's exit, can lead past it).
        if t.startswith("0x") and int(t, 16) > g.clim:
            return
        within = "" if g.clim == FLAT or t.startswith("0x") else f" and {t} <= {g.clim:#x}"
        if t.startswith("0x") and int(t, 16) & ~0xFFF == vpage:
            L(f"{pad}if not slow:")
            L(f"{pad}    nb = cache_get({pbase | (int(t, 16) & 0xFFF):#x})")
            L(f"{pad}    if nb is not None and nb.eip == {t} and nb.cs32: return nb")
            return
        L(f"{pad}if not slow{within}:")
        if g.paging:
            L(f"{pad}    F = cpu.tlb_r.get({t} >> 12)")
            L(f"{pad}    if F is not None:")
            L(f"{pad}        nb = cache_get(F | ({t} & 0xFFF))")
            L(f"{pad}        if nb is not None and nb.eip == {t} and nb.cs32: return nb")
        else:
            L(f"{pad}    nb = cache_get({t})")
            L(f"{pad}    if nb is not None and nb.eip == {t} and nb.cs32: return nb")

    def go(target: int, lines: list[str], pad: str) -> None:
        lines.append(f"{pad}cpu.eip = {target:#x}")
        chain_to(f"{target:#x}", lines, pad)
        lines.append(f"{pad}return True")

    if g.loop:
        E("cpu.icount = ic")
        E("cpu.eip = EIP")
        chain_to("EIP", exit_lines, "")
        E("return True")
    else:
        E(f"cpu.icount = ic + {n}")
        if fallback_last:
            E("return True")                         # the closure set cpu.eip
        elif term is None:
            go(blk.fallthrough, exit_lines, "")
        elif term[0] == "jmp":
            go(term[1], exit_lines, "")
        elif term[0] == "ind":
            E(f"cpu.eip = {term[1]}")
            chain_to(term[1], exit_lines, "")
            E("return True")
        else:
            E(f"if {term[1]}:")
            go(term[2], exit_lines, "    ")
            go(term[3], exit_lines, "")

    # The fault handler: exact state at the instruction idx.
    # A fallback closure faults with cpu.regs exact (sync() stored the locals before
    # the call, and the closure may have moved them on: a REP string instruction
    # keeps the iterations it completed), so the locals are not stored back then.
    H = [f"regs[{r}] = {REG[r]}" for r in sorted(g.written)]
    if H and g.fallback_idx:
        fb = "(" + ", ".join(map(str, g.fallback_idx)) + ",)"
        H = [f"if idx not in {fb}:"] + ["    " + h for h in H]
    groups: list = []
    for idx, p in g.fault_points:
        if groups and groups[-1][1] is p:
            groups[-1][0].append(idx)
        else:
            groups.append(([idx], p))
    for j, (idxs, p) in enumerate(groups):
        m = _handler_mat(g, p)
        if m == "cpu.lf":
            m = None                     # already there
        if len(groups) == 1:
            if m is not None:
                H.append(f"cpu.lf = {m}")
            continue
        if m is None:
            m = "cpu.lf"
        if j == len(groups) - 1:
            H.append(f"else: cpu.lf = {m}")
        else:
            H.append(f"{'if' if j == 0 else 'elif'} idx <= {idxs[-1]}: cpu.lf = {m}")
    H += ["cpu.icount = ic", "cpu.fault_index = idx", "raise"]

    # The back edge of a self-loop: go round again while the budget lasts and nothing
    # external happened; carry the flags the next iteration's body reads.
    tail: list[str] = []
    if g.loop:
        T = tail.append
        upd = []
        if last.kind != "in":
            if g.need_cfin:
                upd.append(f"cf_in = {last.cf()}")
            if g.need_lf:
                upd.append(f"lf = {last.mat()}")
        T(f"ic += {n}")
        if term[0] == "jcc":
            T(f"if {term[1]}:")
            T("    if ic < end and not slow:")
            tail += ["        " + u for u in upd]
            T("        continue")
            T(f"    EIP = {term[2]:#x}")
            T("else:")
            T(f"    EIP = {term[3]:#x}")
        else:
            T("if ic < end and not slow:")
            tail += ["    " + u for u in upd]
            T("    continue")
            T(f"EIP = {term[1]:#x}")
        T("break")

    # Guard: the context the code was specialised for.
    guard = ["cpu.paging" if g.paging else "not cpu.paging"]
    guard += [f"rl[{s}] == {g.rlim[s]:#x}" for s in sorted(g.rsegs - g.wsegs)]
    guard += [f"wl[{s}] == {g.wlim[s]:#x}" for s in sorted(g.wsegs)]
    if g.uses_stack:
        guard.append("cpu.ss32")
    # A base-0 code segment with the limit the jump checks were made for; chaining
    # finds the successor from its EIP (linear address = EIP).
    guard.append(f"cpu.clim == {g.clim:#x}")

    src = ["def make(cpu, regs, ram, m16, m32, cp, rd8, rd16, rd32, wr8, wr16, wr32,"
           " rl, wl, C, GCF, SHLF, SHRF, SARF, MULF, ROTF, DIVU, DIVS, cache_get):",
           "  def run(end):",
           f"    if not ({' and '.join(guard)}): return False"]
    P = src.append
    if g.paging and g.rsegs:
        P("    tr = cpu.tlb_r")
    if g.paging and g.wsegs:
        P("    tw = cpu.tlb_w")
    P("    eax, ecx, edx, ebx, esp, ebp, esi, edi = regs")
    if g.need_lf:
        P("    lf = cpu.lf")
    if g.need_cfin:
        P(f"    cf_in = GCF({'lf' if g.need_lf else 'cpu.lf'})")
    P("    ic = ic0 = cpu.icount" if g.loop else "    ic = cpu.icount")
    P("    idx = 0")
    P("    slow = 0")
    P("    try:")
    ind = "        " if g.loop else "      "
    if g.loop:
        P("      while True:")
    for line in g.body + tail:
        P(ind + line)
    if not g.body and not tail:
        P(ind + "pass")
    P("    except BaseException:")
    for line in H:
        P("      " + line)
    for line in exit_lines:
        P("    " + line)
    P("  return run")
    return "\n".join(src) + "\n", _names(g)


def _handler_mat(g: _Gen, p: Prod) -> str:
    """The tuple for the producer live at a fault point, as the handler can compute it.

    The live-in flags are still in ``cpu.lf`` when the handler runs: nothing in
    the block stores it before a fallback, and after a fallback the live
    producer is the fallback's.  In a self-loop whose body does not carry
    ``lf`` round the back edge, the live-in flags of iteration k > 0 are those
    of iteration k-1's last producer, whose locals are intact until it runs
    again, so the handler rebuilds them from those.
    """
    saved = g.need_lf
    if not g.need_lf:
        g.handler_livein = "cpu.lf"
        if g.loop and g.live.kind != "in":
            g.handler_livein = f"(cpu.lf if ic == ic0 else {g.live.mat()})"
    m = p.mat()
    g.handler_livein = None
    g.need_lf = saved
    return m


def _names(g: _Gen) -> dict:
    cpu = g.cpu
    e = _env(cpu)
    env = dict(g.env)
    env.update(cpu=cpu, regs=cpu.regs, ram=cpu.ram, m16=e.m16, m32=e.m32, cp=cpu.code_pages,
               rd8=cpu.rd8, rd16=cpu.rd16, rd32=cpu.rd32,
               wr8=cpu.wr8, wr16=cpu.wr16, wr32=cpu.wr32, rl=cpu.rlim, wl=cpu.wlim, CpuFault=CpuFault, GP=GP,
               C=CONDITIONS, GCF=get_cf, SHLF=shl_flags, SHRF=shr_flags, SARF=sar_flags,
               MULF=mul_flags, ROTF=rot_flags, DIVU=div32, DIVS=idiv32, cache_get=cpu.cache.get)
    return env
