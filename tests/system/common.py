"""Shared helpers of the system-level differential tests (tests/system/test_*.py).

Every test module defines ``CASES`` (a list of :class:`runner.Case`) and
``test_case = case_test(CASES)``; ``catalog.all_cases()`` collects them for
the command line (``python -m tests.system.harness.runner``).
"""

from __future__ import annotations

import os

import pytest

from tests.hosttools_gate import need
from tests.system.harness import runner
from trapvisor import hosttools
from tests.system.harness.runner import Case

# A larger run: TVSYS_LARGE=1 widens the parameter sweeps (every CPL, every
# IOPL) and TVSYS_EXAMPLES sets the number of hypothesis examples.
LARGE = os.environ.get("TVSYS_LARGE", "") not in ("", "0")


def variants(name: str, body: str, *, cpls=(0, 3), iopls=(0,), topic: str = "", **kw) -> list[Case]:
    """The same snippet at several CPLs and IOPLs (every one of 0..3 with TVSYS_LARGE)."""
    if LARGE:
        cpls = sorted(set(cpls) | {0, 1, 2, 3}) if len(cpls) > 1 else cpls
        iopls = sorted(set(iopls) | {0, 1, 2, 3}) if len(iopls) > 1 else iopls
    out = []
    for c in cpls:
        for i in iopls:
            suffix = f"-cpl{c}" + (f"-iopl{i}" if len(iopls) > 1 or i else "")
            out.append(Case(name + suffix, body, cpl=c, iopl=i, topic=topic, **kw))
    return out


def case_test(cases: list[Case]):
    """A pytest test function parametrized over ``cases``."""
    names = [c.name for c in cases]
    dup = {n for n in names if names.count(n) > 1}
    assert not dup, f"duplicate case names: {sorted(dup)}"

    @pytest.mark.parametrize("case", cases, ids=names)
    def test_case(case, system_machines):
        if case.qemu_differs:
            need(*hosttools.BOCHS)      # QEMU differs from Intel here: Bochs decides
        runner.check(case)
    return test_case
