"""The block tier's emitter: the state of one block's generation, the Python it
emits for registers, memory operands, fault points and fallbacks, and
``FORMS``, the registry of inlined instruction forms.

``Gen`` follows a block while ``blockgen.generate`` goes through its
instructions: which register locals are assigned and not yet stored back,
which segments the inline fast path uses (the function's guard checks their
limits), the flag producers, the fault points and the fallbacks.  A memory
operand gets the fast path of ``memory_access.py`` inline (a base-0 segment
within ``cpu.rlim``/``wlim``, a TLB hit, RAM) with the CPU's ``rd*``/``wr*``
as the slow path, which does the checks of SDM Vol. 3A §5.3 and the page walk.

An instruction form (``blockgen_move.py``, ``blockgen_arith.py``,
``blockgen_branch.py``) registers with ``@form`` a function ``(g, ins, i)``
that emits instruction ``i`` of the block through ``g`` and returns None, or,
for a control transfer, the block's terminator (``blockgen_branch.py``).  It
raises ``Unsupported`` for an operand form it does not inline; the
instruction then runs its closure (``Gen.fallback``).
"""

from __future__ import annotations

import iced_x86 as iced

from .blockgen_flags import Prod
from .cpu import CODE_MODIFIED, FLAT
from .operands import GPR, K, MASK, SEGREG, Unsupported, imm_value

REG = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
M32 = 0xFFFFFFFF
BIG = 1 << 40           # "no TLB entry": compares above any RAM size


# ---------------------------------------------------------------- generator
class Gen:
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
        self.stored = False                # the instruction just generated may store to memory
        self.code_check = None             # (index, body line) of the last boundary check
        self.fallback_idx: list[int] = []  # instructions run by their closure
        self.env: dict = {}
        self.loop = False                  # the block jumps back to its own start
        self.handler_livein = None         # see blockgen._handler_mat

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
        self.stored = True
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

    def end_if_code_modified(self) -> None:
        """At the boundary before instruction i, after one that stored: if the store hit
        this block's page (``CPU.invalidate_code_page``), leave with the i instructions
        before it retired, so that the dispatch loop decodes the new bytes.  The
        registers are stored here since the handler skips that at a fallback's index."""
        self.fault_point()
        regs = "; ".join(f"regs[{r}] = {REG[r]}" for r in range(8))
        self.L(f"if cpu.code_modified: {regs}; raise {self.const('CODE_MODIFIED', CODE_MODIFIED)}")
        self.code_check = (self.i, len(self.body) - 1)

    def fallback(self, i: int, fn, last: bool) -> None:
        self.has_fallback = True
        self.stored = True          # a closure may store anywhere
        self.fallback_idx.append(i)
        self.sync()
        if self.live.kind not in ("in", "fb"):     # else cpu.lf already holds them
            m = self.live.mat()
            self.L(f"cpu.lf = {m}")
            if self.code_check is not None and self.code_check[0] == i:
                # The boundary check before this instruction leaves with the flags in
                # cpu.lf as well, since the handler takes them from there at this index.
                j = self.code_check[1]
                self.body[j] = self.body[j].replace("; raise ", f"; cpu.lf = {m}; raise ")
        # From here cpu.lf is the closure's: when it faults it leaves them exact
        # (a REP CMPS/SCAS that faults on element k keeps the flags of element
        # k-1), so the handler must not put the earlier producer's flags back.
        self.live = Prod(self, "cpu")
        if self.fault_points and self.fault_points[-1][0] == i:
            self.fault_points[-1] = (i, self.live)      # the boundary check's, see above
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


def gpr(ins, i):
    return ins.op_kind(i) == K.REGISTER and ins.op_register(i) in GPR
