"""The block-translation tier (blockgen.py) against the closure tier and unicorn.

* The unicorn suite of ``test_integer_vs_unicorn.py`` is collected a second
  time from this module with the block tier forced on and ``HOT = 1`` (every
  block gets its generated function before its first execution), so each
  instruction form is checked against the oracle in both tiers.
* Random programs in the style of gcc -O2 output (the forms the generator
  inlines, flag consumers after producers, loops that become self-loops,
  calls, fallback instructions in between) run on unicorn and on our CPU in
  both tiers, with paging off and on, and in chunks of random instruction
  budgets; the closure and block tiers must agree on everything after every
  chunk (registers, EIP, EFLAGS, instruction count, memory), and both with
  unicorn at the end.
* A fault in the middle of a block (page fault on a load or a store, #DE
  from a fallback, a page fault in the k-th iteration of a self-loop) leaves
  the same registers, flags, EIP, CR2 and instruction count in both tiers.
* Self-modifying code: a store into the running block's page, and a patch
  of a hot (generated) function, are seen by the next execution.
"""

from __future__ import annotations

import functools
import os
import random
import subprocess
import tempfile

import pytest

from trapvisor.machine.bus import IoBus
from trapvisor.machine.cpu import CPU, MachineStop, blockgen, enter_flat_protected_mode
from trapvisor.machine.cpu.exits import ExceptionExit
from trapvisor.machine.memory import PhysicalMemory

from . import oracle as O
from .oracle import CODE, DATA, DATA_MID, MEM_SIZE, STACK, STACK_SIZE, STACK_TOP, Case

PD = 0x30000          # page directory and one page table, above the stack area
PT = 0x31000


@pytest.fixture
def block_tier(monkeypatch):
    monkeypatch.setattr(CPU, "block_tier", True)
    monkeypatch.setattr(blockgen, "HOT", 1)
    monkeypatch.setattr(blockgen, "STRICT", True)


# ------------------------------------------------ the unicorn suite, block tier
try:
    from . import test_integer_vs_unicorn as _suite
except Exception:  # pragma: no cover - the suite is being written by someone else
    _suite = None


def _block_tier_copy(test):
    """A new function object running ``test`` (marking the original would change their module)."""
    @functools.wraps(test)
    def copy(*args, **kwargs):
        return test(*args, **kwargs)
    copy.pytestmark = [*getattr(test, "pytestmark", []), pytest.mark.usefixtures("block_tier").mark]
    return copy


if _suite is not None:
    for _name in dir(_suite):
        if _name.startswith("test_") and callable(getattr(_suite, _name)):
            globals()[_name + "__block_tier"] = _block_tier_copy(getattr(_suite, _name))


# ------------------------------------------------------------------- harness
def assemble_many(snippets: list[str]) -> list[bytes]:
    """Assemble AT&T snippets with one run of as/ld; each is followed by a HLT.

    Snippet i sits at offset i * 64 KiB of the object's text; it runs at CODE,
    which only matters for absolute references to its own code (the SMC tests
    use snippet 0, written as ``label - s0 + 0x1000``).
    """
    d = tempfile.mkdtemp(prefix="bg-")
    src = [".code32"]
    for i, s in enumerate(snippets):
        src += [".balign 65536", f"s{i}:", s, "hlt", f"e{i}:"]
    with open(os.path.join(d, "a.s"), "w") as f:
        f.write("\n".join(src) + "\n")
    subprocess.run(["as", "--32", "a.s", "-o", "a.o"], check=True, cwd=d, capture_output=True)
    # No link step: every reference is relative or an assembly-time constant.
    subprocess.run(["objcopy", "-O", "binary", "-j", ".text", "a.o", "a.bin"],
                   check=True, cwd=d, capture_output=True)
    syms = {}
    for line in subprocess.run(["nm", "a.o"], check=True, cwd=d, capture_output=True,
                               text=True).stdout.splitlines():
        parts = line.split()
        if len(parts) == 3:
            syms[parts[2]] = int(parts[0], 16)
    with open(os.path.join(d, "a.bin"), "rb") as f:
        blob = f.read()
    return [blob[syms[f"s{i}"]:syms[f"e{i}"]] for i in range(len(snippets))]


def make_cpu(case: Case, tier: bool, paging: bool, hot: int = 1, unmapped=(), setup=None):
    mem = PhysicalMemory(MEM_SIZE)
    mem.write(CODE, case.code)
    for addr, b in case.writes:
        mem.write(addr, b)
    cpu = CPU(mem, IoBus())
    enter_flat_protected_mode(cpu)
    cpu.block_tier = tier
    cpu.regs[:] = case.regs
    cpu.set_eflags((case.eflags & O.COMPARED_FLAGS) | 2)
    cpu.eip = CODE
    if paging:
        for p in range(MEM_SIZE >> 12):
            pte = (p << 12) | 3 if p not in unmapped else 0
            mem.write_u32(PT + 4 * p, pte)
        mem.write_u32(PD, PT | 3)
        cpu.set_cr3(PD)
        cpu.set_cr0(cpu.cr0 | 0x80000000)
    # Every event exits (run_chunk records it): exceptions, INT n, external interrupts.
    ic = cpu.intercepts
    ic.exception_bitmap, ic.software_interrupt_exiting, ic.external_interrupt_exiting = 0xFFFFFFFF, True, True
    cpu.test_faults = []
    if setup is not None:
        setup(cpu)
    return cpu


def run_chunk(c, n):
    """Run ``n`` instructions; an exception exit is recorded with the state it left
    and stops the CPU for good."""
    ex = c.run(n)
    if isinstance(ex, ExceptionExit):
        c.test_faults.append((ex.vector, ex.error_code, list(c.regs), c.eip, c.get_eflags(),
                              c.icount, c.cr2))
        c.stop = MachineStop("test", f"exception {ex.vector}")


def state(cpu):
    return (list(cpu.regs), cpu.eip, cpu.get_eflags() & (O.COMPARED_FLAGS | 2), cpu.icount,
            cpu.halted, cpu.test_faults[:], cpu.cr2,
            bytes(cpu.mem.ram[DATA:DATA + O.DATA_SIZE]), bytes(cpu.mem.ram[STACK:STACK + STACK_SIZE]))


def run_both(case: Case, paging: bool, chunks, hot: int, unmapped=(), setup=None):
    """Run the closure and block tiers in lock-step chunks; return both CPUs."""
    old = blockgen.HOT, blockgen.STRICT
    blockgen.HOT, blockgen.STRICT = hot, True
    try:
        a = make_cpu(case, False, paging, unmapped=unmapped, setup=setup)
        b = make_cpu(case, True, paging, unmapped=unmapped, setup=setup)
        for n in chunks:
            for c in (a, b):
                if c.stop is None and not c.halted:
                    run_chunk(c, n)
            sa, sb = state(a), state(b)
            if sa != sb:
                raise AssertionError("block tier differs from the closure tier:\n"
                                     + case.describe() + "\n" + _state_diff(sa, sb))
            if a.stop is not None or a.halted:
                break
        return a, b
    finally:
        blockgen.HOT, blockgen.STRICT = old


def _state_diff(sa, sb) -> str:
    names = ("regs", "eip", "eflags", "icount", "halted", "faults", "cr2", "data", "stack")
    out = []
    for n, x, y in zip(names, sa, sb):
        if x != y:
            if isinstance(x, bytes):
                i = next(i for i in range(len(x)) if x[i] != y[i])
                out.append(f"  {n}: first difference at +{i:#x}: closure {x[i:i+8].hex()} block {y[i:i+8].hex()}")
            elif n == "regs":
                out.append("  regs: " + ", ".join(f"{O.REG_NAMES[i]} closure {p:08x} block {q:08x}"
                                                  for i, (p, q) in enumerate(zip(x, y)) if p != q))
            else:
                out.append(f"  {n}: closure {x!r:.300} block {y!r:.300}")
    return "\n".join(out)


# ---------------------------------------------------------- random programs
R32 = ["%eax", "%ebx", "%edx", "%esi", "%ebp"]
R16 = ["%ax", "%bx", "%dx", "%si", "%bp"]
R8 = ["%al", "%bl", "%dl", "%ah", "%bh", "%dh"]
CC = ["o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le", "g"]
SUF = {4: "l", 2: "w", 1: "b"}


class ProgGen:
    """gcc-flavoured random straight-line code; EDI points at the data area, ECX counts loops."""

    def __init__(self, rng: random.Random, fallbacks: bool = True):
        self.r = rng
        self.fallbacks = fallbacks
        self.label = 0

    def reg(self, size):
        return self.r.choice({4: R32, 2: R16, 1: R8}[size])

    def imm(self, size):
        r = self.r
        v = r.choice([0, 1, 2, 0x7F, 0x80, 0xFF, r.getrandbits(8), r.getrandbits(size * 8),
                      (1 << (size * 8)) - 1, 1 << (size * 8 - 1)])
        return f"${v:#x}"

    def mem(self, size):
        r = self.r
        off = r.randrange(-0x40, 0x40) * r.choice([1, 1, 1, 2, 4]) + r.choice([0, 0, 0, 1, 2, 3])
        form = r.randrange(4)
        if form == 0:
            return f"{off}(%edi)", []
        if form == 1:
            return f"{DATA_MID + off:#x}", []
        if form == 2:
            return f"{off}(%edi,%esi,{r.choice([1, 2, 4, 8])})", ["and $0x1f, %esi"]
        return f"(%edi)", []

    def rm(self, size):
        if self.r.random() < 0.4:
            return self.mem(size)
        return self.reg(size), []

    def one(self) -> list[str]:
        r = self.r
        size = r.choice([4, 4, 4, 4, 2, 1, 1])
        s = SUF[size]
        k = r.randrange(25)
        if k < 4:       # ALU
            op = r.choice(["add", "sub", "and", "or", "xor", "cmp", "test", "adc", "sbb"])
            form = r.randrange(5)
            if form == 0:
                return [f"{op}{s} {self.reg(size)}, {self.reg(size)}"]
            if form == 1:
                return [f"{op}{s} {self.imm(size)}, {self.reg(size)}"]
            m, pre = self.mem(size)
            if form == 2:
                return pre + [f"{op}{s} {m}, {self.reg(size)}"] if op != "test" else \
                    pre + [f"test{s} {self.reg(size)}, {m}"]
            if form == 3:
                return pre + [f"{op}{s} {self.reg(size)}, {m}"]
            return pre + [f"{op}{s} {self.imm(size)}, {m}"]
        if k < 7:       # MOV
            form = r.randrange(5)
            if form == 0:
                return [f"mov{s} {self.reg(size)}, {self.reg(size)}"]
            if form == 1:
                return [f"mov{s} {self.imm(size)}, {self.reg(size)}"]
            m, pre = self.mem(size)
            if form == 2:
                return pre + [f"mov{s} {m}, {self.reg(size)}"]
            if form == 3:
                return pre + [f"mov{s} {self.reg(size)}, {m}"]
            return pre + [f"mov{s} {self.imm(size)}, {m}"]
        if k == 7:
            op = r.choice(["inc", "dec", "neg", "not"])
            x, pre = self.rm(size)
            return pre + [f"{op}{s} {x}"]
        if k == 8:
            base, idx = r.choice(R32), r.choice(R32)
            dst = r.choice(R32 + R16[:2])
            return [f"lea {r.randrange(-300, 300)}({base},{idx},{r.choice([1, 2, 4, 8])}), {dst}"]
        if k == 9:
            ssize = r.choice([1, 2])
            dsize = 4 if ssize == 2 else r.choice([2, 4])
            op = r.choice(["movz", "movs"]) + SUF[ssize] + SUF[dsize]
            x, pre = self.rm(ssize)
            return pre + [f"{op} {x}, {self.reg(dsize)}"]
        if k == 10:     # shifts
            op = r.choice(["shl", "shr", "sar", "sal"])
            x, pre = self.rm(size)
            if r.random() < 0.3:
                return pre + [f"{op}{s} %cl, {x}"]
            c = r.choice([0, 1, 1, 2, 7, 8, 15, 16, 31, r.randrange(32)])
            return pre + [f"{op}{s} ${c}, {x}"]
        if k == 11:     # multiply
            size = r.choice([4, 4, 2])
            s = SUF[size]
            form = r.randrange(4)
            x, pre = self.rm(size)
            if form == 0:
                return pre + [f"imul{s} {x}, {self.reg(size)}"]
            if form == 1:
                return pre + [f"imul{s} {self.imm(size) if size == 4 else '$' + str(r.randrange(-128, 127))}, {x}, {self.reg(size)}"]
            x, pre = self.rm(4)
            return pre + [f"{'imul' if form == 2 else 'mul'}l {x}"]
        if k == 12:
            return [r.choice(["cltd", "cwtl", "nop", "xchg %eax, %ebx", "xchg %dl, %bh",
                              "xchg %si, %bp", "bswap %edx", "cld", "std\ncld"])]
        if k == 23:     # rotates, divisions
            x, pre = self.rm(size)
            op = r.choice(["rol", "ror"])
            if r.random() < 0.5:
                return pre + [f"{op}{s} ${r.choice([0, 1, 3, 8, 16, 31, r.randrange(32)])}, {x}"]
            if r.random() < 0.5:
                return pre + [f"{op}{s} %cl, {x}"]
            # divisors that cannot overflow: EDX:EAX = zero- or sign-extended EAX
            return r.choice([["or $1, %ebx", "xor %edx, %edx", "divl %ebx"],
                             ["and $0x7fff, %ebx", "or $1, %ebx", "cltd", "idivl %ebx"],
                             ["orl $1, (%edi)", "xor %edx, %edx", "divl (%edi)"]])
        if k == 13:
            m, pre = self.mem(size)
            return pre + [f"xchg{s} {self.reg(size)}, {m}"]
        if k == 14:     # SETcc
            x, pre = self.rm(1)
            return self.producer() + pre + [f"set{r.choice(CC)} {x}"]
        if k == 15:     # CMOVcc
            size = r.choice([4, 2])
            x, pre = self.rm(size)
            return self.producer() + pre + [f"cmov{r.choice(CC)}{SUF[size]} {x}, {self.reg(size)}"]
        if k == 16:     # push/pop
            src = r.choice([r.choice(R32), "$" + str(r.randrange(-1000, 1000)), self.mem(4)[0]])
            if src.startswith("0x") or "(" in src:
                src = src if "%esi" not in src else "(%edi)"
                return [f"pushl {src}", f"pop {r.choice(R32)}"]
            return [f"push {src}", f"pop {r.choice(R32)}"]
        if k == 17:     # forward conditional skip (ends a block)
            self.label += 1
            L = self.label
            return self.producer() + [f"j{r.choice(CC)} 9{L}f"] + self.one() + [f"9{L}:"]
        if k == 18:     # call / ret
            self.label += 1
            L = self.label
            return [f"call 7{L}f", f"jmp 8{L}f", f"7{L}:"] + self.one() + \
                [r.choice(["ret", "ret $0"]), f"8{L}:"]
        if k == 19:     # flag consumers that read CF via ADC/SBB/INC
            return self.producer() + [f"{r.choice(['adc', 'sbb'])}l {self.reg(4)}, {self.reg(4)}"]
        if k == 20 and self.fallbacks:
            return [r.choice(["pushf", "pushfl"]), f"pop {r.choice(R32)}"]
        if k == 21 and self.fallbacks and r.random() < 0.3:
            # POPF and SAHF end the block (END kind): the flags they load must survive
            return self.producer() + r.choice([
                ["pushf", f"xorl ${r.getrandbits(12) & 0x8d5:#x}, (%esp)", "popf"],
                [f"mov ${r.getrandbits(8):#x}, %ah", "sahf"]])
        if k == 21 and self.fallbacks:
            return [r.choice(["bt $3, %eax", "bts %ebx, %edx", "rol $3, %eax", "rcr $1, %bl",
                              "lahf", "cld", "bsf %eax, %edx", "shld $3, %eax, %ebx",
                              "or $1, %ebx\nxor %edx, %edx\ndiv %ebx", "sahf", "stc", "cmc"])]
        if k == 22:
            return self.producer()
        return [f"mov{s} {self.reg(size)}, {self.reg(size)}"]

    def producer(self) -> list[str]:
        r = self.r
        size = r.choice([4, 4, 2, 1])
        s = SUF[size]
        op = r.choice(["add", "sub", "and", "or", "xor", "cmp", "test", "cmp", "inc", "dec",
                       "neg", "shl", "shr", "sar", "imul"])
        if op in ("inc", "dec", "neg"):
            return [f"{op}{s} {self.reg(size)}"]
        if op in ("shl", "shr", "sar"):
            return [f"{op}{s} ${r.randrange(1, 8)}, {self.reg(size)}"]
        if op == "imul":
            return [f"imull {self.reg(4)}, {self.reg(4)}"]
        return [f"{op}{s} {r.choice([self.reg(size), self.imm(size)])}, {self.reg(size)}"]

    def program(self) -> str:
        r = self.r
        out = []
        for _ in range(r.randrange(1, 3)):
            body = []
            for _ in range(r.randrange(1, 9)):
                body += self.one()
            n = r.randrange(1, 12)
            self.label += 1
            L = self.label
            out += [f"mov ${n}, %ecx", f"6{L}:"] + body
            out += r.choice([["dec %ecx", f"jnz 6{L}b"], ["sub $1, %ecx", f"jne 6{L}b"],
                             ["add $-1, %ecx", f"jg 6{L}b"], ["dec %ecx", f"cmp $0, %ecx", f"jne 6{L}b"]])
            for _ in range(r.randrange(0, 4)):
                out += self.one()
        return "\n".join(out)


def random_case(rng: random.Random, code: bytes) -> Case:
    regs = [rng.choice([0, 1, 0xFFFFFFFF, 0x80000000, rng.getrandbits(32), rng.getrandbits(8)])
            for _ in range(8)]
    regs[4] = STACK_TOP
    regs[7] = DATA_MID
    case = Case(code, regs, eflags=rng.getrandbits(12) & O.COMPARED_FLAGS)
    for off in range(0, O.DATA_SIZE, 4):
        case.write(DATA + off, rng.getrandbits(32), 4)
    return case


def _programs(seed: int, n: int, fallbacks: bool = True):
    rng = random.Random(seed)
    pg = ProgGen(rng, fallbacks)
    texts = [pg.program() for _ in range(n)]
    codes = assemble_many(texts)
    return [(t, random_case(rng, c)) for t, c in zip(texts, codes)]


N_PROGRAMS = O.scaled_examples(60)


@pytest.mark.parametrize("seed", range(6))
def test_random_programs_three_ways(seed):
    """Closure tier == block tier (paging off and on, chunked budgets), and == unicorn."""
    rng = random.Random(seed * 7919)
    for text, case in _programs(seed, N_PROGRAMS, fallbacks=seed % 2 == 0):
        chunks = [rng.choice([1, 2, 3, 5, 8, 13, 40, 200]) for _ in range(30)] + [100000]
        for paging in (False, True):
            a, b = run_both(case, paging, chunks, hot=rng.choice([1, 1, 2, 3]))
            assert a.halted, (a.stop, text)
        ref = O.run_unicorn(case)
        b.eip -= 1        # our CPU executed the final HLT; unicorn stops in front of it
        ours = O.Outcome(list(b.regs), b.eip, b.get_eflags(), None,
                         bytes(b.mem.ram[DATA:DATA + O.DATA_SIZE]),
                         bytes(b.mem.ram[STACK:STACK + STACK_SIZE]))
        diffs = O.compare(case, ref, ours)
        assert not diffs, "differs from unicorn:\n" + case.describe() + "\n  " + "\n  ".join(diffs)


def test_block_tier_really_ran():
    """The random programs above do execute generated functions (and self-loops)."""
    _, case = _programs(1, 1)[0]
    a, b = run_both(case, True, [100000], hot=1)
    gens = [blk for blk in b.cache.values() if blk.gen is not None]
    assert gens, "no block got a generated function"
    assert all(blk.gen is None for blk in a.cache.values())


# ----------------------------------------------------------- faults mid-block
def _fault_case(asm: str, **regs) -> Case:
    code = assemble_many([asm])[0]
    r = [0x11, 0x22, 0x33, 0x44, STACK_TOP, 0x66, 0x77, DATA_MID]
    for k, v in regs.items():
        r[O.REG_NAMES.index(k.upper())] = v
    case = Case(code, r, eflags=0x8D5)
    return case


UNMAPPED = DATA + 0x3000          # a data page left not-present when paging is on


@pytest.mark.parametrize("hot", [1, 3])
@pytest.mark.parametrize("asm", [
    # load fault after register and flag updates in the same block
    f"add $5, %eax\ncmp %eax, %ebx\nmov {UNMAPPED:#x}, %edx\ninc %ebx\nhlt",
    # store fault, flags of a shift live
    f"mov $3, %ecx\nshl $3, %eax\nmov %eax, {UNMAPPED + 8:#x}\nhlt",
    # read-modify-write fault; INC's CF chain
    f"stc\ninc %eax\naddl $1, {UNMAPPED + 0x10:#x}\nhlt",
    # push into an unmapped stack page
    f"mov ${UNMAPPED + 0x800:#x}, %esp\nsub $1, %eax\npush %eax\nhlt",
    # a self-loop walking into the unmapped page: faults in a late iteration
    f"mov ${UNMAPPED - 0x40:#x}, %esi\n1: add (%esi), %eax\nadd $4, %esi\ncmp $0, %esi\njne 1b\nhlt",
    # same, the live flags at the fault come from the previous iteration's CMP
    f"mov ${UNMAPPED - 0x40:#x}, %esi\n1: movl (%esi), %ebx\nadd $4, %esi\ncmp $0, %esi\njne 1b\nhlt",
    # a store walking into it; flags from a shift by CL
    f"mov ${UNMAPPED - 0x20:#x}, %esi\nmov $3, %ecx\n1: shl %cl, %eax\nmov %eax, (%esi)\nlea 4(%esi), %esi\njmp 1b",
    # #DE from a fallback (DIV) in the middle of a generated block
    "mov $5, %eax\nadd %eax, %ebx\nxor %edx, %edx\nmov $0, %ecx\ndiv %ecx\nhlt",
    # ROL's flags (CF/OF from the result, the rest from the flags live into the block) at a fault
    f"rol $5, %eax\nmov %eax, {UNMAPPED:#x}\nhlt",
    f"sub %ebx, %eax\nror %cl, %eax\nmovl {UNMAPPED:#x}, %ebx\nhlt",
    # #DE from a generated IDIV (quotient overflow) and DIV by zero
    "mov $0x80000000, %eax\ncltd\nmov $-1, %ebx\nadd $1, %esi\nidiv %ebx\nhlt",
    "xor %ebx, %ebx\nshl $2, %esi\ndivl %ebx\nhlt",
    # a REP SCAS/CMPS (a fallback) that compares one element, then faults on the next:
    # the flags are those of that comparison, not of the INC before it (CI found this)
    f"inc %eax\nmov ${UNMAPPED - 1:#x}, %edi\nmov $3, %ecx\nrepne scasb\nhlt",
    f"inc %eax\nmov ${UNMAPPED - 2:#x}, %esi\nmov ${DATA:#x}, %edi\nmov $3, %ecx\nrepe cmpsw\nhlt",
    # a call whose push faults, then a ret
    f"mov ${UNMAPPED + 0x10:#x}, %esp\nneg %eax\ncall 1f\n1: ret",
])
def test_fault_mid_block_exact(asm, hot):
    case = _fault_case(asm)
    for _ in range(2):     # run the faulting code twice so that it is hot in the second CPU run
        a, b = run_both(case, True, [100000], hot=hot, unmapped={UNMAPPED >> 12})
        assert a.test_faults, "the snippet did not fault"
        assert a.test_faults == b.test_faults


def test_fault_in_hot_loop_after_many_iterations():
    """A page fault in iteration ~1000 of a generated self-loop, chunked budgets."""
    asm = f"mov ${UNMAPPED - 0x1000:#x}, %esi\nxor %eax, %eax\n1: add (%esi), %eax\nadd $4, %esi\ndec %edx\njne 1b\nhlt"
    case = _fault_case(asm, edx=0xFFFFFFFF)
    a, b = run_both(case, True, [7, 100, 1000, 5, 100000], hot=4, unmapped={UNMAPPED >> 12})
    assert a.test_faults and a.test_faults == b.test_faults
    assert a.test_faults[0][0] == 14 and a.test_faults[0][6] == UNMAPPED


# ------------------------------------------------------- self-modifying code
def test_store_into_running_block():
    """Each iteration rewrites the immediate of an ADD earlier in its own block."""
    asm = "mov $5, %ecx\nxor %eax, %eax\n1: add $1, %eax\nmovb %cl, (1b + 2 - s0 + 0x1000)\ndec %ecx\njnz 1b\nhlt"
    case = _fault_case(asm)
    for paging in (False, True):
        a, b = run_both(case, paging, [1, 2, 3, 100000], hot=1)
        assert b.halted and b.regs[0] == 1 + 5 + 4 + 3 + 2
    ref = O.run_unicorn(case)
    assert ref.regs[0] == b.regs[0]


def test_patch_hot_function():
    """A called function runs hot (generated), is patched, and the next calls see the patch."""
    asm = """
        mov $40, %ecx
        xor %eax, %eax
    1:  call 2f
        cmp $20, %ecx
        jne 3f
        movl $7, (4f + 1 - s0 + 0x1000)     # patch the immediate of the MOV below
    3:  dec %ecx
        jnz 1b
        hlt
    2:  add %ecx, %eax
    4:  mov $1, %edx
        add %edx, %eax
        ret
    """
    case = _fault_case(asm)
    expect = sum(range(1, 41)) + 21 * 1 + 19 * 7     # calls with ECX 40..20 see 1, 19..1 see 7
    for paging in (False, True):
        for hot in (1, 4):
            a, b = run_both(case, paging, [13, 100000], hot=hot)
            assert b.halted and b.regs[0] == expect, hex(b.regs[0])
            assert any(blk.gen is not None for blk in b.cache.values())


# --------------------------------------------------------------- the switch
def test_tier_switch_and_env():
    _, case = _programs(2, 1)[0]
    cpu = make_cpu(case, False, True)
    cpu.run(100000)
    assert all(blk.gen is None for blk in cpu.cache.values())
    code = "import trapvisor.machine.cpu as c; print(c.CPU.block_tier)"
    env = dict(os.environ, TRAPVISOR_NO_BLOCKGEN="1")
    import sys
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout
    assert out.strip() == "False"


def test_guard_falls_back_to_closures():
    """A generated function refuses to run in a context it was not made for."""
    asm = "mov $50, %ecx\n1: addl $1, (%edi)\ndec %ecx\njnz 1b\nhlt"
    case = _fault_case(asm)
    old = blockgen.HOT
    blockgen.HOT = 1
    try:
        cpu = make_cpu(case, True, False)
        cpu.run(20)
        blk = next(b for b in cpu.cache.values() if b.gen is not None)
        cpu.paging = True          # pretend: the function was made for paging off
        assert blk.gen(1 << 60) is False
        cpu.paging = False
        cpu.run(100000)
        assert cpu.halted and cpu.mem.read_u32(DATA_MID) == 50
    finally:
        blockgen.HOT = old


@pytest.mark.parametrize("which", ["cs", "ds", "ss16"])
def test_non_flat_segments_run_as_closures(which):
    """A code or data segment with a non-zero base: the generated code (specialised for flat
    segments) must not run; both tiers give the same result."""
    from trapvisor.machine.cpu import CS, DS

    asm = "mov $30, %ecx\n1: addl %ecx, (%edi)\nadd %ecx, %eax\ndec %ecx\njnz 1b\ncall 2f\nhlt\n2: ret"

    def setup(cpu):
        if which == "cs":
            cpu.set_segment_cache(CS, 0x08, 0x100, 0xFFFFF, 0xC09B)
            cpu.eip = CODE - 0x100
        elif which == "ds":
            cpu.set_segment_cache(DS, 0x10, 0x40, 0xFFFFF, 0xC093)
        else:   # a 16-bit stack segment based at STACK: SP wraps at 64 KiB
            from trapvisor.machine.cpu import SS
            cpu.set_segment_cache(SS, 0x18, STACK, 0xFFFF, 0x0093)
            cpu.regs[4] = 0xFFFF0008

    case = _fault_case(asm)
    for paging in (False, True):
        a, b = run_both(case, paging, [3, 7, 100000], hot=1, setup=setup)
        assert b.halted and b.regs[0] == 0x11 + sum(range(1, 31))
        assert all(blk.regens == 0 for blk in b.cache.values())
        if which == "cs":
            assert all(blk.gen is None for blk in b.cache.values())
        elif which == "ds":
            assert any(blk.gen is not None and "rd32(3" in blk.gen.source for blk in b.cache.values())


@pytest.mark.parametrize("seed", range(4))
def test_truncated_segments_fault_where_the_closures_do(seed):
    """Base-0 segments whose limit is below 4 GiB, as a monitor truncates its guest's
    (vmm/shadow_descriptors.py): the block tier runs them inline with a limit check
    (and checks jump targets against a truncated CS) and must leave exactly the state
    the closures leave, faults included.  Limits fall inside the data the programs
    touch, just below or above the stack, and inside the code itself."""
    from trapvisor.machine.cpu import CS, DS, ES, SS

    rng = random.Random(seed * 104729)
    generated = checked = faulted = 0
    for text, case in _programs(100 + seed, N_PROGRAMS // 2, fallbacks=seed % 2 == 1):
        dl = rng.choice([DATA_MID + d for d in (-0x41, -3, -1, 0, 1, 2, 0x3D, 0x100)] + [0xFFBFFFFF])
        el = rng.choice([dl, 0xFFBFFFFF])
        sl = rng.choice([STACK_TOP - 1, STACK_TOP + 0x1000, 0xFFBFFFFF, STACK_TOP - 0x11])
        cl = rng.choice([CODE + rng.randrange(len(case.code)), CODE + len(case.code) - 1, 0xFFBFFFFF])

        def setup(cpu):
            cpu.set_segment_cache(CS, 0x08, 0, cl, 0x409B)
            cpu.set_segment_cache(DS, 0x10, 0, dl, 0x4093)
            cpu.set_segment_cache(ES, 0x10, 0, el, 0x4093)
            cpu.set_segment_cache(SS, 0x10, 0, sl, 0x4093)

        chunks = [rng.choice([1, 2, 3, 5, 8, 13, 40, 200]) for _ in range(20)] + [100000]
        for paging in (False, True):
            a, b = run_both(case, paging, chunks, hot=rng.choice([1, 2]), setup=setup)
            assert a.halted or a.test_faults, (a.stop, text)
            faulted += bool(a.test_faults)
            for blk in b.cache.values():
                if blk.gen is not None:
                    generated += 1
                    checked += " <= 0x" in blk.gen.source or "raise CpuFault(GP" in blk.gen.source
    # The inline limit checks ran, and some programs did hit a limit.
    assert generated and checked and faulted, (generated, checked, faulted)


@pytest.mark.parametrize("asm", [
    "mov $0x{t:x}, %eax\nadd $1, %ebx\njmp *%eax",
    "mov $0x{t:x}, %eax\nadd $1, %ebx\ncall *%eax",
    "add $1, %ebx\npush $0x{t:x}\nret",
    "add $1, %ebx\npush $0x{t:x}\nret $8",
])
def test_jump_past_a_truncated_code_segment_faults_at_the_jump(asm):
    """An indirect JMP/CALL/RET to a target past CS's limit raises #GP(0) at the jump,
    with ESP, the stack and EIP as before it, in both tiers (not at the target)."""
    from trapvisor.machine.cpu import CS

    target = CODE + 0x100
    code = assemble_many([asm.format(t=target)])[0]
    case = Case(code + b"\x90" * (0x100 - len(code)) + b"\xf4",
                [0, 1, 2, 3, STACK_TOP, 5, 6, DATA_MID], eflags=0x8D5)

    def setup(cpu):
        cpu.set_segment_cache(CS, 0x08, 0, target - 1, 0x409B)

    for paging in (False, True):
        a, b = run_both(case, paging, [100000], hot=1, setup=setup)
        assert a.test_faults and a.test_faults[0][0] == 13, a.test_faults
        vector, err, regs, eip, _, _, _ = a.test_faults[0]
        assert err == 0 and eip < CODE + len(code) and regs[4] == STACK_TOP - (4 if "push" in asm else 0)
        assert any(blk.gen is not None for blk in b.cache.values()), "no generated code ran"


@pytest.mark.parametrize("asm", [
    # the exit of a self-loop (a run-time EIP) falls through past the limit
    "mov $3, %ecx\n1: add $1, %eax\ndec %ecx\njnz 1b\nadd $5, %ebx\nhlt",
    # an ordinary block's not-taken branch (a static target) leads past it
    "jmp 1f\n3: jmp 1f\n1: add $1, %eax\ncmp $5, %eax\njne 3b\nadd $5, %ebx\nhlt",
])
def test_no_chaining_into_a_block_past_a_lowered_code_segment_limit(asm):
    """Blocks translated while CS was flat stay cached; once CS is truncated below them,
    falling through into one must fault (#GP at its address) as fetch_block does, not
    chain into it."""
    from trapvisor.machine.cpu import CS

    code = assemble_many([asm])[0]
    tail = CODE + len(code) - 5            # add $5, %ebx (3 bytes), hlt, and the harness's hlt
    case = Case(code, [0, 0, 0, 0, STACK_TOP, 0, 0, DATA_MID])
    old = blockgen.HOT, blockgen.STRICT
    blockgen.HOT, blockgen.STRICT = 1, True
    try:
        results = []
        for tier in (False, True):
            cpu = make_cpu(case, tier, False)
            cpu.run(1000)                  # flat CS: every block translated (and generated)
            assert cpu.halted and cpu.regs[3] == 5
            cpu.halted, cpu.stop = False, None
            cpu.regs[:] = case.regs
            cpu.eip = CODE
            cpu.set_segment_cache(CS, 0x08, 0, tail - 1, 0x409B)
            run_chunk(cpu, 1000)
            results.append(state(cpu))
            assert cpu.test_faults and cpu.test_faults[0][0] == 13 and cpu.test_faults[0][3] == tail
            assert cpu.regs[3] == 0
        assert results[0] == results[1]
    finally:
        blockgen.HOT, blockgen.STRICT = old


def test_oracle_harness_runs_generated_code(block_tier, monkeypatch):
    """The re-exported unicorn suite really executes generated functions under the fixture."""
    ran = []
    real = blockgen.compile_block

    def counting(cpu, blk):
        fn = real(cpu, blk)

        def wrapped(end):
            ran.append(blk.eip)
            return fn(end)
        return wrapped if fn is not None else None

    monkeypatch.setattr(blockgen, "compile_block", counting)
    code = assemble_many(["add %ebx, %eax\nsub $3, %ecx\nmov %eax, (%edi)"])[0]
    case = Case(code, [1, 2, 3, 4, STACK_TOP, 6, 7, DATA_MID])
    O.check(case)
    assert CODE in ran


class _PendingIrq:
    """An interrupt controller that always has IRQ vector 0x20 to give."""

    def interrupt_pending(self):
        return True

    def acknowledge(self):
        return 0x20


@pytest.mark.parametrize("asm", [
    # the block after STI's one-instruction shadow is a hot self-loop
    "mov $1000, %ecx\nsti\n1: add $1, %eax\ndec %ecx\njnz 1b\nhlt",
    # ... and a chain of blocks
    "mov $1000, %ecx\nsti\n1: add $1, %eax\njmp 2f\n2: dec %ecx\njnz 1b\nhlt",
])
@pytest.mark.parametrize("hot", [1, 3])
def test_interrupt_delivered_at_the_same_instruction(asm, hot):
    """An interrupt pending when a block starts is taken after that one block in both tiers."""
    def setup(cpu):
        cpu.intc = _PendingIrq()

    case = _fault_case(asm)
    for paging in (False, True):
        for chunks in ([100000], [1, 2, 5, 100000]):
            a, b = run_both(case, paging, chunks, hot=hot, setup=setup)
            assert a.test_faults and a.test_faults[0][0] == 0x20
            assert a.test_faults == b.test_faults
