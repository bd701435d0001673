"""The bundled kvm-unit-tests, on trapvisor and on QEMU: no subtest QEMU passes may fail on trapvisor,
except the rows of tests/kut/known_failures.toml (each with its reason).

One test per kvm-unit-test.  The slow ones (report.kut.SLOW, each with why: sieve, minutes on the
simulated PC; la57 and s3, which end on neither machine; the vmexit benchmarks) run only with TRAPVISOR_KUT_SLOW=1 (``make kut``).  A test QEMU passes nothing of is not
run on trapvisor (there is nothing to hold it to).
"""

import os

import pytest

from tests.hosttools_gate import need
from trapvisor import hosttools
from trapvisor.cli.kut import DEFAULT_KNOWN
from trapvisor.report import kut

SLOW_TOO = os.environ.get("TRAPVISOR_KUT_SLOW", "") not in ("", "0")
TESTS = kut.load_tests()
KNOWN = kut.load_known_failures(DEFAULT_KNOWN)


@pytest.mark.parametrize("test", TESTS, ids=[t.name for t in TESTS])
def test_trapvisor_passes_what_qemu_passes(test):
    if test.slow and not SLOW_TOO:
        pytest.skip(f"{test.name} takes minutes ({kut.SLOW[test.name]}): run with TRAPVISOR_KUT_SLOW=1 (make kut)")
    need(*hosttools.QEMU)
    qemu = kut.run_on_qemu(test)
    if not any(v == "PASS" for v, _ in qemu.subtests) and qemu.verdict != "PASS":
        pytest.skip(f"QEMU passes nothing of {test.name} ({qemu.ended})")
    ours = kut.run_on_trapvisor(test)
    rows = kut.compare(test, qemu, ours)
    bad = kut.regressions(rows, KNOWN)
    tail = "\n".join(ours.output.splitlines()[-8:])
    assert not bad, (f"{test.name}: QEMU passes, trapvisor does not: "
                     + "; ".join(f"{r.subtest} ({r.ours})" for r in bad) + f"\n--- trapvisor's console tail:\n{tail}")
    # A listed failure that trapvisor now passes must leave the list.
    failing = {r.subtest for r in rows if r.regression}
    stale = [sub for (t, sub) in KNOWN if t == test.name and (sub not in failing if sub != "*" else not failing)]
    assert not stale, f"{test.name}: known_failures.toml lists rows trapvisor now passes: {stale}"

