"""guest:linux (Debian's i386 686 kernel, busybox initramfs) boots to a shell on the simulated
PC, and under each technique that presents the strict CPU with the same console transcript.

The shell is driven through the serial console (``machine/serial_script.py``):
when the prompt appears the script types the commands of the issue, then
``reboot -f``, whose keyboard-controller reset ends the run on every path.
``printk.time=0`` takes host-independent timestamps out of the transcript;
guest time is the instruction count, so two paths that execute the same
guest instructions print the same bytes.

The transcript under a technique is compared with the bare strict PC's
(``native``): add a technique's name to ``TECHNIQUES`` and it is held to
the same test.
"""

from __future__ import annotations

import re

import pytest

from tests.hosttools_gate import need
from trapvisor.machine.serial_script import SerialScript
from trapvisor.vmm.monitor import RunOptions, get

COMMANDS = "uname -a; ls /; cat /proc/cpuinfo; echo $((6*7))"
CMDLINE = "console=ttyS0 printk.time=0"
LIMIT = 3_000_000_000          # steps: far above what the boot needs (see benchmarks/linux_boot.py)
TECHNIQUES = ["trap-emulate"]


@pytest.fixture(scope="module")
def linux():
    need("apt-get", "dpkg-deb")
    from trapvisor.guests import linux_guest
    return linux_guest()


def boot(linux, technique: str, *, strict: bool = True):
    script = SerialScript([COMMANDS, "reboot -f"], prompt=rb"# $")
    opts = RunOptions(str(linux.kernel), cmdline=CMDLINE, initrd=str(linux.initrd), strict=strict,
                      serial_out=script.out, serial_in=script.input)
    result = get(technique)(opts).run(LIMIT)
    return script, result


def session(text: str) -> str:
    """From the first prompt on: what the shell printed for the commands."""
    i = text.find(COMMANDS)
    assert i >= 0, f"the commands were never typed; the console ended with:\n{text[-2000:]}"
    return text[i:]


@pytest.fixture(scope="module")
def bare(linux):
    return boot(linux, "native")


def test_the_bare_pc_boots_to_a_shell_and_runs_the_commands(bare, linux):
    script, result = bare
    text = script.text
    assert result.stop_reason == "reset", (result.stop_reason, result.detail, text[-2000:])
    assert "trapvisor initramfs: /init is running on 6.1.0" in text
    out = session(text)
    version = re.search(r"vmlinuz-(\S+)", str(linux.kernel)).group(1)
    assert re.search(rf"Linux \S+ {re.escape(version)} #1 SMP .* i686 GNU/Linux", out), out[:500]
    for d in ("bin", "dev", "init", "proc", "sys"):
        assert re.search(rf"\b{d}\b", out), d
    assert "vendor_id\t: GenuineIntel" in out and "cpu family\t: 6" in out
    assert re.search(r"flags\t\t: fpu vme de pse tsc msr cx8 apic sep pge cmov", out), out
    assert "\n42\r\n" in out
    assert "reboot -f" in out


@pytest.mark.parametrize("technique", TECHNIQUES)
def test_a_technique_gives_the_bare_strict_pcs_transcript(bare, linux, technique):
    script, result = boot(linux, technique)
    assert result.stop_reason == "reset", (result.stop_reason, result.detail, script.text[-2000:])
    assert script.text == bare[0].text
    assert result.instructions == bare[1].instructions
