"""`trapvisor compare` gives the same table it gave before the monitor interface
was rebuilt: cycles, trap counts by reason, efficiency, equivalence.

The recording (data/compare_recorded.json) was made at commit 270f5c2, before
techniques reached the CPU through typed exits and intercept controls; every
figure here is deterministic (virtual time, no wall clock), so any change in
how the monitor dispatches, counts or charges shows up as a difference.
After a deliberate change of the cost model or of the monitor's behaviour,
regenerate it with ``TRAPVISOR_RECORD=1 pytest tests/vmm/test_compare_recorded.py``
and say why in the commit.
"""

import json
import os
import pathlib

import pytest

from trapvisor.guests import build_guest
from trapvisor.report.compare import compare

RECORDING = pathlib.Path(__file__).parent / "data" / "compare_recorded.json"
CASES = [
    # (name, cmdline, techniques, strict): the two comparisons of `make demo`, and a
    # context-switch-heavy one for the shadow page-table cache.
    ("probe-standard", "workload=probe", ("native", "trap-emulate"), False),
    ("mixed-strict", "workload=mixed iterations=1", ("native", "emulate", "trap-emulate"), True),
    ("ctxswitch-strict", "workload=ctxswitch iterations=30", ("native", "trap-emulate"), True),
]
KEYS = ("technique", "cpu", "identical", "first_difference", "exit_code", "stop_reason",
        "instructions", "direct", "traps", "cycles", "notes")


def fixed_path_kernel() -> str:
    """tvos at a path of fixed length: the Multiboot command line begins with the
    kernel's path, and its length changes the instruction counts (a clone elsewhere)."""
    import shutil
    d = pathlib.Path("/tmp/trapvisor-recorded")
    d.mkdir(exist_ok=True)
    k = d / "tvos.elf"
    shutil.copyfile(build_guest("tvos"), k)
    return str(k)


def table(cmdline, techniques, strict) -> list[dict]:
    rows = compare(fixed_path_kernel(), cmdline=cmdline, techniques=techniques, strict=strict,
                   memory_bytes=128 << 20, max_instructions=200_000_000)
    return [{k: r.to_dict()[k] for k in KEYS} for r in rows]


@pytest.mark.parametrize("name,cmdline,techniques,strict", CASES, ids=[c[0] for c in CASES])
def test_compare_table_is_as_recorded(name, cmdline, techniques, strict):
    got = table(cmdline, techniques, strict)
    if os.environ.get("TRAPVISOR_RECORD"):
        data = json.loads(RECORDING.read_text()) if RECORDING.exists() else {}
        data[name] = got
        RECORDING.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    recorded = json.loads(RECORDING.read_text())[name]
    for want, have in zip(recorded, got, strict=True):
        for k in KEYS:
            assert have[k] == want[k], f"{name}, {want['technique']}: {k} changed"
