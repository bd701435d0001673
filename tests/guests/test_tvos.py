"""tvos on QEMU: every workload, checked against independent Python models
(expected.py), plus the probe, the in-guest self tests, determinism and
the error paths."""

import re

import pytest

from trapvisor.guests import build_guest

from . import expected
from .qemu import run_kernel

RESULT = re.compile(r"^result (\S+) iterations=(\d+) checksum=0x([0-9a-f]{8})$")


@pytest.fixture(scope="module")
def tvos():
    return build_guest("tvos")


def boot(kernel, workload, iterations=None):
    append = f"workload={workload}" + (f" iterations={iterations}" if iterations else "")
    return run_kernel(kernel, append=append)


def result_of(run, workload, iterations):
    """The checksum from the last line, after checking the line's shape."""
    assert run.exit_code == 1, f"exit code {run.exit_code}; output:\n{run.output}"
    assert run.lines[0] == f"tvos: workload={workload} iterations={iterations}"
    m = RESULT.match(run.lines[-1])
    assert m, run.output
    assert m.group(1) == workload and int(m.group(2)) == iterations
    return int(m.group(3), 16)


SMALL = {"compute": 3, "syscall": 2000, "ctxswitch": 200, "pgfault": 300,
         "ptemod": 300, "forkwait": 40, "divzero": 300}


@pytest.mark.parametrize("workload", sorted(SMALL))
def test_user_workload_checksum(tvos, workload):
    n = SMALL[workload]
    run = boot(tvos, workload, n)
    assert result_of(run, workload, n) == expected.USER[workload](n)
    assert len(run.lines) == 2      # banner and result, nothing else


@pytest.mark.parametrize("workload, n", [("io", 500), ("crwrite", 501)])
def test_kernel_workload_checksum(tvos, workload, n):
    run = boot(tvos, workload, n)
    assert result_of(run, workload, n) == expected.KERNEL[workload](n)


def test_mixed_workload(tvos):
    n = 3
    run = boot(tvos, "mixed", n)
    checksum, workers = expected.mixed(n)
    assert result_of(run, "mixed", n) == checksum
    assert run.lines[1:-1] == [f"mixed {w} iterations={i} checksum=0x{c:08x}"
                               for w, i, c in workers]


def test_default_workload_is_mixed(tvos):
    run = run_kernel(tvos, append="iterations=1")
    assert result_of(run, "mixed", 1) == expected.mixed(1)[0]


def test_probe_lines(tvos):
    run = boot(tvos, "probe")
    assert result_of(run, "probe", 1) == expected.probe()
    assert run.lines[1:-1] == expected.PROBE_LINES


def test_probe_repeats_identically(tvos):
    run = boot(tvos, "probe", 5)
    assert result_of(run, "probe", 5) == expected.probe()
    assert run.lines[1:-1] == expected.PROBE_LINES   # printed once


def test_selftest(tvos):
    run = boot(tvos, "selftest")
    assert result_of(run, "selftest", 1) == expected.selftest()
    assert run.lines[1:-1] == [f"selftest {t} ok" for t in expected.SELFTESTS]


def test_protect_ring3_cannot_do_kernel_things(tvos):
    run = boot(tvos, "protect", 2)
    assert result_of(run, "protect", 2) == expected.protect(2)
    reports = [ln for ln in run.lines if ln.startswith("protect ")]
    assert reports == [f"protect {name} status={status} trapped"
                       for name, status in expected.PROTECT]
    kills = [ln for ln in run.lines if ln.startswith("tvos: pid ")]
    assert len(kills) == 2 * len(expected.PROTECT)
    assert kills[0].startswith("tvos: pid 2 killed: page fault at eip 0x")
    assert kills[0].endswith(", address 0x00100000")
    assert re.fullmatch(r"tvos: pid 4 killed: general protection at eip 0x8[0-9a-f]{7}", kills[2])


def test_panic_path_prints_cause_and_exit_value_2(tvos):
    run = boot(tvos, "panic")
    assert run.exit_value == 2
    assert run.lines[-1].startswith(
        "tvos: panic: page fault (trap 14, error 0x2) in kernel at eip 0x")
    assert run.lines[-1].endswith("cr2 0x00000000")


@pytest.mark.parametrize("workload, n", [("mixed", 4), ("probe", 1), ("ctxswitch", 500)])
def test_two_runs_are_byte_identical(tvos, workload, n):
    first = boot(tvos, workload, n)
    second = boot(tvos, workload, n)
    assert first.output == second.output and first.exit_code == second.exit_code == 1


def test_runs_with_little_memory(tvos):
    run = run_kernel(tvos, append="workload=forkwait iterations=20", memory_mib=16)
    assert result_of(run, "forkwait", 20) == expected.forkwait(20)


@pytest.mark.parametrize("append, message", [
    ("workload=nosuch", "unknown workload 'nosuch'"),
    ("workload=compute iterations=abc", "iterations must be a decimal number"),
    ("workload=compute iterations=0", "iterations must be 1..999999999"),
])
def test_bad_command_line_is_one_line_and_exit_value_3(tvos, append, message):
    run = run_kernel(tvos, append=append)
    assert run.exit_value == 3
    assert len(run.lines) == 1
    assert run.lines[0].startswith(f"tvos: bad command line: {message} (usage:")
