"""Snapshots: a machine saved in the middle of a guest OS workload and restored into a
freshly built one runs on to the same output, instruction count and exit as the run
that was never interrupted; every piece of state (CPU, each device, the clock's timers,
the monitor's shadow structures) reads back as it was saved; bad files are one line."""

import subprocess
import sys

import pytest

from trapvisor.debug import snapshot
from trapvisor.guests import build_guest
from trapvisor.vmm.monitor import RunOptions, get

LIMIT = 2_000_000_000
WORKLOADS = ["mixed iterations=1", "compute iterations=2", "syscall iterations=200",
             "ctxswitch iterations=200", "pgfault iterations=100", "ptemod iterations=200",
             "forkwait iterations=20", "io iterations=200", "divzero iterations=200",
             "crwrite iterations=200", "probe", "selftest", "protect", "panic"]
CASES = [("native", w) for w in WORKLOADS] + [
    (t, w) for t in ("trap-emulate", "emulate") for w in ("mixed iterations=1", "io iterations=200",
                                                         "pgfault iterations=100")]


def build(technique, workload, sink):
    return get(technique)(RunOptions(str(build_guest("tvos")), cmdline=f"workload={workload}",
                                     serial_out=sink.extend))


def steps_to_end(technique, workload) -> int:
    m = build(technique, workload, bytearray())
    m.run(LIMIT)
    return m.steps()


@pytest.mark.parametrize("technique,workload", CASES)
def test_a_snapshot_in_the_middle_restores_to_the_same_end(technique, workload, tmp_path):
    half = steps_to_end(technique, workload) // 2
    before = bytearray()
    m = build(technique, workload, before)
    m.start_clock()
    m.run_slice(half, LIMIT)
    path = str(tmp_path / "s.snap")
    snapshot.save(path, m, {"technique": technique})
    at = len(before)
    m.run_slice(LIMIT, LIMIT)
    full = m.result()

    after = bytearray()
    fresh = build(technique, workload, after)
    snapshot.apply(snapshot.load(path)["state"], fresh)
    assert fresh.steps() == half or fresh.steps() > half      # a technique stops at the first boundary
    fresh.run_slice(LIMIT, LIMIT)
    restored = fresh.result()
    assert bytes(before[:at] + after) == bytes(before) and after, "the output after the snapshot differs"
    assert (restored.instructions, restored.exit_code, restored.stop_reason) == \
        (full.instructions, full.exit_code, full.stop_reason)
    assert fresh.steps() == m.steps()


@pytest.mark.parametrize("technique", ["native", "trap-emulate", "emulate"])
def test_every_piece_of_state_reads_back_as_saved(technique):
    """The state tree of the restored machine equals the saved one: every device's registers,
    the clock's timers, the CPU (TLBs included), the monitor's shadow page tables and GDT."""
    m = build(technique, "mixed iterations=1", bytearray())
    m.start_clock()
    m.run_slice(3_000_000, LIMIT)
    saved = snapshot.capture(m)
    fresh = build(technique, "mixed iterations=1", bytearray())
    snapshot.apply(saved, fresh)
    again = snapshot.capture(fresh)
    assert again == saved
    # A changed device register would show: poke one and the trees differ.
    fresh_devices = (fresh.pc if technique == "native" else fresh.vm).devices
    fresh_devices.pic.master.imr ^= 0x80
    assert snapshot.capture(fresh) != saved


def test_ram_is_saved_sparsely(tmp_path):
    m = build("native", "syscall iterations=200", bytearray())
    path = tmp_path / "s.snap"
    snapshot.save(str(path), m, {})
    assert path.stat().st_size < 2 << 20          # 128 MiB of RAM, a few hundred KiB on disk


def tv(*args):
    return subprocess.run([sys.executable, "-m", "trapvisor", *args], capture_output=True, text=True,
                          timeout=300)


def _instructions(summary: str) -> str:
    """The instruction count of an uninterrupted run's summary line ("794,406 instructions")."""
    import re
    m = re.search(r"([\d,]+) instructions", summary)
    assert m, summary
    return m.group(1)


def test_the_command_line_snapshots_and_restores(tmp_path):
    snap = str(tmp_path / "m.snap")
    full = tv("run", "guest:tvos", "--append", "workload=syscall iterations=300")
    first = tv("run", "guest:tvos", "--append", "workload=syscall iterations=300", "--snapshot-at", "400000",
               "--snapshot", snap)
    assert first.stdout == full.stdout and first.returncode == full.returncode == 1
    assert "snapshot after 400,000 guest steps written to" in first.stderr
    second = tv("run", "--restore", snap)
    assert second.returncode == 1 and full.stdout.endswith(second.stdout) and second.stdout
    assert "restored" in second.stderr and f"{_instructions(full.stderr)} guest instructions" in second.stderr


@pytest.mark.parametrize("damage,message", [
    (lambda d: b"not a snapshot", "not a trapvisor snapshot"),
    (lambda d: d[:len(snapshot.MAGIC)] + (7).to_bytes(4, "little") + d[len(snapshot.MAGIC) + 4:],
     "snapshot format version 7; this trapvisor reads version 1"),
    (lambda d: d[:-10] + bytes(10), "corrupt snapshot (checksum mismatch)"),
    (lambda d: d[:30], "corrupt snapshot (truncated header)"),
])
def test_a_bad_snapshot_file_is_one_line(tmp_path, damage, message):
    good = tmp_path / "good.snap"
    m = build("native", "syscall iterations=200", bytearray())
    snapshot.save(str(good), m, {"technique": "native"})
    bad = tmp_path / "bad.snap"
    bad.write_bytes(damage(good.read_bytes()))
    p = tv("run", "--restore", str(bad))
    assert p.returncode == 2 and "Traceback" not in p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0]


def test_a_payload_that_names_a_class_is_refused():
    import hashlib
    import pickle
    import struct
    import zlib
    payload = zlib.compress(pickle.dumps({"options": {}, "state": subprocess.Popen, "steps": 0}))
    data = snapshot.MAGIC + struct.pack("<I", snapshot.VERSION) + hashlib.sha256(payload).digest() + payload
    with pytest.raises(snapshot.SnapshotError, match="plain data only"):
        snapshot.decode(data)


def test_a_snapshot_taken_at_a_gdb_stop_restores(tmp_path):
    from tests.hosttools_gate import need

    from .gdbrun import WORKLOAD, gdb_session
    need("gdb")
    snap = str(tmp_path / "stop.snap")
    s = gdb_session([], ["break scheduler", "continue", f"monitor snapshot {snap}", "kill"])
    assert "Breakpoint 1, scheduler ()" in s.gdb and f"written to {snap}" in s.gdb
    full = tv("run", "guest:tvos", "--append", WORKLOAD)
    rest = tv("run", "--restore", snap)
    assert rest.returncode == 1 and rest.stdout and full.stdout.endswith(rest.stdout)
    assert f"{_instructions(full.stderr)} guest instructions" in rest.stderr
