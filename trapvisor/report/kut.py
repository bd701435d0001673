"""kvm-unit-tests on trapvisor and on QEMU: the bundled i386 suite, run on both, one verdict table.

kvm-unit-tests (the suite KVM and QEMU are tested with) is bundled in
``third_party/kvm-unit-tests``: the i386 build of upstream commit 1da1819e
(``i386/*.flat``, Multiboot ELF32 kernels), its ``unittests.cfg`` and the
complete source they were built from (GPL-2.0; ``README.md`` there).

What this module does, as the suite's own runner (``scripts/runtime.bash``
upstream) does for QEMU:

* :func:`load_tests` reads ``unittests.cfg``: one test per section whose
  ``file`` is bundled and whose ``arch`` is i386 (or unset), with its
  ``smp``, ``test_args`` (the kernel's command line, -append), ``timeout``
  (default 90 s) and the ``-m`` of its ``qemu_params``; a bundled kernel
  without a section runs as a test of its own name with the defaults.
* :func:`run_on_qemu` boots it on ``qemu-system-i386`` (TCG) with the
  suite's device set (serial on stdio, ``isa-debug-exit`` at 0xF4) and the
  same -smp, -m and -append; the CPU is QEMU's default one (``-cpu`` of the
  section is not passed: the comparison is with the CPU QEMU models by
  default, as the bundled README measured it, and trapvisor's CPU is its own).
* :func:`run_on_trapvisor` boots it on the simulated PC (``machine.pc.PC``)
  with the same memory and command line.  No environment module is given to
  either: the tests ask the firmware (fw_cfg, ports 0x510/0x511) how many
  CPUs and how much RAM there are.  A test that needs more than one CPU is not
  run on trapvisor (the simulated PC has one).
* :func:`parse_output` takes each ``PASS:``/``FAIL:``/``SKIP:``/``XFAIL:``/
  ``XPASS:`` line and the ``SUMMARY:`` line of COM1's output, and
  :func:`compare` lines both runs up, subtest by subtest, with one more row
  per test for the exit status (``isa-debug-exit`` code (v << 1) | 1: 1 all
  passed, 3 some failed, 77 skipped).  A subtest whose text repeats is
  numbered (``name #2``) so every row is unique.
* :func:`regressions` are the rows QEMU passes and trapvisor does not.
"""

from __future__ import annotations

import configparser
import pathlib
import re
import shlex
import subprocess
import time
from dataclasses import dataclass, field

from ..errors import UserError
from .. import hosttools

SUITE_DIR = pathlib.Path(__file__).resolve().parent.parent.parent / "third_party" / "kvm-unit-tests"
DEFAULT_TIMEOUT = 90.0          # seconds: upstream scripts/runtime.bash's default
DEFAULT_MEMORY_MB = 256         # the bundled README's -m 256 (the guest's fw_cfg RAM size)
# Tests that take minutes, each with why; ``make kut`` and ``trapvisor kut --all`` run them, the
# default test suite and a bare ``trapvisor kut`` do not.
SLOW = {
    "sieve": "three 100-million-entry sieves with paging on: about 9 minutes on the simulated PC",
    "la57": "x86_64-oriented: never ends on QEMU i386 either (its 90 s timeout)",
    "s3": "waits for an ACPI S3 wake-up that neither machine gives: the 90 s timeout on both",
    **{f"vmexit_{t}": "a cycle-count loop beyond the 90 s timeout on the simulated PC (QEMU: 2 s)"
       for t in ("cpuid", "inl_pmtimer", "ple_round_robin")},
}
# Slow tests that do finish on the simulated PC given more time: their cfg timeout times this.
FINISH_GIVEN_TIME = frozenset({"sieve"})
SLOW_FACTOR = 5

EXIT_VERDICTS = {1: "PASS", 3: "FAIL", 77: "SKIP"}
VERDICT_LINE = re.compile(r"^(PASS|FAIL|SKIP|XFAIL|XPASS): (.*?)\s*$")
SUMMARY_LINE = re.compile(r"^SUMMARY: (.*?)\s*$")
EXIT_ROW = "(exit status)"
NOT_REACHED = "-"
NOT_RUN = "not run"


@dataclass(frozen=True)
class KutTest:
    name: str
    file: str                    # the kernel, under i386/
    smp: int = 1
    append: str = ""             # the test's arguments (the kernel command line after the path)
    memory_mb: int = DEFAULT_MEMORY_MB
    timeout: float = DEFAULT_TIMEOUT
    groups: tuple = ()

    @property
    def slow(self) -> bool:
        return self.name in SLOW

    def kernel(self, suite: pathlib.Path = SUITE_DIR) -> pathlib.Path:
        return suite / "i386" / self.file


@dataclass
class Outcome:
    """One run of one test on one machine."""
    machine: str                 # "qemu" or "trapvisor"
    exit_status: int | None      # the isa-debug-exit status, or None (timeout, crash, not run)
    ended: str                   # how it ended, in words
    subtests: list = field(default_factory=list)   # (verdict, subtest) in order, names made unique
    summary: str | None = None
    seconds: float = 0.0
    output: str = ""

    @property
    def verdict(self) -> str:
        """The whole test's verdict from its exit status (the row :data:`EXIT_ROW`)."""
        if self.exit_status in EXIT_VERDICTS:
            return EXIT_VERDICTS[self.exit_status]
        return self.ended

    def verdicts(self) -> dict:
        return dict((name, v) for v, name in self.subtests)


@dataclass(frozen=True)
class Row:
    test: str
    subtest: str
    qemu: str
    ours: str

    @property
    def regression(self) -> bool:
        return self.qemu == "PASS" and self.ours != "PASS"


# -- the suite's configuration ---------------------------------------------------------------

def _unquote(text: str) -> str:
    parts = shlex.split(text) if text else []
    return " ".join(parts)


def _memory_from(qemu_params: str) -> int:
    args = shlex.split(qemu_params or "")
    for i, a in enumerate(args[:-1]):
        if a == "-m":
            m = re.fullmatch(r"(\d+)([MG]?)", args[i + 1].upper())
            if m:
                return int(m.group(1)) * (1024 if m.group(2) == "G" else 1)
    return DEFAULT_MEMORY_MB


def load_tests(suite: pathlib.Path = SUITE_DIR) -> list[KutTest]:
    """Every test of ``unittests.cfg`` the bundled i386 build can run, then the bundled kernels
    that have no section of their own, in file order."""
    cfg_path = suite / "unittests.cfg"
    if not cfg_path.is_file():
        raise UserError(f"kvm-unit-tests are not where expected: {cfg_path} is missing")
    cfg = configparser.ConfigParser(interpolation=None, strict=False, comment_prefixes=("#",))
    cfg.read(cfg_path)
    bundled = {p.name for p in (suite / "i386").glob("*.flat")}
    tests, used = [], set()
    for name in cfg.sections():
        sec = cfg[name]
        file = sec.get("file", "")
        if file not in bundled or sec.get("arch", "i386") != "i386":
            continue
        used.add(file)
        tests.append(KutTest(name, file, smp=int(sec.get("smp", "1")),
                             append=_unquote(sec.get("test_args", "")),
                             memory_mb=_memory_from(sec.get("qemu_params", "")),
                             timeout=float(sec.get("timeout", DEFAULT_TIMEOUT)),
                             groups=tuple(sec.get("groups", "").split())))
    for file in sorted(bundled - used):
        tests.append(KutTest(file.removesuffix(".flat"), file))
    return tests


def select(tests: list[KutTest], names) -> list[KutTest]:
    """The tests named (a test's name, or its kernel's file name without .flat), in order given."""
    if not names:
        return list(tests)
    out = []
    for n in names:
        found = [t for t in tests if t.name == n] or [t for t in tests if t.file == f"{n}.flat"]
        if not found:
            raise UserError(f"no kvm-unit-test named {n!r} (trapvisor kut --list shows them)")
        out.extend(t for t in found if t not in out)
    return out


# -- reading a test's console ------------------------------------------------------------------

def parse_output(text: str) -> tuple[list, str | None]:
    """The (verdict, subtest) lines and the SUMMARY of a test's console output."""
    subtests, seen, summary = [], {}, None
    for line in text.replace("\r", "").splitlines():
        m = VERDICT_LINE.match(line)
        if m:
            verdict, name = m.groups()
            seen[name] = seen.get(name, 0) + 1
            subtests.append((verdict, name if seen[name] == 1 else f"{name} #{seen[name]}"))
            continue
        m = SUMMARY_LINE.match(line)
        if m:
            summary = m.group(1)
    return subtests, summary


def _outcome(machine, status, ended, output, seconds) -> Outcome:
    subtests, summary = parse_output(output)
    return Outcome(machine, status, ended, subtests, summary, seconds, output)


# -- the two machines --------------------------------------------------------------------------

def qemu_command(test: KutTest, suite: pathlib.Path = SUITE_DIR) -> list[str]:
    """The reference command: the suite's own device set, TCG, the test's -smp/-m/-append."""
    hosttools.require(*hosttools.QEMU)
    cmd = ["qemu-system-i386", "-nodefaults", "-nographic", "-vnc", "none",
           "-serial", "stdio", "-monitor", "none", "-display", "none",
           "-device", "isa-debug-exit,iobase=0xf4,iosize=0x4", "-machine", "accel=tcg",
           "-m", str(test.memory_mb), "-smp", str(test.smp), "-kernel", str(test.kernel(suite))]
    if test.append:
        cmd += ["-append", test.append]
    return cmd


def run_on_qemu(test: KutTest, suite: pathlib.Path = SUITE_DIR, timeout: float | None = None) -> Outcome:
    cmd = qemu_command(test, suite)
    start = time.perf_counter()
    try:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=timeout or test.timeout)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode("latin-1")
        return _outcome("qemu", None, "TIMEOUT", out, time.perf_counter() - start)
    out = p.stdout.decode("latin-1")
    ended = EXIT_VERDICTS.get(p.returncode, f"exit {p.returncode}")
    return _outcome("qemu", p.returncode, ended, out, time.perf_counter() - start)


def trapvisor_budget(test: KutTest) -> float:
    """Wall seconds trapvisor gets: the cfg timeout, times SLOW_FACTOR for sieve."""
    return test.timeout * (SLOW_FACTOR if test.name in FINISH_GIVEN_TIME else 1)


def run_on_trapvisor(test: KutTest, suite: pathlib.Path = SUITE_DIR, timeout: float | None = None) -> Outcome:
    from ..machine.pc import PC
    if test.smp > 1:
        return Outcome("trapvisor", None, NOT_RUN,
                       output=f"needs {test.smp} CPUs; the simulated PC has one")
    chunks: list[bytes] = []
    start = time.perf_counter()
    pc = PC(test.memory_mb << 20, serial_out=chunks.append)
    try:
        pc.load_kernel(str(test.kernel(suite)), cmdline=test.append)
        result = pc.run(max_seconds=timeout or trapvisor_budget(test))
    finally:
        pc.board.close()
    out = b"".join(chunks).decode("latin-1")
    if result.exit_code is not None:
        ended = EXIT_VERDICTS.get(result.exit_code, f"exit {result.exit_code}")
    elif result.stop_reason == "time limit":
        ended = "TIMEOUT"
    else:
        ended = f"stopped: {result.stop_reason}"
        if result.detail:
            out += f"\n[trapvisor: {result.stop_reason}: {result.detail}]\n"
    return _outcome("trapvisor", result.exit_code, ended, out, time.perf_counter() - start)


# -- the table --------------------------------------------------------------------------------

def compare(test: KutTest, qemu: Outcome, ours: Outcome) -> list[Row]:
    """One row per subtest either machine reported (QEMU's order first), then the exit row."""
    q, o = qemu.verdicts(), _matched(ours.verdicts(), qemu.verdicts())
    names = [n for _, n in qemu.subtests] + [n for n in o if n not in q]
    absent = NOT_RUN if ours.ended == NOT_RUN else NOT_REACHED
    rows = [Row(test.name, n, q.get(n, NOT_REACHED), o.get(n, absent)) for n in names]
    rows.append(Row(test.name, EXIT_ROW, qemu.verdict, ours.verdict))
    return rows


def _masked(name: str) -> str:
    return re.sub(r"\d+", "N", name)


def _matched(ours: dict, qemu: dict) -> dict:
    """``ours`` renamed so that a subtest whose text differs from QEMU's only in its numbers
    (hpet_read_test's "read test took 0 ms, avg read: 0 ns") takes QEMU's name."""
    unmatched = {}
    for n in qemu:
        if n not in ours:
            unmatched.setdefault(_masked(n), n)
    out = {}
    for n, v in ours.items():
        out[n if n in qemu else unmatched.pop(_masked(n), n)] = v
    return out


def regressions(rows: list[Row], known: dict | None = None) -> list[Row]:
    """The rows QEMU passes and trapvisor does not, except those ``known`` lists
    (keyed by (test, subtest); a subtest of "*" stands for every row of the test)."""
    known = known or {}
    return [r for r in rows if r.regression
            and (r.test, r.subtest) not in known and (r.test, "*") not in known]


def totals(rows: list[Row]) -> dict:
    """Subtest counts (the exit rows left out): how many each machine passed, of how many."""
    sub = [r for r in rows if r.subtest != EXIT_ROW]
    return {"subtests": len(sub),
            "qemu_pass": sum(r.qemu == "PASS" for r in sub),
            "ours_pass": sum(r.ours == "PASS" for r in sub),
            "both_pass": sum(r.qemu == "PASS" and r.ours == "PASS" for r in sub),
            "regressions": sum(r.regression for r in sub)}


def render_table(rows: list[Row], *, markdown: bool = False) -> str:
    head = ("test", "subtest", "QEMU", "trapvisor")
    data = [(r.test, r.subtest, r.qemu, r.ours) for r in rows]
    if markdown:
        esc = [tuple(c.replace("|", "\\|") for c in row) for row in data]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in esc]
        return "\n".join(lines)
    widths = [max(len(h), *(len(row[i]) for row in data)) if data else len(h) for i, h in enumerate(head)]
    widths[1] = min(widths[1], 70)
    fmt = "  ".join(f"{{:{w}.{w}}}" if i == 1 else f"{{:{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*head).rstrip(), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*row).rstrip() for row in data]
    return "\n".join(lines)


def load_known_failures(path: pathlib.Path) -> dict:
    """The list of rows trapvisor is allowed to fail: {(test, subtest): reason}.

    TOML, one table per entry::

        [[failure]]
        test = "realmode"
        subtest = "*"            # every row of the test
        reason = "no real mode"

    Every entry must give a test, a subtest and a non-empty reason.
    """
    import tomllib
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise UserError(f"cannot read the known-failures list {path}: {e}") from None
    out = {}
    for i, entry in enumerate(data.get("failure", []), 1):
        test, sub, reason = entry.get("test"), entry.get("subtest"), entry.get("reason", "").strip()
        if not test or sub is None or not reason:
            raise UserError(f"{path}: entry {i} needs test, subtest and a reason")
        out[(test, sub)] = reason
    return out


# -- docs/kvm-unit-tests.md ----------------------------------------------------------------------

# The same table before this work (branch kut's first commit, 2a720fd: the runner, on the PC as
# it was): `trapvisor kut --timeout 10` -- no fw_cfg, so every test waited for 65534 CPUs.
BEFORE = {"subtests": 1330, "qemu_pass": 210, "ours_pass": 0}


def render_doc(rows: list[Row], known: dict, command: str) -> str:
    """docs/kvm-unit-tests.md: what the suite is, how it is run, the totals and the table."""
    tot = totals(rows)
    bad = regressions(rows, known)
    per_test = {}
    for r in rows:
        if r.subtest == EXIT_ROW:
            per_test[r.test] = (r.qemu, r.ours)
    lines = [
        "# kvm-unit-tests on trapvisor",
        "",
        "<!-- generated by `" + command + "`; do not edit by hand -->",
        "",
        "The i386 build of upstream kvm-unit-tests (commit 1da1819e, GPL-2.0, bundled with its source",
        "in `third_party/kvm-unit-tests`) run on the simulated PC and on `qemu-system-i386` TCG (its",
        "default CPU) with each test's `-smp`, `-m` and `-append` from `unittests.cfg`, no environment",
        "module (both machines answer fw_cfg).  `trapvisor kut [TEST...]` prints this table;",
        "`tests/kut/test_suite.py` (in `make test`) fails on a subtest QEMU passes and trapvisor does",
        "not, unless `tests/kut/known_failures.toml` lists it with its reason.  sieve takes minutes on",
        "the simulated PC and runs only under `make kut` (and `trapvisor kut --all`).",
        "",
        "## Totals",
        "",
        "| | subtests | QEMU passes | trapvisor passes |",
        "|---|---|---|---|",
        f"| before (2a720fd, `trapvisor kut --timeout 10`) | {BEFORE['subtests']} | {BEFORE['qemu_pass']} "
        f"| {BEFORE['ours_pass']} |",
        f"| now | {tot['subtests']} | {tot['qemu_pass']} | {tot['ours_pass']} |",
        "",
        f"Subtests both pass: {tot['both_pass']}.  QEMU passes and trapvisor does not: "
        f"{tot['regressions']}, {len(bad)} of them outside the known-failures list.",
        "",
        "## Whole tests (exit status: PASS = 1 all passed, FAIL = 3, SKIP = 77)",
        "",
        "| test | QEMU | trapvisor |",
        "|---|---|---|",
    ]
    lines += [f"| {t} | {q} | {o} |" for t, (q, o) in per_test.items()]
    lines += ["", "## Known failures", "", "| test | subtest | reason |", "|---|---|---|"]
    lines += [f"| {t} | {s.replace('|', chr(92) + '|')} | {why} |" for (t, s), why in known.items()]
    lines += ["", "## Every subtest", "", render_table(rows, markdown=True), ""]
    return "\n".join(lines)
