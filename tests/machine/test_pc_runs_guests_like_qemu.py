"""The simulated PC boots the bundled guests exactly as qemu-system-i386 does.

Each guest runs on trapvisor's PC and on QEMU (TCG, an independent
implementation of the same PC); the complete console output and the exit
code must be identical, byte for byte.  Iteration counts are small: these
tests prove equality, the benchmarks measure speed.
"""

from __future__ import annotations

import io

import pytest

from trapvisor.guests import build_guest
from trapvisor.machine.pc import run_kernel
from tests.guests import qemu

# (guest, command line)
CASES = [
    ("hello", None),
    ("paging-timer", None),
    ("ring3", None),
    ("aout", None),
    ("bench", "alu=1000 call=1000 sweep=2 stos=3 movs=2 int=100"),
    ("tvos", "workload=probe"),
    ("tvos", "workload=selftest"),
    ("tvos", "workload=compute iterations=1"),
    ("tvos", "workload=syscall iterations=200"),
    ("tvos", "workload=ctxswitch iterations=100"),
    ("tvos", "workload=pgfault iterations=50"),
    ("tvos", "workload=ptemod iterations=50"),
    ("tvos", "workload=forkwait iterations=3"),
    ("tvos", "workload=io iterations=200"),
    ("tvos", "workload=divzero iterations=50"),
    ("tvos", "workload=crwrite iterations=200"),
    ("tvos", "workload=mixed iterations=1"),
    ("tvos", "workload=protect"),
    ("tvos", "workload=panic"),
]


def run_on_trapvisor(kernel, append):
    out = io.BytesIO()
    result = run_kernel(kernel, cmdline=append or "", serial_out=out.write,
                        max_instructions=400_000_000)
    assert result.stop_reason is None, f"{result.stop_reason}: {result.detail}\n{out.getvalue()!r}"
    return out.getvalue().decode("latin-1"), result.exit_code


@pytest.mark.parametrize("guest,append", CASES, ids=[f"{g}:{a or ''}" for g, a in CASES])
def test_console_output_and_exit_code_match_qemu(guest, append):
    kernel = build_guest(guest)
    ours, our_code = run_on_trapvisor(kernel, append)
    theirs = qemu.run_kernel(kernel, append, timeout=60)
    assert ours == theirs.output, "console output differs from QEMU"
    assert our_code == theirs.exit_code
    assert ours.strip(), "the guest printed nothing"
