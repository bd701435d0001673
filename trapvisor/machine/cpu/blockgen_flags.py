"""Flags in generated code: the flag producers of a block and the helpers that
compute eager flags at run time.

Inside a block function (``blockgen.py``) a flag-producing instruction keeps
its operands and result in fresh locals; a :class:`Prod` describes it by
expressions over those locals and gives a consumer what it needs: the
``cpu.lf`` tuple (``mat``), CF alone (``cf``), or one condition (``cond``:
``a7 != b7`` for CMP+JNE) without building the tuple.  The tuple and its
rules are ``flags.py``'s (SDM Vol. 1 Appendix A and the Flags Affected
sections of SDM Vol. 2); flags Intel leaves undefined follow QEMU, as in the
closures (docs/undefined-flags.md).
"""

from __future__ import annotations

from . import flags as F
from .constants import CF, OF, SF, ZF
from .flags import szp


# ---------------------------------------------------------------- flag helpers
# Exact copies of the reference semantics in ops_shift.py (including the choices
# for flags Intel leaves undefined); called only when a tuple is materialised,
# never on the fast path.  MUL and IMUL share flags.mul_flags with the closures.

def shl_flags(a, c, r, sign, bits):
    cf = (a >> (bits - c)) & 1 if c <= bits else 0
    of = ((r & sign) != 0) != bool(cf)
    return szp(r, sign) | (CF if cf else 0) | (OF if of else 0)


def shr_flags(a, c, r, sign):
    cf = (a >> (c - 1)) & 1
    f = szp(r, sign) | (CF if cf else 0) | (OF if a & sign and c == 1 else 0)
    if c != 1:
        f = (f & ~OF) | (OF if ((r << 1) ^ r) & sign else 0)
    return f


def sar_flags(sa, c, r, sign):
    cf = (sa >> (c - 1)) & 1
    return szp(r, sign) | (CF if cf else 0)


def rot_flags(old, r, sign, left):
    """ROL/ROR: CF and OF from the result, the other four flags as they were."""
    if left:
        cf = r & 1
        of = ((r & sign) != 0) != bool(cf)
    else:
        cf = 1 if r & sign else 0
        of = ((r & sign) != 0) != ((r & (sign >> 1)) != 0)
    return (F.arith_flags(old) & ~(CF | OF)) | (CF if cf else 0) | (OF if of else 0)


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
        self.used = False            # something observes these flags (see blockgen.generate)

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
