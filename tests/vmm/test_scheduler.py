"""Several VMs time-sliced on one host CPU (vmm/scheduler.py).

Each VM must see exactly what it sees alone on the bare PC -- same console
output, exit code and guest instruction count -- however its execution is
cut into slices and interleaved with other VMs' on the same host CPU, and a
hostile VM stopped in the middle of the rotation leaves the others running.
"""

from __future__ import annotations

import functools
import subprocess
import sys

import pytest

from trapvisor.guests import build_guest
from trapvisor.machine.pc import run_kernel as bare_run
from trapvisor.vmm.costmodel import CostModel
from trapvisor.vmm.scheduler import Scheduler, VmSpec
from trapvisor.vmm.techniques.trap_emulate import TrapEmulate

LIMIT = 50_000_000


@functools.lru_cache(maxsize=None)
def bare(kernel: str, cmdline: str, memory: int, strict: bool = True):
    """The bare PC of the CPU variant the monitor presents (the strict one here)."""
    out = []
    res = bare_run(kernel, cmdline=cmdline, memory_bytes=memory, max_instructions=LIMIT,
                   serial_out=out.append, strict=strict)
    return b"".join(out), res.exit_code, res.instructions


def spec(guest: str, cmdline: str = "", mib: int = 32) -> VmSpec:
    return VmSpec(str(build_guest(guest)), cmdline, mib << 20)


@functools.lru_cache(maxsize=None)
def alone_under_trap_emulate(kernel: str, cmdline: str, memory: int, strict: bool):
    te = TrapEmulate.build(kernel, cmdline=cmdline, memory_bytes=memory, costs=CostModel.default(), strict=strict)
    r = te.run(LIMIT)
    return r.output, r.exit_code, r.instructions


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "standard"])
def test_interleaved_vms_each_see_what_they_see_alone(strict):
    """On the strict CPU each VM is held to the bare PC (trap-and-emulate is then a
    correct monitor); on the standard CPU, where the x86 holes make a guest's run under
    the monitor differ from native (timer interrupts land elsewhere once an IRET to
    ring 3 has not restored the virtual IF), to its run alone under the same monitor:
    sharing the host CPU must be invisible either way."""
    specs = [spec("tvos", "workload=syscall iterations=200", 64),
             spec("tvos", "workload=ctxswitch iterations=60", 64),
             spec("cr3-stale", mib=8),
             spec("hello", mib=8)]
    sched = Scheduler(specs, strict=strict, slice_instructions=7_919)
    r = sched.run(LIMIT)
    for s, res in zip(specs, r.results):
        out, code, n = (bare(s.kernel, s.cmdline, s.memory_bytes) if strict
                        else alone_under_trap_emulate(s.kernel, s.cmdline, s.memory_bytes, False))
        assert res.stop_reason is None and res.exit_code == code == 1, (s, res.stop_reason, res.detail)
        assert res.output == out, s
        assert res.instructions == n, s
        if "tvos" in s.kernel:
            assert res.direct_share > 0.98
    # Really interleaved: round robin from the start, many switches, tvos VMs sliced many times.
    assert r.order[:8] == [0, 1, 2, 3, 0, 1, 2, 0] or r.order[:4] == [0, 1, 2, 3]
    assert r.world_switches > 30
    assert min(r.slices[0], r.slices[1]) > 20
    assert sched.host.icount == sum(res.direct for res in r.results)


def test_a_hostile_vm_stopped_mid_rotation_leaves_the_others_running():
    """pt-escape's page tables point past its RAM -- at the next partition, were the
    translation naive -- and triple-fault stops itself; the tvos VMs placed around them
    finish exactly as alone."""
    specs = [spec("tvos", "workload=mixed iterations=1", 64),
             spec("pt-escape", mib=8),
             spec("triple-fault", mib=8),
             spec("tvos", "workload=pgfault iterations=50", 64)]
    r = Scheduler(specs, strict=True, slice_instructions=10_007).run(LIMIT)
    for i in (0, 3):
        out, code, n = bare(specs[i].kernel, specs[i].cmdline, specs[i].memory_bytes)
        assert r.results[i].output == out and r.results[i].exit_code == code and r.results[i].instructions == n
    assert r.results[2].stop_reason == "triple fault"
    esc = r.results[1]
    out, code, _ = bare(specs[1].kernel, "", specs[1].memory_bytes)
    assert esc.exit_code == code == 1 and esc.output == out


def test_vms_cli_prefixes_each_console_and_summarises():
    p = subprocess.run([sys.executable, "-m", "trapvisor", "vms", "guest:hello",
                        "guest:tvos workload=syscall iterations=20", "--slice", "5000", "--memory", "32M"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "[vm0] Hello from trapvisor" in p.stdout
    assert "[vm1] result syscall iterations=20 checksum=" in p.stdout
    assert "2 VMs under trap-emulate on one host CPU" in p.stderr and "world switches" in p.stderr
    assert "vm1: exit code 1" in p.stderr


@pytest.mark.parametrize("args,message", [
    (["guest:hello", "--slice", "0"], "bad time slice"),
    (["/nonexistent/kernel"], "not found"),
])
def test_vms_cli_bad_input_is_one_line(args, message):
    p = subprocess.run([sys.executable, "-m", "trapvisor", "vms", *args], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr and message in p.stderr, p.stderr
