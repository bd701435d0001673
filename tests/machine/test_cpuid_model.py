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


def test_the_model_is_an_intel_p6_core_with_only_implemented_features():
    table = cm.leaves(cm.PC)
    b, c, d = table[(0, 0)][1], table[(0, 0)][2], table[(0, 0)][3]
    assert struct.pack("<III", b, d, c) == b"GenuineIntel"
    assert (cm.PC.signature() >> 8) & 0xF == 6                 # P6 family
    # Exactly what the simulated CPU implements: no SSE, MMX, FXSR, PAE, PAT, MTRR, MCE, CLFLUSH.
    edx = table[(1, 0)][3]
    for name in ("sse", "sse2", "mmx", "fxsr", "pae", "pat", "mtrr", "mce", "mca", "clflush", "pse36"):
        assert not edx & (1 << cm.FEATURES[name][3]), name
    assert table[(1, 0)][2] == 0                                # no leaf 1 ECX feature at all


def test_leaves_above_the_maximum_answer_with_the_highest_basic_leaf():
    # SDM Vol. 2A CPUID: "the data for the highest basic information leaf is returned".
    top = cm.cpuid(cm.PC, cm.PC.max_leaf)
    for leaf in (cm.PC.max_leaf + 1, 0x40000000, 0x8000_0000, 0x8000_0008, 0xFFFFFFFF):
        assert cm.cpuid(cm.PC, leaf) == top, hex(leaf)
    assert cm.cpuid(cm.PC64, 0x8000_0000)[0] == cm.PC64.max_extended_leaf
    assert cm.cpuid(cm.PC64, cm.PC64.max_extended_leaf + 1) == cm.cpuid(cm.PC64, cm.PC64.max_leaf)
    assert cm.cpuid(cm.PC64, 2) == (0, 0, 0, 0)                 # in range, not described: reserved


def test_the_simulated_cpu_answers_unknown_leaves_as_intel(tmp_path):
    from tests.kvm.conftest import multiboot_image
    # mov eax,0x80000000; cpuid; store the four registers at 0x7000; exit.
    code = b"\xb8" + struct.pack("<I", 0x8000_0000) + b"\x0f\xa2"
    for i, reg in enumerate((0x05, 0x1D, 0x0D, 0x15)):
        code += b"\x89" + bytes([reg]) + struct.pack("<I", 0x7000 + 4 * i)
    k = tmp_path / "cpuid.bin"
    k.write_bytes(multiboot_image(code + b"\xb0\x00\xe6\xf4\xf4\xeb\xfd"))
    pc = PC(16 << 20)
    pc.load_kernel(str(k))
    assert pc.run(1_000_000).exit_code == 1
    assert struct.unpack("<4I", pc.memory.read(0x7000, 16)) == cm.cpuid(cm.PC, cm.PC.max_leaf)
