"""`trapvisor run --accel kvm --smp N --cpu host`: checked options, one-line errors, status 2."""
import pathlib
import subprocess
import sys

import pytest

from .test_guests_kvm import build_flat_guest


def trapvisor(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "trapvisor", "run", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("args,message", [
    (["--smp", "0"], "bad CPU count '0'"),
    (["--smp", "255"], "at most 254"),
    (["--smp", "two"], "bad CPU count 'two'"),
    (["--smp", "2"], "--smp: the simulated PC has one CPU"),
    (["--cpu", "host"], "--cpu host: needs --accel kvm"),
    (["--smp", "2", "--technique", "emulate"], "--smp: the simulated PC has one CPU"),
])
def test_bad_smp_and_cpu_are_one_line_and_status_2(args, message):
    p = trapvisor("guest:hello", *args)
    assert p.returncode == 2 and message in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_cli_smp_brings_up_every_cpu(kvm_host, tmp_path):
    k = build_flat_guest(pathlib.Path(__file__).parent / "guests" / "smp.S", tmp_path)
    p = trapvisor(str(k), "--accel", "kvm", "--smp", "3", "--cpu", "host", "-m", "16M", "--max-seconds", "120")
    assert p.returncode == 1, p.stderr
    assert "madt: 03 cpus, apic ids: 00 01 02" in p.stdout and "up: 02 aps" in p.stdout
    assert "3 vCPUs (APIC IDs 0, 1, 2)" in p.stderr and "CPUID: the host's (--cpu host)" in p.stderr
