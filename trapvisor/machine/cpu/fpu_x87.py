"""The x87 floating-point unit's state and arithmetic, exactly rounded.

What is modelled (Intel SDM Vol. 1 chapter 8, "Programming with the x87
FPU", and chapter 4.2 for the formats):

* eight 80-bit data registers addressed relative to TOP (status word bits
  13:11), the tag word (two bits per physical register: 00 valid, 01 zero,
  10 special, 11 empty; section 8.1.7), the control word (exception masks
  5:0, precision control 9:8, rounding control 11:10; 8.1.5) and the status
  word (exception flags IE DE ZE OE UE PE, SF, ES, C0-C3, B; 8.1.3), the last
  instruction and data pointers and the opcode (8.1.8, 8.1.9);
* values: double-extended (1 sign, 15 exponent bits biased by 16383, 64-bit
  significand with an explicit integer bit), single and double for memory
  operands, and 16/32/64-bit integers (4.2.2, 4.8);
* arithmetic done exactly on rationals and rounded once to the precision
  control (24, 53 or 64 significand bits, with the extended exponent range:
  8.1.5.2) in the rounding mode of RC (4.8.4): so +, -, *, / and square root
  are correctly rounded as IEEE 754 requires, and PE is exact;
* the default NaN ("real indefinite", 4.8.3.7), NaN propagation (4.8.3.5
  and Table 4-7: the larger significand of two NaNs; SNaN quietened with
  IE), invalid operations (8.5.1), division by zero (8.5.3), overflow and
  underflow with the masked responses of Tables 4-10 and 4-11, and stack
  overflow/underflow (8.5.1.1: IE with SF, C1 = 1 on overflow);
* unmasked exceptions set ES and B; the CPU raises #MF (or FERR#) at the next
  waiting x87 instruction (``ops_x87.py``, section 8.7).

Transcendental instructions (FSIN, FCOS, FSINCOS, FPTAN, FPATAN, F2XM1,
FYL2X, FYL2XP1) are computed in double precision by the host's libm and
rounded to the precision control with PE set: to about 2^-53, not the real
FPU's 64-bit accuracy (QEMU does the same for FSIN, FCOS and FPTAN).
"""

from __future__ import annotations

import math
from fractions import Fraction

# -- status word (SDM Vol. 1 Figure 8-4) ------------------------------------------------
IE, DE, ZE, OE, UE, PE, SF, ES = (1 << i for i in range(8))
C0, C1, C2, C3 = 1 << 8, 1 << 9, 1 << 10, 1 << 14
BUSY = 1 << 15
TOP_SHIFT = 11
EXCEPTIONS = IE | DE | ZE | OE | UE | PE
CC = C0 | C1 | C2 | C3

# -- control word (Figure 8-6) ----------------------------------------------------------
CW_DEFAULT = 0x037F             # FNINIT: all masked, 64-bit precision, round to nearest
PC_SHIFT, RC_SHIFT = 8, 10
RC_NEAREST, RC_DOWN, RC_UP, RC_ZERO = 0, 1, 2, 3
PRECISION_BITS = {0: 24, 1: 64, 2: 53, 3: 64}   # PC 01 is reserved; treated as extended

# -- tags (Figure 8-7) ------------------------------------------------------------------
TAG_VALID, TAG_ZERO, TAG_SPECIAL, TAG_EMPTY = 0, 1, 2, 3

# -- formats (Table 4-3) ----------------------------------------------------------------
EXT_BIAS, EXT_EMAX = 16383, 0x7FFF
INTEGER_BIT = 1 << 63
QUIET_BIT = 1 << 62
INDEFINITE = (1 << 79) | (EXT_EMAX << 64) | INTEGER_BIT | QUIET_BIT
EXT_INF = (EXT_EMAX << 64) | INTEGER_BIT
SIGN80 = 1 << 79


class Format:
    """A binary interchange format: significand bits (with the hidden bit), exponent range."""

    def __init__(self, name: str, p: int, ebits: int):
        self.name, self.p, self.ebits = name, p, ebits
        self.bias = (1 << (ebits - 1)) - 1
        self.emin, self.emax = 1 - self.bias, self.bias


SINGLE = Format("single", 24, 8)
DOUBLE = Format("double", 53, 11)
EXTENDED = Format("extended", 64, 15)


# -- classifying 80-bit values ----------------------------------------------------------
def sign_of(v: int) -> int:
    return v >> 79


def exp_of(v: int) -> int:
    return (v >> 64) & EXT_EMAX


def mant_of(v: int) -> int:
    return v & ((1 << 64) - 1)


def is_nan(v: int) -> bool:
    return exp_of(v) == EXT_EMAX and mant_of(v) & ~INTEGER_BIT != 0


def is_snan(v: int) -> bool:
    return is_nan(v) and not v & QUIET_BIT


def is_inf(v: int) -> bool:
    return exp_of(v) == EXT_EMAX and mant_of(v) & ~INTEGER_BIT == 0 and mant_of(v) & INTEGER_BIT


def is_zero(v: int) -> bool:
    return exp_of(v) == 0 and mant_of(v) == 0


def is_denormal(v: int) -> bool:
    return exp_of(v) == 0 and mant_of(v) != 0


def is_unsupported(v: int) -> bool:
    """Unnormals, pseudo-NaNs and pseudo-infinities: the integer bit clear with a nonzero
    exponent (SDM Vol. 1 8.2.2: invalid operands since the 387)."""
    e = exp_of(v)
    return e != 0 and not mant_of(v) & INTEGER_BIT


def tag_of(v: int) -> int:
    if is_zero(v):
        return TAG_ZERO
    e = exp_of(v)
    if e == EXT_EMAX or e == 0 or not mant_of(v) & INTEGER_BIT:
        return TAG_SPECIAL
    return TAG_VALID


def to_fraction(v: int) -> Fraction:
    """The exact value of a finite 80-bit number (denormals included)."""
    e, m = exp_of(v), mant_of(v)
    shift = (e if e else 1) - EXT_BIAS - 63
    x = Fraction(m) * (Fraction(2) ** shift) if shift < 0 else Fraction(m << shift)
    return -x if sign_of(v) else x


def quiet(v: int) -> int:
    return v | QUIET_BIT


class Flags:
    """Exception flags and C1 gathered while one operation computes."""
    __slots__ = ("bits", "c1")

    def __init__(self):
        self.bits = 0
        self.c1 = 0


# -- rounding (SDM Vol. 1 4.8.4; IEEE 754 section 4) ------------------------------------
def _round_int(num: int, den: int, rc: int, negative: bool) -> tuple[int, bool, bool]:
    """num/den (>= 0) rounded to an integer by ``rc``: (value, inexact, rounded away from zero)."""
    q, r = divmod(num, den)
    if r == 0:
        return q, False, False
    if rc == RC_NEAREST:
        up = 2 * r > den or (2 * r == den and q & 1)
    elif rc == RC_ZERO:
        up = False
    elif rc == RC_UP:
        up = not negative
    else:
        up = negative
    return q + (1 if up else 0), True, up


def round_value(x: Fraction, fmt: Format, rc: int, flags: Flags, p: int | None = None) -> tuple[int, int, int]:
    """Round a nonzero exact value to ``fmt`` with ``p`` significand bits: (sign, biased exponent,
    significand with its integer bit at p-1), or ('overflow') handled by the caller through
    flags.  Denormal results are given with biased exponent 0."""
    p = p or fmt.p
    neg = x < 0
    a = -x if neg else x
    num, den = a.numerator, a.denominator
    e = num.bit_length() - den.bit_length()            # 2^e <= a < 2^(e+1), adjusted below
    if (num << max(0, -e)) < (den << max(0, e)):
        e -= 1
    tiny = e < fmt.emin
    q = (e if not tiny else fmt.emin) - (p - 1)          # the quantum's exponent
    n, d = (num, den << q) if q >= 0 else (num << -q, den)
    m, inexact, away = _round_int(n, d, rc, neg)
    if m >> p:                                          # rounding carried into a new bit
        m >>= 1
        q += 1
    if inexact:
        flags.bits |= PE
        flags.c1 = 1 if away else 0
    if tiny and inexact:
        flags.bits |= UE
    if m == 0:
        return int(neg), 0, 0
    top = m.bit_length() - 1 + q                        # the exponent of the result
    if m.bit_length() < p:                              # still denormal
        return int(neg), 0, m
    if top > fmt.emax:
        flags.bits |= OE | PE
        return int(neg), -1, 0                          # overflow: the caller picks inf or max
    return int(neg), top + fmt.bias, m


def overflow_result(neg: bool, fmt: Format, rc: int, p: int, flags: Flags) -> tuple[int, int]:
    """Masked overflow (Table 4-10): infinity, or the largest finite value when rounding
    toward zero or away from the sign."""
    to_inf = rc == RC_NEAREST or (rc == RC_UP and not neg) or (rc == RC_DOWN and neg)
    if to_inf:
        flags.c1 = 1
        return fmt.emax + fmt.bias + 1, 0
    flags.c1 = 0
    return fmt.emax + fmt.bias, ((1 << p) - 1)


def fraction_to_ext(x: Fraction, cw: int, flags: Flags) -> int:
    """An exact value rounded to the 80-bit register format under the control word."""
    if x == 0:
        return 0
    rc, p = (cw >> RC_SHIFT) & 3, PRECISION_BITS[(cw >> PC_SHIFT) & 3]
    sign, e, m = round_value(x, EXTENDED, rc, flags, p)
    if e == -1:
        e, m = overflow_result(bool(sign), EXTENDED, rc, p, flags)
        if e == EXT_EMAX:
            return (sign << 79) | EXT_INF
    if e == 0:                          # denormal: the quantum is 2^(emin - p + 1), as for normals
        return (sign << 79) | (m << (64 - p))
    return (sign << 79) | (e << 64) | (m << (64 - p))


# -- conversions between memory formats and the register format ---------------------------
def from_binary(raw: int, fmt: Format, flags: Flags) -> int:
    """A single or double loaded into a register: exact; SNaN quietened with IE; DE on denormals."""
    fbits = fmt.p - 1
    sign = raw >> (fmt.ebits + fbits)
    e = (raw >> fbits) & ((1 << fmt.ebits) - 1)
    f = raw & ((1 << fbits) - 1)
    s = sign << 79
    if e == (1 << fmt.ebits) - 1:
        if f == 0:
            return s | EXT_INF
        if not f >> (fbits - 1):
            flags.bits |= IE
            f |= 1 << (fbits - 1)
        return s | (EXT_EMAX << 64) | INTEGER_BIT | (f << (63 - fbits))
    if e == 0:
        if f == 0:
            return s
        flags.bits |= DE
        x = Fraction(f, 1 << (fbits + fmt.bias - 1))
        return fraction_to_ext(-x if sign else x, CW_DEFAULT, Flags())
    return s | ((e - fmt.bias + EXT_BIAS) << 64) | INTEGER_BIT | (f << (63 - fbits))


def to_binary(v: int, fmt: Format, cw: int, flags: Flags) -> int:
    """A register stored as single or double (FST): rounded by RC; NaNs quietened and
    truncated; overflow and underflow as Tables 4-10/4-11 (masked responses)."""
    fbits = fmt.p - 1
    sign = sign_of(v)
    s = sign << (fmt.ebits + fbits)
    emax_field = (1 << fmt.ebits) - 1
    if is_nan(v) or is_unsupported(v):
        if is_snan(v) or is_unsupported(v):
            flags.bits |= IE
        if is_unsupported(v):
            return (1 << (fmt.ebits + fbits)) | (emax_field << fbits) | (1 << (fbits - 1))
        return s | (emax_field << fbits) | (1 << (fbits - 1)) | ((mant_of(v) & ~INTEGER_BIT) >> (63 - fbits))
    if is_inf(v):
        return s | (emax_field << fbits)
    if is_zero(v):
        return s
    if is_denormal(v):
        flags.bits |= DE
    rc = (cw >> RC_SHIFT) & 3
    sg, e, m = round_value(to_fraction(v), fmt, rc, flags)
    if e == -1:
        e, m = overflow_result(bool(sg), fmt, rc, fmt.p, flags)
        if e == emax_field:
            return s | (emax_field << fbits)
    if e == 0:
        return s | m
    return s | (e << fbits) | (m & ((1 << fbits) - 1))


def from_int(n: int, flags: Flags) -> int:
    return fraction_to_ext(Fraction(n), CW_DEFAULT, flags) if n else 0


def to_int(v: int, bits: int, rc: int, flags: Flags) -> int:
    """FIST: rounded by ``rc``; NaN, infinity or out of range gives the integer indefinite
    (the most negative integer) with IE (SDM Vol. 1 4.8.3.8)."""
    indefinite = 1 << (bits - 1)
    if is_nan(v) or is_inf(v) or is_unsupported(v):
        flags.bits |= IE
        return indefinite
    if is_zero(v):
        return 0
    if is_denormal(v):
        flags.bits |= DE
    x = to_fraction(v)
    neg = x < 0
    a = -x if neg else x
    n, inexact, away = _round_int(a.numerator, a.denominator, rc, neg)
    n = -n if neg else n
    if not -(1 << (bits - 1)) <= n < (1 << (bits - 1)):
        flags.bits |= IE
        return indefinite
    if inexact:
        flags.bits |= PE
        flags.c1 = 1 if away else 0
    return n & ((1 << bits) - 1)


def round_to_integral(v: int, rc: int, flags: Flags) -> int:
    """FRNDINT: a finite value rounded to an integer in the 80-bit format."""
    if is_nan(v) or is_inf(v) or is_zero(v):
        return quiet(v) if is_nan(v) else v
    x = to_fraction(v)
    neg = x < 0
    a = -x if neg else x
    n, inexact, away = _round_int(a.numerator, a.denominator, rc, neg)
    if inexact:
        flags.bits |= PE
        flags.c1 = 1 if away else 0
    if n == 0:
        return SIGN80 if neg else 0
    return fraction_to_ext(Fraction(-n if neg else n), CW_DEFAULT | (3 << PC_SHIFT), Flags())


# -- arithmetic -------------------------------------------------------------------------------
def propagate_nan(a: int, b: int | None, flags: Flags) -> int:
    """SDM Vol. 1 Table 4-7: SNaN operands signal IE; the result is the NaN with the larger
    significand (the first on a tie of magnitudes), quietened."""
    if is_snan(a) or (b is not None and is_snan(b)):
        flags.bits |= IE
    if b is None or not is_nan(b):
        return quiet(a)
    if not is_nan(a):
        return quiet(b)
    ma, mb = mant_of(a) | QUIET_BIT, mant_of(b) | QUIET_BIT
    if ma == mb:
        return quiet(a) if not sign_of(a) or sign_of(b) else quiet(b)
    return quiet(a) if ma > mb else quiet(b)


def _invalid(flags: Flags) -> int:
    flags.bits |= IE
    return INDEFINITE


def _signed_zero(neg: bool) -> int:
    return SIGN80 if neg else 0


def _inf(neg: bool) -> int:
    return (SIGN80 if neg else 0) | EXT_INF


def _operand_checks(vals, flags: Flags) -> int | None:
    for v in vals:
        if is_unsupported(v):
            return _invalid(flags)
    nans = [v for v in vals if is_nan(v)]
    if nans:
        return propagate_nan(vals[0], vals[1] if len(vals) > 1 else None, flags)
    for v in vals:
        if is_denormal(v):
            flags.bits |= DE
    return None


def add(a: int, b: int, cw: int, flags: Flags, subtract: bool = False) -> int:
    if subtract:
        b ^= SIGN80 if not is_nan(b) else 0
    special = _operand_checks([a, b], flags)
    if special is not None:
        return special
    if is_inf(a) or is_inf(b):
        if is_inf(a) and is_inf(b) and sign_of(a) != sign_of(b):
            return _invalid(flags)
        return a if is_inf(a) else b
    x = to_fraction(a) + to_fraction(b)
    if x == 0:
        if is_zero(a) and is_zero(b) and sign_of(a) == sign_of(b):
            return a
        return _signed_zero(((cw >> RC_SHIFT) & 3) == RC_DOWN)
    return fraction_to_ext(x, cw, flags)


def multiply(a: int, b: int, cw: int, flags: Flags) -> int:
    special = _operand_checks([a, b], flags)
    if special is not None:
        return special
    neg = bool(sign_of(a) ^ sign_of(b))
    if is_inf(a) or is_inf(b):
        if is_zero(a) or is_zero(b):
            return _invalid(flags)
        return _inf(neg)
    if is_zero(a) or is_zero(b):
        return _signed_zero(neg)
    return fraction_to_ext(to_fraction(a) * to_fraction(b), cw, flags)


def divide(a: int, b: int, cw: int, flags: Flags) -> int:
    """a / b."""
    special = _operand_checks([a, b], flags)
    if special is not None:
        return special
    neg = bool(sign_of(a) ^ sign_of(b))
    if is_inf(a):
        return _invalid(flags) if is_inf(b) else _inf(neg)
    if is_inf(b):
        return _signed_zero(neg)
    if is_zero(b):
        if is_zero(a):
            return _invalid(flags)
        flags.bits |= ZE
        return _inf(neg)
    if is_zero(a):
        return _signed_zero(neg)
    return fraction_to_ext(to_fraction(a) / to_fraction(b), cw, flags)


def _isqrt_fraction(x: Fraction, p_bits: int) -> tuple[Fraction, bool]:
    """sqrt(x) to p_bits+2 bits plus a sticky bit folded into an exact-or-not flag."""
    num, den = x.numerator, x.denominator
    # sqrt(num/den) = sqrt(num*den)/den; scale so the root has enough bits.
    k = max(0, 2 * (p_bits + 4) - (num * den).bit_length() // 1)
    k += k & 1
    s = num * den << k
    r = math.isqrt(s)
    exact = r * r == s
    val = Fraction(r, den << (k // 2))
    if not exact:
        val += Fraction(1, den << (k // 2 + 1))    # below half a unit of r: a sticky bit
    return val, exact


def square_root(a: int, cw: int, flags: Flags) -> int:
    special = _operand_checks([a], flags)
    if special is not None:
        return special
    if is_zero(a):
        return a
    if sign_of(a):
        return _invalid(flags)
    if is_inf(a):
        return a
    root, exact = _isqrt_fraction(to_fraction(a), 70)
    return fraction_to_ext(root, cw, flags)


def compare(a: int, b: int, flags: Flags, *, quiet_nan_ok: bool) -> int:
    """The condition codes of FCOM/FUCOM (C3 C2 C0): 000 >, 001 <, 100 =, 111 unordered."""
    if is_nan(a) or is_nan(b) or is_unsupported(a) or is_unsupported(b):
        if not quiet_nan_ok or is_snan(a) or is_snan(b) or is_unsupported(a) or is_unsupported(b):
            flags.bits |= IE
        return C3 | C2 | C0
    if is_denormal(a) or is_denormal(b):
        flags.bits |= DE

    def key(v):
        if is_inf(v):
            return Fraction(-1 if sign_of(v) else 1) * (1 << 20000)
        return to_fraction(v) if not is_zero(v) else Fraction(0)
    x, y = key(a), key(b)
    return C3 if x == y else (C0 if x < y else 0)


def examine(v: int, empty: bool) -> int:
    """FXAM's C3 C2 C0 (SDM Vol. 2A FXAM table) and C1 = the sign."""
    c1 = C1 if sign_of(v) else 0
    if empty:
        return C3 | C0 | c1
    if is_unsupported(v):
        return c1
    if is_nan(v):
        return C0 | c1
    if is_inf(v):
        return C2 | C0 | c1
    if is_zero(v):
        return C3 | c1
    if is_denormal(v):
        return C3 | C2 | c1
    return C2 | c1


def remainder(a: int, b: int, cw: int, flags: Flags, ieee: bool) -> tuple[int, int]:
    """FPREM (truncating quotient) and FPREM1 (nearest): (result, condition codes).
    A partial remainder (C2 = 1) when the exponents differ by 64 or more (SDM Vol. 2A FPREM)."""
    special = _operand_checks([a, b], flags)
    if special is not None:
        return special, 0
    if is_inf(a) or is_zero(b):
        return _invalid(flags), 0
    if is_inf(b) or is_zero(a):
        return a, 0
    x, y = to_fraction(a), to_fraction(b)
    ea = exp_of(a) or 1
    eb = exp_of(b) or 1
    if ea - eb >= 64:
        # Partial: reduce by y * 2^(d - n) with n in 32..63 (Intel uses an implementation-
        # specific N; 32 is what the SDM's pseudo-code suggests for the 80387).
        n = 32
        scale = Fraction(2) ** (ea - eb - n)
        qf = x / (y * scale)
        q = int(qf)                          # truncation toward zero
        r = x - q * y * scale
        return (fraction_to_ext(r, cw | (3 << PC_SHIFT), Flags()) if r else _signed_zero(sign_of(a))), C2
    qf = x / y
    if ieee:
        q = round(qf)                        # ties to even, as Python's round on Fraction
    else:
        q = int(qf)
    r = x - q * y
    qa = abs(q)
    cc = (C0 if qa & 4 else 0) | (C3 if qa & 2 else 0) | (C1 if qa & 1 else 0)
    if r == 0:
        return _signed_zero(sign_of(a)), cc
    return fraction_to_ext(r, cw | (3 << PC_SHIFT), Flags()), cc


def scale(a: int, b: int, cw: int, flags: Flags) -> int:
    """FSCALE: a * 2^trunc(b)."""
    special = _operand_checks([a, b], flags)
    if special is not None:
        return special
    if is_inf(b):
        if sign_of(b):
            return _invalid(flags) if is_inf(a) else _signed_zero(sign_of(a))
        return _invalid(flags) if is_zero(a) else _inf(sign_of(a))
    if is_inf(a) or is_zero(a):
        return a
    n = int(to_fraction(b))
    n = max(-70000, min(70000, n))
    x = to_fraction(a) * (Fraction(2) ** n)
    return fraction_to_ext(x, cw, flags)


def extract(v: int, flags: Flags) -> tuple[int, int]:
    """FXTRACT: (exponent as a value, significand with exponent 0)."""
    if is_zero(v):
        flags.bits |= ZE
        return _inf(True), v
    if is_inf(v):
        return EXT_INF, v
    x = to_fraction(v)
    a = abs(x)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if a < Fraction(2) ** e:
        e -= 1
    sig = fraction_to_ext(x / (Fraction(2) ** e), CW_DEFAULT, Flags())
    return from_int(e, Flags()), sig


def transcendental(fn, vals, cw: int, flags: Flags) -> int:
    """fn over doubles (the host's libm), rounded to the control word with PE."""
    try:
        r = fn(*[float(to_fraction(v)) for v in vals])
    except (ValueError, OverflowError, ZeroDivisionError):
        return _invalid(flags)
    if math.isnan(r):
        return _invalid(flags)
    if math.isinf(r):
        return _inf(r < 0)
    if r == 0:
        return _signed_zero(math.copysign(1, r) < 0)
    flags.bits |= PE
    return fraction_to_ext(Fraction(r), cw, Flags())


# -- constants (SDM Vol. 2A FLD1/FLDL2T/FLDL2E/FLDPI/FLDLG2/FLDLN2/FLDZ) -------------------
# The 66-bit constants the FPU rounds by RC (SDM Vol. 1 8.3.8); as 80-bit values rounded to nearest.
CONSTANTS = {
    "one": (0x3FFF << 64) | INTEGER_BIT,
    "l2t": (0x4000 << 64) | 0xD49A784BCD1B8AFE,
    "l2e": (0x3FFF << 64) | 0xB8AA3B295C17F0BC,
    "pi": (0x4000 << 64) | 0xC90FDAA22168C235,
    "lg2": (0x3FFD << 64) | 0x9A209A84FBCFF799,
    "ln2": (0x3FFE << 64) | 0xB17217F7D1CF79AC,
    "zero": 0,
}
# Whether rounding toward -inf/0 lowers each constant by one unit (its 66-bit value lies
# below the nearest 64-bit one): SDM Vol. 1 8.3.8, Table 8-?: pi, lg2, ln2, l2e round down;
# l2t rounds up to nearest.
CONSTANT_ROUNDS_UP = {"pi": True, "lg2": True, "ln2": True, "l2e": True, "l2t": False}


def constant(name: str, cw: int) -> int:
    v = CONSTANTS[name]
    rc = (cw >> RC_SHIFT) & 3
    if name in CONSTANT_ROUNDS_UP:
        up = CONSTANT_ROUNDS_UP[name]
        if up and rc in (RC_DOWN, RC_ZERO):
            v -= 1
        elif not up and rc == RC_UP:
            v += 1
    return v
