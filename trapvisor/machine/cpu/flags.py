"""Lazy evaluation of the arithmetic flags (CF PF AF ZF SF OF).

An arithmetic instruction does not compute its six flags; it stores the tuple
``cpu.lf = (op, a, b, r, sign)``: the operation, its operands, its result
(already truncated) and the operand size given as its sign bit (0x80, 0x8000,
0x80000000).  Flags are derived only when something reads them (Jcc, SETcc,
ADC, PUSHF, ...), which for most instructions is never.  Instructions whose
flags are awkward to describe that way (shifts, multiplies, bit scans) store
``(EAGER, flags, 0, 0, 0)`` with the six bits already computed.

Flag definitions: SDM Vol. 1 Appendix A (EFLAGS cross-reference) and the
per-instruction "Flags Affected" sections of SDM Vol. 2.  Where Intel leaves
a flag undefined we match what unicorn (QEMU's TCG) does; the table of those
choices is in docs/undefined-flags.md.
"""

from .constants import AF, CF, OF, PF, SF, ZF

# Lazy operations.
EAGER, ADD, ADC, SUB, SBB, LOGIC, INC, DEC = range(8)

# PF is set when the low byte of the result has an even number of 1 bits.
PARITY = bytes(PF if bin(i).count("1") % 2 == 0 else 0 for i in range(256))


def mul_flags(overflow, r_low, sign) -> int:
    """The flags of MUL and IMUL: CF = OF = overflow; SF, ZF and PF follow the low
    half as unicorn/QEMU computes them; AF is cleared (all four are undefined by
    Intel: docs/undefined-flags.md)."""
    f = (CF | OF) if overflow else 0
    f |= PARITY[r_low & 0xFF]
    if r_low == 0:
        f |= ZF
    if r_low & sign:
        f |= SF
    return f


def szp(r, sign) -> int:
    """SF, ZF and PF of a result (for the instructions whose flags are computed eagerly)."""
    f = PARITY[r & 0xFF]
    if r == 0:
        f |= ZF
    if r & sign:
        f |= SF
    return f


def arith_flags(lf) -> int:
    """The six arithmetic flag bits described by a lazy-flags tuple."""
    op, a, b, r, sign = lf
    if op == EAGER:
        return a
    f = PARITY[r & 0xFF]
    if r == 0:
        f |= ZF
    if r & sign:
        f |= SF
    if op == SUB or op == SBB:
        if (a < b) if op == SUB else (a <= b):
            f |= CF
        if (a ^ b) & (a ^ r) & sign:
            f |= OF
        return f | ((a ^ b ^ r) & AF)
    if op == ADD or op == ADC:
        if (r < a) if op == ADD else (r <= a):
            f |= CF
        if (a ^ r) & (b ^ r) & sign:
            f |= OF
        return f | ((a ^ b ^ r) & AF)
    if op == LOGIC:
        return f
    # INC/DEC keep CF, which the instruction saved in b.
    if b:
        f |= CF
    if op == INC:
        if r == sign:
            f |= OF
        if r & 0xF == 0:
            f |= AF
    else:
        if r == sign - 1:
            f |= OF
        if r & 0xF == 0xF:
            f |= AF
    return f


def get_cf(lf) -> int:
    op, a, b, r, sign = lf
    if op == SUB:
        return 1 if a < b else 0
    if op == ADD:
        return 1 if r < a else 0
    if op == LOGIC:
        return 0
    if op == EAGER:
        return a & CF
    if op == SBB:
        return 1 if a <= b else 0
    if op == ADC:
        return 1 if r <= a else 0
    return b  # INC/DEC


def get_zf(lf) -> bool:
    return (lf[1] & ZF) != 0 if lf[0] == EAGER else lf[3] == 0


def get_sf(lf) -> bool:
    return (lf[1] & SF) != 0 if lf[0] == EAGER else (lf[3] & lf[4]) != 0


def get_of(lf) -> bool:
    return (arith_flags(lf) & OF) != 0


# -- Conditions (SDM Vol. 2, Jcc: condition codes 0..15 in encoding order) ----
# Each takes the lazy-flags tuple.  The common producers (CMP/SUB, TEST/AND)
# get a direct comparison instead of materialising flags.

def _c_o(lf):
    return arith_flags(lf) & OF != 0


def _c_no(lf):
    return arith_flags(lf) & OF == 0


def _c_b(lf):
    if lf[0] == SUB:
        return lf[1] < lf[2]
    return get_cf(lf) != 0


def _c_ae(lf):
    return not _c_b(lf)


def _c_e(lf):
    return (lf[1] & ZF) != 0 if lf[0] == EAGER else lf[3] == 0


def _c_ne(lf):
    return not _c_e(lf)


def _c_be(lf):
    if lf[0] == SUB:
        return lf[1] <= lf[2]
    return get_cf(lf) != 0 or _c_e(lf)


def _c_a(lf):
    return not _c_be(lf)


def _c_s(lf):
    return get_sf(lf)


def _c_ns(lf):
    return not get_sf(lf)


def _c_p(lf):
    return arith_flags(lf) & PF != 0


def _c_np(lf):
    return arith_flags(lf) & PF == 0


def _c_l(lf):
    op = lf[0]
    if op == SUB:
        s = lf[4]
        return (lf[1] ^ s) < (lf[2] ^ s)
    if op == LOGIC:
        return (lf[3] & lf[4]) != 0
    f = arith_flags(lf)
    return ((f & SF) != 0) != ((f & OF) != 0)


def _c_ge(lf):
    return not _c_l(lf)


def _c_le(lf):
    op = lf[0]
    if op == SUB:
        s = lf[4]
        return (lf[1] ^ s) <= (lf[2] ^ s)
    if op == LOGIC:
        return lf[3] == 0 or (lf[3] & lf[4]) != 0
    f = arith_flags(lf)
    return (f & ZF) != 0 or (((f & SF) != 0) != ((f & OF) != 0))


def _c_g(lf):
    return not _c_le(lf)


CONDITIONS = (_c_o, _c_no, _c_b, _c_ae, _c_e, _c_ne, _c_be, _c_a,
              _c_s, _c_ns, _c_p, _c_np, _c_l, _c_ge, _c_le, _c_g)
