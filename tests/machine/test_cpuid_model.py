"""The CPU model (machine/cpuid_model.py) against the simulated CPU's own CPUID instruction."""
import struct

from trapvisor.machine import cpuid_model as cm
from trapvisor.machine.pc import PC

# For leaf in (0, 1): mov eax,leaf; cpuid; store eax,ebx,ecx,edx at 0x7000 + 16*leaf; then exit 0.
def _code():
    code = b""
    for leaf in (0, 1):
        base = 0x7000 + 16 * leaf
        code += b"\xb8" + struct.pack("<I", leaf) + b"\x0f\xa2"
        for i, reg in enumerate((0x05, 0x1D, 0x0D, 0x15)):        # mov [disp32], eax/ebx/ecx/edx
            code += b"\x89" + bytes([reg]) + struct.pack("<I", base + 4 * i)
    return code + b"\xb0\x00\xe6\xf4\xf4\xeb\xfd"


def test_the_simulated_cpu_reports_the_pc_model(tmp_path):
    from tests.kvm.conftest import multiboot_image
    k = tmp_path / "cpuid.bin"
    k.write_bytes(multiboot_image(_code()))
    pc = PC(16 << 20)
    pc.load_kernel(str(k))
    res = pc.run(1_000_000)
    assert res.exit_code == 1
    model = cm.leaves(cm.PC)
    for leaf in (0, 1):
        got = struct.unpack("<4I", pc.memory.read(0x7000 + 16 * leaf, 16))
        assert list(got) == model[(leaf, 0)], leaf


def test_topology_apic_ids_and_leaves():
    t = cm.Topology(sockets=2, cores=3, threads=2)
    assert t.apic_ids() == [0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13]
    assert (t.smt_shift, t.package_shift) == (1, 3)
    table = cm.leaves(cm.PC64, t, apic_id=9, cache_leaf4=[(0x121, 0, 0, 0), (0x163, 0, 0, 0)])
    assert table[(1, 0)][1] >> 24 == 9 and (table[(1, 0)][1] >> 16) & 0xFF == 8
    assert table[(1, 0)][3] & (1 << 28)                          # HTT: more than one per package
    assert table[(0xB, 0)] == [1, 2, cm.LEVEL_SMT << 8, 9]
    assert table[(0xB, 1)] == [3, 6, (cm.LEVEL_CORE << 8) | 1, 9]
    assert (table[(4, 0)][0] >> 14) & 0xFFF == 1 and table[(4, 0)][0] >> 26 == 3    # L1: 2 threads, 4 core IDs
    assert (table[(4, 1)][0] >> 14) & 0xFFF == 7                 # L3: the whole package
    assert cm.PC.signature() == 0x633 and cm.leaves(cm.PC)[(0, 0)][0] == 1
