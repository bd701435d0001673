"""guest:linux (Debian's i386 686 kernel, busybox initramfs) on the simulated PC, bare and
under each technique that presents the strict CPU, with the same console transcript.

The shell is driven through the serial console (``machine/serial_script.py``):
when the prompt appears the script types the commands of the issue, then
``reboot -f``, whose keyboard-controller reset ends the run.  ``panic=-1``
turns a kernel panic into the same reset.  ``printk.time=0`` keeps
timestamps out of the transcript; guest time is the instruction count, so
two paths that execute the same guest instructions print the same bytes.

The standard CPU boots to the shell.  The strict CPU (docs/vmm.md: every
sensitive instruction #GP(0) at CPL > 0, INT n included) boots the kernel as
far as /init, whose first system call, INT 0x80 at ring 3, raises #GP: the
kernel kills init and panics, as the strict machine dictates (observed:
"traps: init[1] general protection fault ... in busybox", then "Attempted
to kill init!").  A technique presenting the strict CPU must give exactly
that transcript: add its name to ``TECHNIQUES``.
"""

from __future__ import annotations

import os
import re

import pytest

from tests.hosttools_gate import need
from trapvisor.machine.serial_script import SerialScript
from trapvisor.vmm.monitor import RunOptions, get

COMMANDS = "uname -a; ls /; cat /proc/cpuinfo; echo $((6*7))"
CMDLINE = "console=ttyS0 printk.time=0 cryptomgr.notests noisapnp panic=-1"
LIMIT = 3_000_000_000          # steps: far above what the boot needs
TECHNIQUES = ["trap-emulate"]
# busybox asks for the cursor position (ESC [6n) after printing its prompt.
PROMPT = rb"# (\x1b\[6n)?$"


@pytest.fixture(scope="module")
def linux():
    need("apt-get", "dpkg-deb")
    from trapvisor.guests import linux_guest
    return linux_guest()


def boot(linux, technique: str, *, strict: bool):
    script = SerialScript([COMMANDS, "reboot -f"], prompt=PROMPT)
    opts = RunOptions(str(linux.kernel), cmdline=CMDLINE, initrd=str(linux.initrd), strict=strict,
                      serial_out=script.out, serial_in=script.input)
    result = get(technique)(opts).run(LIMIT)
    return script, result


def session(text: str) -> str:
    """From the typed commands on: what the shell printed for them."""
    i = text.find(COMMANDS)
    assert i >= 0, f"the commands were never typed; the console ended with:\n{text[-2000:]}"
    return text[i:]


def test_the_bare_pc_boots_to_a_shell_and_runs_the_commands(linux):
    script, result = boot(linux, "native", strict=False)
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


# The strict PC's boot and the techniques' take far longer than the rest of the suite
# together (trap-emulate: about an hour here); `make test-linux` runs them.
FULL = os.environ.get("TRAPVISOR_LINUX_FULL", "") not in ("", "0")
full_only = pytest.mark.skipif(not FULL, reason="a boot of an hour or more: make test-linux "
                               "(TRAPVISOR_LINUX_FULL=1) runs it")


@pytest.fixture(scope="module")
def bare_strict(linux):
    return boot(linux, "native", strict=True)


@full_only
def test_on_the_strict_pc_init_dies_at_its_first_system_call(bare_strict):
    script, result = bare_strict
    text = script.text
    assert result.stop_reason == "reset", (result.stop_reason, result.detail, text[-2000:])
    assert "Run /init as init process" in text
    assert re.search(r"traps: init\[1\] general protection fault ip:\w+ .* in busybox", text), text[-2000:]
    assert "Kernel panic - not syncing: Attempted to kill init!" in text


@full_only
@pytest.mark.parametrize("technique", TECHNIQUES)
def test_a_technique_gives_the_bare_strict_pcs_transcript(bare_strict, linux, technique):
    script, result = boot(linux, technique, strict=True)
    assert result.stop_reason == "reset", (result.stop_reason, result.detail, script.text[-2000:])
    assert script.text == bare_strict[0].text
    assert result.instructions == bare_strict[1].instructions
