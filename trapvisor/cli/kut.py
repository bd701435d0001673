"""``trapvisor kut [TEST...]``: the bundled kvm-unit-tests on trapvisor and on QEMU, one table.

The runs and the table are ``report/kut.py``; this module checks the
options, runs the tests named (default: all of them but the slow ones, which
``--all`` or naming them adds; with ``--write-docs``, all but sieve), prints the table (test, subtest, QEMU's
verdict, trapvisor's) and the totals, and exits 1 when a subtest QEMU passes
fails on trapvisor and is not in the known-failures list (``--known``;
default ``tests/kut/known_failures.toml``), 0 otherwise.
"""

from __future__ import annotations

import pathlib
import sys

from . import options as o

DEFAULT_KNOWN = pathlib.Path(__file__).resolve().parent.parent.parent / "tests" / "kut" / "known_failures.toml"


def add_parser(sub) -> None:
    p = sub.add_parser("kut", help="run the bundled kvm-unit-tests on trapvisor and QEMU; one table")
    p.add_argument("tests", nargs="*", metavar="TEST",
                   help="tests to run, by unittests.cfg name or kernel name (default: all but the slow ones)")
    p.add_argument("--all", action="store_true",
                   help="include the slow tests (sieve, la57, s3, the vmexit benchmarks: --list says why)")
    p.add_argument("--list", action="store_true", help="list the tests with their options and exit")
    p.add_argument("--timeout", type=o.seconds, default=None, metavar="SECONDS",
                   help="wall-time limit per test and machine (default: the test's own, from unittests.cfg)")
    p.add_argument("--known", type=o.readable_file("known-failures list"), default=None, metavar="TOML",
                   help="rows trapvisor may fail, with reasons (default tests/kut/known_failures.toml)")
    p.add_argument("--markdown", action="store_true", help="print the table in Markdown")
    p.add_argument("--write-docs", type=o.writable_file("docs page"), default=None, metavar="MD",
                   help="also write the results page (docs/kvm-unit-tests.md) from this run")
    p.add_argument("--output", type=o.writable_file("console log"), default=None, metavar="FILE",
                   help="also write both machines' console output of every test to FILE")
    p.set_defaults(func=cmd_kut)


def _list(tests) -> int:
    from ..report.kut import SLOW, trapvisor_budget
    for t in tests:
        extra = [f"-smp {t.smp}", f"-m {t.memory_mb}", f"timeout {t.timeout:g}s"]
        if t.append:
            extra.append(f"-append {t.append!r}")
        if t.slow:
            extra.append(f"slow ({SLOW[t.name]}): trapvisor gets {trapvisor_budget(t):g}s")
        print(f"{t.name:24} {t.file:24} {', '.join(extra)}")
    return 0


def cmd_kut(args) -> int:
    from ..report import kut
    tests = kut.load_tests()
    if args.list:
        return _list(kut.select(tests, args.tests))
    if args.tests:
        chosen = kut.select(tests, args.tests)
    elif args.write_docs:     # the page shows every test but sieve (minutes), unless --all
        chosen = [t for t in tests if args.all or t.name not in kut.FINISH_GIVEN_TIME]
    else:
        chosen = [t for t in tests if args.all or not t.slow]
    known_path = pathlib.Path(args.known) if args.known else DEFAULT_KNOWN
    known = kut.load_known_failures(known_path) if known_path.exists() else {}
    log = o.open_output(args.output, "console log") if args.output else None
    rows = []
    try:
        for t in chosen:
            q = kut.run_on_qemu(t, timeout=args.timeout)
            ours = kut.run_on_trapvisor(t, timeout=args.timeout)
            print(f"{t.name}: QEMU {q.ended} ({q.seconds:.1f} s), trapvisor {ours.ended} "
                  f"({ours.seconds:.1f} s)", file=sys.stderr, flush=True)
            if log:
                for r in (q, ours):
                    log.write(f"===== {t.name} on {r.machine}: {r.ended}\n{r.output}\n")
            rows += kut.compare(t, q, ours)
    finally:
        if log:
            log.close()
    print(kut.render_table(rows, markdown=args.markdown))
    tot = kut.totals(rows)
    bad = kut.regressions(rows, known)
    print(f"\n{tot['subtests']} subtests: QEMU passes {tot['qemu_pass']}, trapvisor {tot['ours_pass']} "
          f"({tot['both_pass']} both); {tot['regressions']} QEMU passes and trapvisor does not, "
          f"{len(bad)} of them not in {known_path.name}")
    for r in bad:
        print(f"  unexpected: {r.test}: {r.subtest}: trapvisor {r.ours}")
    if args.write_docs:
        command = "trapvisor kut --write-docs docs/kvm-unit-tests.md" + (" --all" if args.all else "")
        with o.open_output(args.write_docs, "docs page") as f:
            f.write(kut.render_doc(rows, known, command))
    return 1 if bad else 0
