"""Block-tier forms of arithmetic and logic: ADD ADC SUB SBB CMP AND OR XOR TEST,
INC DEC NEG NOT, SHL/SAL SHR SAR, ROL ROR, IMUL, MUL, DIV, IDIV.

The semantics of the closures in ``ops_alu.py`` and ``ops_shift.py``, from
SDM Vol. 2, inlined through the emitter (``blockgen_emit.py``).  Each
producer records its flags as a ``Prod`` over fresh locals (``a3``, ``b3``,
``r3``...); one whose flags nothing observes (``i in g.dead``, see
``blockgen.generate``) computes its result only.  Forms this tier does not
inline (RCL/RCR, SHLD/SHRD, 8- and 16-bit MUL/DIV...) run their closures.
"""

from __future__ import annotations

import iced_x86 as iced

from .blockgen_emit import form, gpr
from .blockgen_flags import Prod
from .constants import DE
from .cpu import CpuFault
from .operands import K, MASK, SIGN, Unsupported, imm_value, op_size

Mn = iced.Mnemonic


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
    if not mem0 and not gpr(ins, 0):
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
    elif gpr(ins, 0):
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
    elif gpr(ins, 0):
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


# Run-time helpers of DIV and IDIV r/m32 (the generated code calls them as DIVU, DIVS).
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
