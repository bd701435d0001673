"""Record and replay: a run whose output depends on when its input arrives is recorded and
replayed instruction for instruction (the instruction traces are compared), on the bare PC
and under the techniques; a divergence is reported where it starts; bad files are one line;
and on a replay gdb steps and continues backwards (reverse-stepi, reverse-continue,
reverse-finish)."""

import hashlib
import json
import random
import re
import subprocess
import sys

import pytest

from tests.hosttools_gate import need
from trapvisor.debug.replay import Recorder, Replayer, ReplayError
from trapvisor.guests import build_guest
from trapvisor.vmm.monitor import RunOptions, get

from .gdbrun import gdb_session

LIMIT = 50_000_000


class Typist:
    """Live input: the bytes of ``text`` arrive at polls chosen by a seeded random schedule."""

    def __init__(self, text: bytes, seed: int):
        self.text, self.rng = list(text), random.Random(seed)

    def __call__(self) -> bytes:
        if self.text and self.rng.random() < 0.5:
            return bytes([self.text.pop(0)])
        return b""


def traced_run(technique, kernel, cmdline, source, attach=None):
    """Run to the end; returns (console, digest of every executed instruction's address, steps)."""
    out = bytearray()
    m = get(technique)(RunOptions(kernel, cmdline=cmdline, serial_out=out.extend, serial_in=source))
    h = hashlib.sha256()
    cpu = m.host if m.uses_host else (m.pc.cpu if technique == "native" else m.vm.vcpu)

    def block(blk):
        for ins in blk.ilist:
            h.update(ins.ip.to_bytes(4, "little"))
    cpu.hooks.block_fetched = block
    if attach is not None:
        attach(m)
    m.run(LIMIT)
    return bytes(out), h.hexdigest(), m.steps(), m


@pytest.mark.parametrize("technique", ["native", "trap-emulate", "emulate"])
def test_a_recorded_run_replays_with_the_same_instruction_trace(technique, tmp_path):
    echo = str(build_guest("echo"))
    rec_path = str(tmp_path / "run.rec")
    rec = Recorder(rec_path, {"technique": technique})
    out, trace, steps, m = traced_run(technique, echo, "", rec.input_source(Typist(b"hello q", 1)), rec.attach)
    rec.close(m)
    assert out.startswith(b"echo: type") and out.endswith(b"bye\n") and b"h @" in out
    # Another schedule of the same input: other arrival times, another output and trace.
    out2, trace2, _, _ = traced_run(technique, echo, "", Typist(b"hello q", 2))
    assert out2 != out and trace2 != trace
    rep = Replayer(rec_path)
    out3, trace3, steps3, m3 = traced_run(technique, echo, "", rep.input_source(), rep.attach)
    assert (out3, trace3, steps3) == (out, trace, steps)
    assert rep.finish(m3) is None


def test_the_guest_os_replays_with_its_interrupts_checked(tmp_path):
    tvos = str(build_guest("tvos"))
    rec_path = str(tmp_path / "tvos.rec")
    rec = Recorder(rec_path, {"technique": "native"})
    out, trace, steps, m = traced_run("native", tvos, "workload=compute iterations=4", rec.input_source(None),
                                      rec.attach)
    rec.close(m)
    records = [json.loads(line) for line in open(rec_path)][1:]
    assert sum("interrupt" in r for r in records) >= 1          # the timer's, with their steps
    rep = Replayer(rec_path)
    out2, trace2, steps2, m2 = traced_run("native", tvos, "workload=compute iterations=4",
                                          rep.input_source(), rep.attach)
    assert (out2, trace2, steps2) == (out, trace, steps) and rep.finish(m2) is None


def test_a_replay_that_diverges_says_where(tmp_path):
    tvos = str(build_guest("tvos"))
    rec_path = tmp_path / "tvos.rec"
    rec = Recorder(str(rec_path), {"technique": "native"})
    _, _, _, m = traced_run("native", tvos, "workload=compute iterations=4", rec.input_source(None), rec.attach)
    rec.close(m)
    lines = rec_path.read_text().splitlines()
    i = next(n for n, line in enumerate(lines) if '"interrupt"' in line)
    r = json.loads(lines[i])
    lines[i] = json.dumps({"step": r["step"] + 7, "interrupt": r["interrupt"]})
    rec_path.write_text("\n".join(lines) + "\n")
    rep = Replayer(str(rec_path))
    _, _, _, m2 = traced_run("native", tvos, "workload=compute iterations=4", rep.input_source(), rep.attach)
    assert f"at step {r['step']:,}, which the recording does not have there" in rep.finish(m2)


def tv(*args, **kw):
    return subprocess.run([sys.executable, "-m", "trapvisor", *args], capture_output=True, text=True,
                          timeout=300, **kw)


def test_record_and_replay_from_the_command_line(tmp_path):
    rec = str(tmp_path / "e.rec")
    first = tv("run", "guest:echo", "--record", rec, input="abq")
    assert first.returncode == 1 and "a @" in first.stdout and "recorded" in first.stderr
    again = tv("run", "--replay", rec, stdin=subprocess.DEVNULL)
    assert again.returncode == 1 and again.stdout == first.stdout
    assert "matched the recording" in again.stderr


@pytest.mark.parametrize("text,message", [
    ("not json\n", "not a trapvisor recording"),
    ('{"format": "trapvisor-recording", "version": 9}\n', "recording format version 9"),
    ('{"format": "trapvisor-recording", "version": 1, "options": {}, "clock": {}}\n{"step": "x"}\n',
     "corrupt recording (line 2)"),
    ('{"format": "trapvisor-recording", "version": 1, "options": {}, "clock": {}}\n',
     "was the run cut short?"),
])
def test_a_bad_recording_is_one_line(tmp_path, text, message):
    f = tmp_path / "bad.rec"
    f.write_text(text)
    with pytest.raises(ReplayError, match=message.replace("?", r"\?").replace("(", r"\(").replace(")", r"\)")):
        Replayer(str(f))
    p = tv("run", "--replay", str(f))
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == 2 and len(lines) == 1 and message in lines[0] and "Traceback" not in p.stderr


@pytest.mark.parametrize("technique", ["native", "trap-emulate"])
def test_gdb_steps_and_continues_backwards_on_a_replay(technique, tmp_path):
    need("gdb")
    rec = str(tmp_path / "tvos.rec")
    p = tv("run", "guest:tvos", "--technique", technique, "--append", "workload=syscall iterations=300",
           "--record", rec, "-q")
    assert p.returncode == 1
    s = gdb_session(["--replay", rec], [
        "break syscall", "continue", "monitor info registers", "continue", "continue",
        "reverse-continue", "reverse-continue", "monitor info registers",
        "stepi", "stepi", "info registers eip", "reverse-stepi", "reverse-stepi", "info registers eip",
        "delete", "break sys_getpid", "continue", "reverse-finish",
        "delete", "break sys_exit", "continue", "watch current", "reverse-continue", "bt",
        "delete", "continue"])
    g = s.gdb
    steps = [line for line in g.splitlines() if line.startswith("guest steps=")]
    assert len(steps) == 2 and steps[0] == steps[1]          # back at the first hit, exactly
    # 3 forward, 2 reverse-continue, and the second reverse-stepi arrives at the breakpoint
    assert g.count("Breakpoint 1, syscall (tf=") == 6
    eips = [line for line in g.splitlines() if line.startswith("eip ")]
    assert eips[-1].endswith("<syscall>")                    # two reverse-stepi: back at syscall()
    # reverse-finish: from sys_getpid back to its call in syscall(), line 144
    assert "Breakpoint 2, sys_getpid (tf=" in g
    assert "in syscall (tf=<optimized out>) at" in g and "144\t        tf->eax = (u32)handlers[n](tf);" in g
    # Backwards from the exit to the write that made the process current (as rr reports it).
    assert re.search(r"Old value = \(struct proc \*\) 0x[0-9a-f]+ <procs>\nNew value = \(struct proc \*\) 0x0\n", g)
    assert "current = p;" in g and "#0  scheduler () at" in g
    assert "exited with code 01" in g and s.rc == 1
    assert s.stdout.count("tvos: workload=syscall") == 1      # re-running the past printed nothing twice
