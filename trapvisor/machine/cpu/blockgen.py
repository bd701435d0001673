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
  (``FORMS``: MOV, MOVZX/MOVSX, LEA, the ALU family, INC/DEC/NEG/NOT,
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

Modules.  This one is the driver: when a block is compiled (``HOT``,
``compile_block``), the two passes of ``generate``, and the assembly of the
function around the generated body (entry guard, self-loop, exit with
chaining, fault handler).  ``blockgen_emit.py`` is the emitter (``Gen``:
registers, memory fast paths, fault points, fallbacks; the ``FORMS``
registry), ``blockgen_flags.py`` the flag producers (``Prod``), and the forms
themselves are in ``blockgen_move.py`` (data movement), ``blockgen_arith.py``
(arithmetic, logic, shifts, multiply and divide) and ``blockgen_branch.py``
(stack, near jumps, calls and returns).

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

from . import blockgen_arith, blockgen_branch, blockgen_move  # noqa: F401  (register the FORMS)
from .audit import is_sensitive_form
from .blockgen_arith import div32, idiv32
from .blockgen_branch import JCC
from .blockgen_emit import FORMS, M32, REG, Gen
from .blockgen_flags import Prod, rot_flags, sar_flags, shl_flags, shr_flags
from .constants import GP
from .cpu import FLAT, CpuFault
from .flags import CONDITIONS, get_cf, mul_flags
from .operands import K, Unsupported

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

_LITTLE = sys.byteorder == "little"


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
    g = Gen(cpu, blk, dead)
    ops = blk.ops
    n = blk.n
    g.loop = allow_loop and blk.fallthrough is None and _self_target(blk)
    term = None
    # An auditor wraps the closures of sensitive instructions, and sensitive-instruction
    # exiting replaces them: those must run as closures.
    audited = getattr(cpu, "auditor", None) is not None or bool(cpu.intercepts.sensitive_exiting)
    for i, ins in enumerate(blk.ilist):
        g.i = i
        last = i == n - 1
        if g.stored:
            g.stored = False
            g.end_if_code_modified()
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
    return (ins.mnemonic == Mn.JMP or ins.mnemonic in JCC) \
        and ins.op0_kind == K.NEAR_BRANCH32 and (ins.near_branch_target & M32) == blk.eip


def _chain_refs_livein(p: Prod) -> bool:
    """Does this producer's tuple depend on the flags live into the block?"""
    while p.kind in ("cond", "rot"):
        p = p.prev
    return p.kind == "in"


def _assemble(g: Gen, term) -> tuple[str, dict]:
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


def _handler_mat(g: Gen, p: Prod) -> str:
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


def _names(g: Gen) -> dict:
    cpu = g.cpu
    e = _env(cpu)
    env = dict(g.env)
    env.update(cpu=cpu, regs=cpu.regs, ram=cpu.ram, m16=e.m16, m32=e.m32, cp=cpu.code_pages,
               rd8=cpu.rd8, rd16=cpu.rd16, rd32=cpu.rd32,
               wr8=cpu.wr8, wr16=cpu.wr16, wr32=cpu.wr32, rl=cpu.rlim, wl=cpu.wlim, CpuFault=CpuFault, GP=GP,
               C=CONDITIONS, GCF=get_cf, SHLF=shl_flags, SHRF=shr_flags, SARF=sar_flags,
               MULF=mul_flags, ROTF=rot_flags, DIVU=div32, DIVS=idiv32, cache_get=cpu.cache.get)
    return env
