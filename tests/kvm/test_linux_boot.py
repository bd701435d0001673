"""Debian's stock kernel under KVM, with the project's own initramfs around busybox.

Fetches linux-image-cloud-amd64 and busybox-static with apt-get download
(once, into build/linux/).  Without network that fails, loudly: this test
does not skip.

Here (software KVM) the tests boot until the banner, the command line and the
first console lines have come over the emulated 16550, then stop the VM; with
two vCPUs, until the kernel has found both CPUs, its local APIC and its I/O
APIC in the ACPI MADT (the kernel has no MP-table parser) and routed the timer
through the I/O APIC.  Where ``trapvisor info`` reports hardware assist, two
more boot to the busybox shell (one with two vCPUs, which must both be up),
run a command fed through the UART and power off.
"""
import re

import pytest

from trapvisor.kvm.hostinfo import probe_kvm
from trapvisor.linux.assets import prepare_linux
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


SMP_UP = r"smpboot: Total of 2 processors activated"


def test_debian_kernel_finds_its_apics_in_the_acpi_tables_and_brings_up_both_cpus(kvm_host, linux):
    """--smp 2: the MADT gives the kernel (no MP-table parser) its CPUs, LAPIC and I/O APIC; the
    8254 is routed through I/O APIC pin 2; CPU 1 starts through INIT/SIPI.  About 130 s here."""
    out = []
    res = run_kvm(linux.kernel, memory_bytes=256 << 20, initrd=str(linux.initrd), cmdline=CMDLINE, smp=2,
                  serial_out=out.append, stop_after_output=SMP_UP, max_seconds=900)
    text = b"".join(out).decode(errors="replace")
    assert "console output matched" in res.stop_reason, (res.stop_reason, text[-3000:])
    assert "ACPI: RSDP 0x00000000000F2000" in text and "ACPI: APIC 0x" in text
    assert "IOAPIC[0]: apic_id 1, version 17, address 0xfec00000, GSI 0-23" in text
    assert "ACPI: INT_SRC_OVR (bus 0 bus_irq 0 global_irq 2 dfl dfl)" in text
    assert "Using ACPI (MADT) for SMP configuration information" in text
    assert "smpboot: Allowing 2 CPUs, 0 hotplug CPUs" in text
    assert "APIC: Switch to symmetric I/O mode setup" in text
    assert re.search(r"\.\.TIMER: vector=0x[0-9a-f]+ apic1=0 pin1=2", text)
    # The range that holds the pages given to KVM_SET_IDENTITY_MAP_ADDR and KVM_SET_TSS_ADDR
    assert "BIOS-e820: [mem 0x00000000fffc0000-0x00000000ffffffff] reserved" in text
    assert "x86: Booting SMP configuration:" in text and "smp: Brought up 1 node, 2 CPUs" in text


def test_debian_kernel_smp_shell(linux):
    host = probe_kvm()
    if not host.available or not host.hardware_assisted:
        pytest.skip(f"needs hardware-assisted KVM; this host's is {host.kind}: {host.reason}")
    out = []
    res = run_kvm(linux.kernel, memory_bytes=256 << 20, initrd=str(linux.initrd), cmdline="console=ttyS0", smp=2,
                  serial_out=out.append, serial_in=_Typist(out, b"grep -c ^processor /proc/cpuinfo\npoweroff -f\n"),
                  max_seconds=180)
    text = b"".join(out).decode(errors="replace")
    assert "smp: Brought up 1 node, 2 CPUs" in text, text[-3000:]
    assert "\n2\r\n" in text.split("/proc/cpuinfo", 1)[-1] or "\n2\n" in text.split("/proc/cpuinfo", 1)[-1]
    assert res.exit_status == 0 and not res.problem, res.stop_reason
