"""Debian's stock kernel under KVM, with the project's own initramfs around busybox.

Fetches linux-image-cloud-amd64 and busybox-static with apt-get download
(once, into build/linux/).  Without network that fails, loudly: this test
does not skip.

Here (software KVM) the test boots until the banner, the command line and the
first console lines have come over the emulated 16550, then stops the VM.
Where ``trapvisor info`` reports hardware assist, a second test boots to the
busybox shell, runs a command fed through the UART and powers off.
"""
import pytest

from trapvisor.kvm.hostinfo import probe_kvm
from trapvisor.kvm.linux_assets import prepare_linux
from trapvisor.kvm.runner import run_kvm

CMDLINE = "console=ttyS0 earlyprintk=serial,ttyS0,115200"
EARLY = r"NX \(Execute Disable\) protection"


@pytest.fixture(scope="module")
def linux():
    return prepare_linux()          # raises UserError (test fails) when apt-get cannot fetch


def test_debian_kernel_early_boot(kvm_host, linux):
    out = []
    res = run_kvm(linux.kernel, memory_bytes=256 << 20, initrd=str(linux.initrd), cmdline=CMDLINE,
                  serial_out=out.append, stop_after_output=EARLY, max_seconds=240)
    text = b"".join(out).decode(errors="replace")
    assert "Linux version 6." in text, text[-2000:]
    assert f"Command line: {CMDLINE}" in text
    assert "BIOS-e820: [mem 0x0000000000100000-0x000000000fffffff] usable" in text
    assert res.exit_status == 0 and "console output matched" in res.stop_reason
    summary = "\n".join(res.summary)
    assert kvm_host.label in summary
    if not kvm_host.hardware_assisted:
        assert "noxsave" in text and "clearcpuid=" in text        # the workarounds reached the kernel
        assert "software-KVM workarounds" in summary
        assert "decompressed on the host" in summary


class _Typist:
    """Serial input that types the commands once the shell is up."""

    def __init__(self, out: list, commands: bytes):
        self.out, self.commands, self.sent = out, commands, False

    def __call__(self) -> bytes:
        if not self.sent and b"/init is running" in b"".join(self.out):
            self.sent = True
            return self.commands
        return b""


def test_debian_kernel_to_busybox_shell(linux):
    host = probe_kvm()
    if not host.available or not host.hardware_assisted:
        pytest.skip(f"needs hardware-assisted KVM; this host's is {host.kind}: {host.reason}")
    out = []
    res = run_kvm(linux.kernel, memory_bytes=256 << 20, initrd=str(linux.initrd), cmdline="console=ttyS0",
                  serial_out=out.append, serial_in=_Typist(out, b"uname -a\npoweroff -f\n"), max_seconds=120)
    text = b"".join(out).decode(errors="replace")
    assert "/init is running" in text and "Linux" in text.split("uname -a", 1)[-1]
    assert res.exit_status == 0 and not res.problem, res.stop_reason
