"""System-level differential harness: snippet kernels on trapvisor vs QEMU (and Bochs).

A :class:`Case` is a few lines of assembly (the *snippet*) plus the machine
set-up it runs under: CPL and IOPL at entry, paging and the PTE flags of the
test pages, extra CR0/CR4 bits, the I/O permission bitmap, changes ("pokes")
to the GDT/LDT/IDT/TSS, and so on.  :func:`build` turns it into a Multiboot
kernel (the fixed harness in ``entry.S``/``kernel.c`` linked with a generated
``case.S``); :func:`run_qemu`, :func:`run_trapvisor` and :func:`run_bochs`
boot it and parse the state dump the kernel prints on COM1; :func:`compare`
diffs two dumps field by field.

What the harness does inside the guest (kernel.c): it builds its own tables
(layout.h lists every selector and vector), enters the snippet by IRET at the
case's CPL with the case's IOPL, and records every trap in a log (vector,
error code, saved CS:EIP, EFLAGS, SS:ESP when the privilege level changed,
CR2 for #PF, DR6 for #DB, and the handler's CS/SS:ESP, which shows the TSS
stack switch).  After a fault it resumes at the next instruction of the
snippet (every instruction line of the snippet is labelled; the labels form
a resume table); after a trap (INT n, INT3, INTO, single-step) it resumes
where the CPU says.  The case ends at the ``int $0x7f`` appended to the
snippet, at a fault outside the snippet, at a #DF, or after MAX_TRAPS traps.
The dump then gives the general registers, EFLAGS, the six selectors,
GDTR/IDTR/LDTR/TR, CR0/2/3/4, DR6/DR7, the trap log, the page-table entries
of the snippet's region (when paging is on) and the non-zero 32-byte lines
of the GDT, LDT, both TSSs, the data page, the top of every stack and the
test pages.

EFLAGS.RF is cleared in every saved frame before the recorder looks at it
(unless ``Case.keep_rf``): Intel sets it in the EFLAGS image pushed for a
fault (SDM Vol. 3A §17.3.1.1) and QEMU does not; it has no effect on the
later execution of these snippets (no instruction breakpoints).  The cases
with ``keep_rf`` check it against Bochs.

Command line (see docs/system-differential.md)::

    python -m tests.system.harness.runner --list
    python -m tests.system.harness.runner CASE-NAME [--bochs] [--show]
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

HARNESS = pathlib.Path(__file__).resolve().parent
REPO = HARNESS.parent.parent.parent
BUILD = pathlib.Path(os.environ.get("TVSYS_BUILD_DIR", REPO / "build" / "system-cases"))

QEMU = shutil.which("qemu-system-i386")
BOCHS = shutil.which("bochs")

# QEMU's CPU model.  pentium2 is the model closest to the CPU trapvisor
# reports through CPUID (family 6, a Pentium II-class core: PSE, PGE, VME,
# DE, TSC, MSR, SEP, no PAE/NX in use): the same CR4 bits are writable on
# both and nothing in the harness depends on SSE.  Bochs' closest model is
# p3_katmai (there is no Pentium II model in Bochs 2.7).
QEMU_CPU = "pentium2"
BOCHS_CPU = "p3_katmai"
MEMORY_MIB = 16

EXIT_VALUE = 0x10
HARNESS_ERROR_VALUE = 0x3E

CFLAGS = ["-m32", "-march=i686", "-ffreestanding", "-fno-pic", "-fno-pie",
          "-fno-stack-protector", "-nostdlib", "-fno-builtin",
          "-fno-asynchronous-unwind-tables", "-fcf-protection=none",
          "-mgeneral-regs-only", "-mno-sse", "-mno-mmx", "-mno-80387",
          "-O2", "-Wall", "-Wextra", "-Werror"]
LDFLAGS = ["-m", "elf_i386", "-nostdlib", "--build-id=none", "-z", "noexecstack",
           "--no-warn-rwx-segments"]

DEFAULT_REGS = {
    "eax": 0xA0000001, "ecx": 0xC0000002, "edx": 0xD0000003, "ebx": 0xB0000004,
    "ebp": 0xE0000006, "esi": 0x50000007, "edi": 0xD1000008,
}
REG_ORDER = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
SREG_ORDER = ("ds", "es", "fs", "gs")
ALL_ONES = 0xFFFFFFFF


def _layout() -> dict[str, int]:
    out = {}
    for line in (HARNESS / "layout.h").read_text().splitlines():
        m = re.match(r"#define\s+(\w+)\s+(0x[0-9a-fA-F]+|\d+)\b", line)
        if m:
            out[m.group(1)] = int(m.group(2), 0)
    return out


L = _layout()
globals().update(L)     # KCODE, UDATA, V_END, DATA_ADDR, ... as module constants

# EFLAGS bits, for cases.
CF, PF, AF, ZF, SF, TF, IF, DF, OF = 1, 4, 0x10, 0x40, 0x80, 0x100, 0x200, 0x400, 0x800
NT, RF, VM, AC, ID = 0x4000, 0x10000, 0x20000, 0x40000, 0x200000
# CR0 / CR4 bits.
CR0_MP, CR0_EM, CR0_TS, CR0_NE, CR0_WP, CR0_AM = 2, 4, 8, 0x20, 0x10000, 0x40000
CR4_VME, CR4_PVI, CR4_TSD, CR4_DE, CR4_PSE, CR4_PGE, CR4_PCE = 1, 2, 4, 8, 0x10, 0x80, 0x100
# PTE bits.
P, RW, US, PWT, PCD, A, D, PS, G = 1, 2, 4, 8, 0x10, 0x20, 0x40, 0x80, 0x100


# ---------------------------------------------------------------- the case

@dataclasses.dataclass(frozen=True)
class Poke:
    """A change to the harness's tables, applied by kernel.c at boot.

    ``addr`` is an assembler expression (``"gdt+0xe8"``, ``"idt+8*0x40"``,
    ``"tss+4"``); phase 0 is before the tables are loaded, phase 1 just
    before the snippet is entered (paging already on).
    """
    kind: int
    addr: str
    a: str | int = 0
    b: str | int = 0
    c: str | int = 0
    phase: int = 0


def raw(addr: str, value: int, size: int = 4, phase: int = 0) -> Poke:
    if size == 8:
        return Poke(1, addr, value & ALL_ONES, value >> 32, 8, phase)
    return Poke(1, addr, value, 0, size, phase)


def gate(slot: str, sel: int | str, offset: int | str, access: int, params: int = 0,
         phase: int = 0) -> Poke:
    """A gate descriptor; ``access`` is the byte P|DPL|type (0x8e, 0xef, 0xec, ...)."""
    return Poke(2, slot, sel, offset, access | (params << 8), phase)


def idt_gate(vec: int, access: int = 0x8E, sel: int | str = "KCODE", target: str | None = None,
             noerr: bool = False, params: int = 0, phase: int = 0) -> Poke:
    """Replace IDT entry ``vec``; the target defaults to the harness's stub for ``vec``
    (``noerr``: the stub variant that expects no CPU-pushed error code)."""
    if target is None:
        target = f"{'trap_stubs_noerr' if noerr else 'trap_stubs'}+16*{vec:#x}"
    return gate(f"idt+8*{vec:#x}", sel, target, access, params, phase)


def seg(slot: str, base: int | str, limit: int, access: int, flags: int = 0xC,
        phase: int = 0, accessed: bool = True) -> Poke:
    """A code/data/system segment descriptor; flags: G=8, D/B=4.

    Code and data descriptors get the accessed bit unless ``accessed=False``
    (like every descriptor of the harness's own GDT): QEMU does not set it
    when it loads CS, Intel CPUs and Bochs do, and only the cases about the
    accessed bit should see that difference."""
    if accessed and access & 0x10:
        access |= 1
    return Poke(3, slot, base, limit, access | (flags << 8), phase)


def gdt_seg(sel: int, base: int | str, limit: int, access: int, flags: int = 0xC,
            accessed: bool = True) -> Poke:
    return seg(f"gdt+{sel & ~7:#x}", base, limit, access, flags, accessed=accessed)


@dataclasses.dataclass
class Case:
    """One snippet kernel.  ``body`` runs from snippet_start and is followed by
    ``int $0x7f`` (the end of the case); ``extra`` is code placed after it
    (call-gate targets ``cgt0``/``cgt1``, handlers, ...).  ``data`` is the
    assembler text of the data page (symbol ``data``, 0x402000)."""

    name: str
    body: str
    cpl: int = 0
    iopl: int = 0
    eflags: int = 0
    paging: bool = False
    cr0_set: int = 0
    cr0_clear: int = 0
    cr4: int = 0
    user_pde: int = P | RW | US
    big_pde: int = 0
    test_pte: dict[int, int] = dataclasses.field(default_factory=dict)
    regs: dict[str, int] = dataclasses.field(default_factory=dict)
    sregs: dict[str, int] = dataclasses.field(default_factory=dict)
    cg_params: int = 0
    idt_limit: int | None = None
    gdt_limit: int | None = None
    ldt_limit: int | None = None
    iomap_base: int | None = None
    tss_limit: int | None = None
    io_allow: tuple[tuple[int, int], ...] = ()
    esp: int = 0
    pokes: tuple[Poke, ...] = ()
    extra: str = ""
    data: str = ""
    setup: str = ""
    keep_rf: bool = False      # show EFLAGS.RF in saved frames (kernel.c masks it otherwise)
    # Known QEMU-vs-Intel difference: Bochs decides (see docs/system-differential.md).
    qemu_differs: str | None = None
    topic: str = ""

    def config_words(self) -> list[int | str]:
        pte = [self.test_pte.get(i, P | RW | US) for i in range(L["TEST_PAGES"])]
        regs = {**DEFAULT_REGS, **self.regs}
        io = [port | (count << 16) for port, count in self.io_allow] + [0] * 8
        opt = lambda v: ALL_ONES if v is None else v  # noqa: E731
        return [
            0x43415345,
            self.cpl, self.iopl, self.eflags,
            int(self.paging), self.cr0_set, self.cr0_clear, self.cr4,
            self.user_pde, self.big_pde,
            *pte,
            *[regs.get(r, 0) for r in REG_ORDER],
            *[self.sregs.get(s, ALL_ONES) for s in SREG_ORDER],
            self.cg_params,
            opt(self.idt_limit), opt(self.gdt_limit), opt(self.ldt_limit),
            opt(self.iomap_base), opt(self.tss_limit),
            *io[:8],
            self.esp,
            int(self.keep_rf),
            0x454E4443,
        ]


# Lines that are not the start of an instruction: blank, directives (except
# .byte, which the cases use to spell out an instruction), bare labels.
_INSN_SKIP = re.compile(r"^\s*($|\.(?!byte\b)|[\w.$]+:\s*$)")
_INT_N = re.compile(r"^\s*int\s+\$(0x[0-9a-fA-F]+|\d+|\w+)\s*$")


def _label_code(text: str, first: int) -> tuple[list[str], list[tuple[int, int, int]], int]:
    """Label every instruction line; returns (lines, [(label, next label, intvec)], next index)."""
    out, entries = [], []
    n = first
    for line in text.strip("\n").splitlines():
        if _INSN_SKIP.match(line):
            out.append(line)
            continue
        m = _INT_N.match(line)
        vec = 0x100
        if m:
            v = m.group(1)
            vec = int(v, 0) if v[0].isdigit() else L.get(v, 0x100)
        out.append(f".Lr{n}:")
        out.append("    " + line.strip())
        entries.append((n, n + 1, vec))
        n += 1
    return out, entries, n


def case_source(case: Case) -> str:
    """The generated case.S for ``case``."""
    body, ent1, n = _label_code(case.body, 0)
    # The last body instruction resumes at the end sentinel; code after the
    # last "extra" instruction is a ud2 (a fault the resume table does not
    # cover, which ends the case).
    end = [f".Lr{n}:", f"    int ${V_END:#x}"]
    extra, ent2, n2 = _label_code(case.extra, n + 1)
    lines = [f"/* case {case.name} */", '#include "layout.h"', "",
             "    .section .rodata", "    .align 4", "    .globl cfg", "cfg:"]
    lines += [f"    .long {w}" for w in case.config_words()]
    lines += ["    .globl case_pokes", "case_pokes:"]
    for p in case.pokes:
        lines.append(f"    .long {p.kind}, {p.phase}, {p.addr}, {p.a}, {p.b}, {p.c}")
    lines += ["    .long 0, 0, 0, 0, 0, 0", "    .globl case_resume", "case_resume:"]
    for a, b, vec in ent1 + ent2:
        lines.append(f"    .long .Lr{a}, .Lr{b}, {vec:#x}, 0, 0, 0")
    lines += ["    .long 0, 0, 0, 0, 0, 0", ""]
    # Call-gate targets must override the harness's weak defaults.
    globs = sorted(set(re.findall(r"^\s*(cgt\d)\s*:", case.body + "\n" + case.extra, re.M)))
    lines += ['    .section .snippet, "ax"', *[f"    .globl {g}" for g in globs]]
    lines += [*body, *end, *extra, f".Lr{n2}:", "    ud2"]
    lines += ["", '    .section .snippet_data, "aw"', case.data, ""]
    lines += ["    .text", "    .globl case_setup", "case_setup:", case.setup, "    ret", ""]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- building

_tool_ids: str | None = None


def _tool_id() -> str:
    global _tool_ids
    if _tool_ids is None:
        parts = []
        for tool in ("gcc", "as", "ld"):
            out = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout
            parts.append(out.splitlines()[0] if out else tool)
        _tool_ids = "|".join(parts)
    return _tool_ids


def _atomic_write(path: pathlib.Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _run(cmd: list[str], cwd=None) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if r.returncode:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{r.stdout}{r.stderr}")


def harness_objects() -> tuple[pathlib.Path, pathlib.Path]:
    """entry.o and kernel.o, built once per content of the harness sources."""
    h = hashlib.sha256()
    for name in ("entry.S", "kernel.c", "layout.h", "kernel.ld"):
        h.update((HARNESS / name).read_bytes())
    h.update(" ".join(CFLAGS).encode() + _tool_id().encode())
    d = BUILD / f"harness-{h.hexdigest()[:16]}"
    entry, kernel = d / "entry.o", d / "kernel.o"
    if not (entry.exists() and kernel.exists()):
        d.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=BUILD) as tmp:
            t = pathlib.Path(tmp)
            _run(["gcc", *CFLAGS, "-I", str(HARNESS), "-c", str(HARNESS / "kernel.c"), "-o", str(t / "k.o")])
            _run(["gcc", "-m32", "-I", str(HARNESS), "-c", str(HARNESS / "entry.S"), "-o", str(t / "e.o")])
            os.replace(t / "k.o", kernel)
            os.replace(t / "e.o", entry)
    return entry, kernel


def build(case: Case) -> pathlib.Path:
    """Build (or find in the cache) the kernel ELF for ``case``."""
    entry, kernel = harness_objects()
    src = case_source(case)
    key = hashlib.sha256(src.encode() + entry.parent.name.encode()).hexdigest()[:20]
    elf = BUILD / "cases" / f"{_slug(case.name)}-{key}.elf"
    if elf.exists():
        return elf
    elf.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=BUILD) as tmp:
        t = pathlib.Path(tmp)
        (t / "case.S").write_text(src)
        _run(["gcc", "-m32", "-I", str(HARNESS), "-c", "case.S", "-o", "case.o"], cwd=t)
        _run(["ld", *LDFLAGS, "-T", str(HARNESS / "kernel.ld"), str(entry), str(kernel),
              "case.o", "-o", "case.elf"], cwd=t)
        os.replace(t / "case.elf", elf)
    return elf


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60]


# ---------------------------------------------------------------- dumps

@dataclasses.dataclass
class Outcome:
    """How a run ended: ``kind`` is "dump" (the harness printed its dump),
    "reset" (triple fault / shutdown), "hang" (no end within the budget),
    "harness-error" or "error"; ``fields`` is the parsed dump."""
    machine: str
    kind: str
    text: str
    fields: dict[str, str] = dataclasses.field(default_factory=dict)
    detail: str = ""
    seconds: float = 0.0

    def summary(self) -> str:
        if self.kind == "dump":
            return f"{self.machine}: dump ({self.fields.get('reason', '?')})"
        return f"{self.machine}: {self.kind} {self.detail}".rstrip()


def parse_dump(text: str) -> dict[str, str] | None:
    """The dump as an ordered {field: value}; None if there is no complete dump.

    Trap lines become ``T0``, ``T1``...; memory lines are keyed by region and
    address (``M data 00402000``), page-table lines by entry name.
    """
    start = text.find("=== TVSYS DUMP v1 ===")
    end = text.find("=== END ===", start)
    if start < 0 or end < 0:
        return None
    fields: dict[str, str] = {}
    ntrap = 0
    for line in text[start:end].splitlines()[1:]:
        if not line.strip():
            continue
        if line.startswith("T "):
            fields[f"T{ntrap}"] = line[2:]
            ntrap += 1
        elif line.startswith("M "):
            head, _, rest = line.partition(":")
            fields[head] = rest.strip()
        elif line.startswith("P "):
            k, _, v = line[2:].partition(" ")
            fields[f"P {k}"] = v
        else:
            k, _, v = line.partition(" ")
            fields[k] = v
    return fields


def outcome_key(o: Outcome):
    return (o.kind, o.fields if o.kind == "dump" else None)


def compare(a: Outcome, b: Outcome) -> list[str]:
    """Differences between two outcomes, one readable line each."""
    if a.kind != b.kind:
        return [f"outcome: {a.summary()} | {b.summary()}"]
    if a.kind != "dump":
        return []
    out = []
    for k in list(dict.fromkeys([*a.fields, *b.fields])):
        va, vb = a.fields.get(k, "(absent)"), b.fields.get(k, "(absent)")
        if va != vb:
            out.append(f"{k}: {a.machine}={va} | {b.machine}={vb}")
    return out


def _outcome_from_serial(machine: str, text: str, exit_value: int | None, reset: bool,
                         hang: bool, detail: str = "", seconds: float = 0.0) -> Outcome:
    fields = parse_dump(text)
    if fields is not None and exit_value == EXIT_VALUE:
        return Outcome(machine, "dump", text, fields, seconds=seconds)
    if "=== HARNESS ERROR" in text:
        return Outcome(machine, "harness-error", text, detail=text[text.find("=== HARNESS"):].strip(),
                       seconds=seconds)
    if hang:
        return Outcome(machine, "hang", text, detail=detail, seconds=seconds)
    if reset:
        return Outcome(machine, "reset", text, detail=detail, seconds=seconds)
    return Outcome(machine, "error", text, detail=detail or f"exit value {exit_value}", seconds=seconds)


# ---------------------------------------------------------------- machines

def qemu_command(elf: pathlib.Path) -> list[str]:
    return [QEMU, "-machine", "pc", "-accel", "tcg", "-cpu", QEMU_CPU, "-m", str(MEMORY_MIB),
            "-nodefaults", "-display", "none", "-monitor", "none", "-serial", "stdio",
            "-no-reboot", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-kernel", str(elf)]


# Reference results (QEMU, Bochs) are cached by the ELF's content-derived
# name and the emulator's version: they are deterministic functions of both.
# TVSYS_NO_CACHE=1 turns the cache off.
CACHE = os.environ.get("TVSYS_NO_CACHE", "") in ("", "0")
_versions: dict[str, str] = {}


def _version(tool: str) -> str:
    if tool not in _versions:
        try:
            r = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=30)
            out = (r.stdout + r.stderr).strip()
        except (OSError, subprocess.TimeoutExpired):
            out = "unknown"
        try:   # the binary itself too (bochs --version prints only its usage)
            st = os.stat(os.path.realpath(shutil.which(tool) or tool))
            out += f"|{st.st_size}|{int(st.st_mtime)}"
        except OSError:
            pass
        _versions[tool] = hashlib.sha256(out.encode()).hexdigest()[:12]
    return _versions[tool]


def cached(machine: str, tool: str, elf: pathlib.Path, run) -> Outcome:
    if not CACHE:
        return run()
    import json
    path = BUILD / "results" / f"{elf.stem}.{machine}-{_version(tool)}.json"
    if path.exists():
        d = json.loads(path.read_text())
        return Outcome(d["machine"], d["kind"], d["text"], d["fields"], d["detail"], 0.0)
    o = run()
    # Not errors; a "hang" too (QEMU and Bochs get many seconds for what takes
    # them well under one, so a hang is the guest's, not a slow host's).
    if o.kind in ("dump", "reset", "hang"):
        _atomic_write(path, json.dumps(dataclasses.asdict(o)).encode())
    return o


def run_qemu(elf: pathlib.Path, timeout: float = 10.0) -> Outcome:
    return cached("qemu", QEMU, elf, lambda: _run_qemu(elf, timeout))


def _run_qemu(elf: pathlib.Path, timeout: float = 10.0) -> Outcome:
    t0 = time.monotonic()
    try:
        r = subprocess.run(qemu_command(elf), stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired as e:
        text = (e.stdout or b"").decode("latin-1")
        return _outcome_from_serial("qemu", text, None, False, True, f"no end within {timeout}s",
                                    time.monotonic() - t0)
    text = r.stdout.decode("latin-1")
    code = r.returncode
    exit_value = code >> 1 if code & 1 else None
    # With -no-reboot a triple fault (a reset request) ends QEMU with status 0.
    return _outcome_from_serial("qemu", text, exit_value, code == 0, False,
                                r.stderr.decode("latin-1").strip(), time.monotonic() - t0)


TRAPVISOR_BUDGET = int(os.environ.get("TVSYS_BUDGET", 4_000_000))


def trapvisor_available() -> bool:
    try:
        from trapvisor.machine.pc import run_kernel  # noqa: F401
    except ImportError:
        return False
    return True


def run_trapvisor(elf: pathlib.Path, budget: int = TRAPVISOR_BUDGET) -> Outcome:
    from trapvisor.machine.pc import run_kernel
    buf = io.BytesIO()
    t0 = time.monotonic()
    try:
        res = run_kernel(str(elf), cmdline="", memory_bytes=MEMORY_MIB << 20,
                         max_instructions=budget, serial_out=buf)
    except Exception as e:  # noqa: BLE001 - a crash of the simulator is an outcome too
        return Outcome("trapvisor", "error", buf.getvalue().decode("latin-1"),
                       detail=f"{type(e).__name__}: {e}", seconds=time.monotonic() - t0)
    text = buf.getvalue().decode("latin-1")
    stop = getattr(res, "stop_reason", None)
    detail = f"{stop or ''} {getattr(res, 'detail', '') or ''}".strip()
    hang = stop in ("halted forever", "instruction limit", "time limit") or \
        (res.exit_code is None and stop is None)
    reset = stop in ("triple fault", "shutdown", "reset")
    code = res.exit_code
    # trapvisor reports the isa-debug-exit status as QEMU does: (value << 1) | 1.
    exit_value = None if code is None else (code >> 1 if code & 1 else code)
    return _outcome_from_serial("trapvisor", text, exit_value, reset, hang, detail,
                                time.monotonic() - t0)


# ------------------------------------------------------------------ bochs

def run_bochs(elf: pathlib.Path, timeout: float = 60.0) -> Outcome:
    from .bochs import run_bochs as _run_bochs
    return cached("bochs", "bochs-bin", elf, lambda: _run_bochs(elf, timeout))


# --------------------------------------------------------------- checking

class Mismatch(AssertionError):
    pass


def describe(case: Case, elf: pathlib.Path, outcomes: list[Outcome], diffs: list[str]) -> str:
    lines = [f"case {case.name}: {len(diffs)} difference(s)  [{elf}]"]
    lines += ["  " + d for d in diffs[:60]]
    for o in outcomes:
        if o.kind != "dump":
            lines.append(f"  {o.summary()}; output tail: {o.text[-400:]!r}")
    lines.append("  snippet:")
    lines += ["    " + s for s in case.body.strip().splitlines()]
    return "\n".join(lines)


def check(case: Case, *, bochs: bool | None = None) -> list[Outcome]:
    """Run ``case`` on QEMU and trapvisor and require identical outcomes.

    For a case with ``qemu_differs`` set, Bochs is the reference instead of
    QEMU (and QEMU is still run, to keep the record honest: if QEMU ever
    agrees with Bochs, the note is stale and the check fails)."""
    elf = build(case)
    q = run_qemu(elf)
    if q.kind in ("harness-error", "error"):
        raise Mismatch(describe(case, elf, [q], [f"QEMU run failed: {q.summary()}"]))
    t = run_trapvisor(elf)
    if case.qemu_differs or bochs:
        b = run_bochs(elf)
        if b.kind in ("harness-error", "error"):
            raise Mismatch(describe(case, elf, [b], [f"Bochs run failed: {b.summary()}"]))
        diffs = compare(b, t)
        if diffs:
            raise Mismatch(describe(case, elf, [b, t], diffs))
        if case.qemu_differs and not compare(q, b):
            raise Mismatch(f"case {case.name}: QEMU now agrees with Bochs; "
                           f"the recorded difference ({case.qemu_differs}) is stale")
        return [q, t, b]
    diffs = compare(q, t)
    if diffs:
        raise Mismatch(describe(case, elf, [q, t], diffs))
    return [q, t]


# ------------------------------------------------------------------ CLI

def _all_cases() -> dict[str, Case]:
    from tests.system import catalog
    return {c.name: c for c in catalog.all_cases()}


def main(argv: list[str] | None = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="case names (regular expressions)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--show", action="store_true", help="print the dumps")
    ap.add_argument("--source", action="store_true", help="print the generated case.S")
    ap.add_argument("--bochs", action="store_true", help="also run Bochs")
    ap.add_argument("--qemu-only", action="store_true")
    args = ap.parse_args(argv)
    cases = _all_cases()
    if args.list:
        for name, c in cases.items():
            print(f"{c.topic:12} {name}")
        return 0
    selected = [c for n, c in cases.items() if any(re.search(p, n) for p in args.names)]
    bad = 0
    for c in selected:
        elf = build(c)
        if args.source:
            print(case_source(c))
        outs = [run_qemu(elf)]
        if not args.qemu_only:
            outs.append(run_trapvisor(elf))
        if args.bochs or c.qemu_differs:
            outs.append(run_bochs(elf))
        if args.show:
            for o in outs:
                print(f"--- {o.summary()} ({o.seconds:.2f}s)")
                print(o.text)
        ref = outs[-1] if c.qemu_differs and len(outs) > 2 else outs[0]
        diffs = [d for o in outs if o is not ref and (o.machine != "qemu" or not c.qemu_differs)
                 for d in compare(ref, o)]
        status = "ok" if not diffs else "DIFF"
        bad += bool(diffs)
        print(f"{status:4} {c.name}: " + "; ".join(f"{o.summary()} {o.seconds:.2f}s" for o in outs))
        for d in diffs:
            print("     " + d)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
