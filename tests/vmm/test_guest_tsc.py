"""The guest's TSC under trap-and-emulate is its instruction count, as on the bare PC.

The bare simulated CPU's TSC counts retired instructions.  Under trap-emulate
some of the guest's instructions are interpreted on the virtual CPU and the
rest run directly on the host CPU, so an RDTSC run directly must see both
(a kernel calibrating its TSC against the PIT would otherwise see a slower
clock than on the bare PC).  The guest here loops over trapping IN
instructions, writes the TSC (WRMSR, interpreted), loops again and reports
RDTSC through isa-debug-exit.
"""

from __future__ import annotations

import struct

from tests.kvm.conftest import multiboot_image
from trapvisor.vmm.monitor import RunOptions, get


def guest() -> bytes:
    loop = b"\xb9\x28\x00\x00\x00" + b"\xe4\x80" + b"\x49" + b"\x75\xfb"     # mov ecx,40; in al,0x80; dec ecx; jnz
    wrmsr = b"\xb9\x10\x00\x00\x00" + b"\xb8" + struct.pack("<I", 1000) + b"\x31\xd2" + b"\x0f\x30"
    report = b"\x0f\x31" + b"\x66\xba\xf4\x00" + b"\xef" + b"\xf4"          # rdtsc; mov dx,0xf4; out dx,eax
    return loop + wrmsr + loop + report


def test_rdtsc_reads_the_same_count_bare_and_under_trap_emulate(tmp_path):
    k = tmp_path / "tsc.bin"
    k.write_bytes(multiboot_image(guest()))
    codes = {}
    for technique in ("native", "trap-emulate"):
        r = get(technique)(RunOptions(str(k), strict=True)).run(100_000)
        codes[technique] = r.exit_code
    assert codes["native"] == codes["trap-emulate"]
    value = codes["native"] >> 1
    assert 1000 < value < 1000 + 200            # WRMSR set it; the second loop's instructions since
