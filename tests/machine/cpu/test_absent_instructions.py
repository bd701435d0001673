"""An instruction the modelled CPU does not have raises the fault real hardware gives, never a stop.

SDM Vol. 2: an SSE/SSE2/MMX instruction is #UD when its CPUID flag is clear; VMCALL and the
other VMX instructions are #UD outside VMX operation (Vol. 3C §30.3), VMMCALL without SVM is
#UD (AMD APM Vol. 3); RDPMC is #GP(0) at CPL > 0 with CR4.PCE clear and #GP(0) for an ECX that
names no counter (Vol. 2B RDPMC) -- and the model has no counters (CPUID leaf 0AH absent).
QEMU TCG gives the same #UD for VMCALL (kvm-unit-tests' hypercall test, docs/kvm-unit-tests.md).
"""

from __future__ import annotations

import pytest

from trapvisor.machine import cpuid_model
from trapvisor.machine.cpu.translate import absent_extension
from .oracle import Case, disassemble, run_ours

UD, GP = 6, 13
REGS = [0, 0, 0, 0, 0x28000, 0, 0, 0]

ABSENT = {
    "vmcall": "0f01c1", "vmmcall": "0f01d9", "vmxon [eax]": "f30fc730", "vmlaunch": "0f01c2",
    "movdqa xmm0,[eax]": "660f6f00", "movaps xmm0,xmm1": "0f28c1", "paddb mm0,mm1": "0ffcc1",
    "pshufb xmm0,xmm1": "660f3800c1", "popcnt eax,ecx": "f30fb8c1", "fxsave [eax]": "0fae00",
    "rdtscp": "0f01f9", "xgetbv": "0f01d0", "clflush [eax]": "0fae38",
}


@pytest.mark.parametrize("text,hexcode", ABSENT.items(), ids=list(ABSENT))
def test_an_extension_the_model_does_not_advertise_is_ud(text, hexcode):
    code = bytes.fromhex(hexcode)
    assert str(disassemble(code)[0]).startswith(text.split()[0])
    out = run_ours(Case(code + b"\xf4", list(REGS)))
    assert out.fault == UD and out.note == "", out.note
    assert out.eip == 0x1000            # a fault: EIP at the instruction


def test_the_rule_follows_the_model():
    # Nothing the model advertises is on the list; nothing of the base ISA is caught by it.
    movdqa = disassemble(bytes.fromhex("660f6f00"))[0]
    assert absent_extension(movdqa) and "sse2" not in cpuid_model.PC.features
    for hexcode in ("90", "0fa2", "0f31", "0fc70e"):          # NOP, CPUID, RDTSC, CMPXCHG8B
        assert not absent_extension(disassemble(bytes.fromhex(hexcode))[0])


@pytest.mark.parametrize("ecx", [0, 1, 0x40000000])
def test_rdpmc_names_no_counter_so_it_is_gp0(ecx):
    regs = list(REGS)
    regs[1] = ecx
    out = run_ours(Case(bytes.fromhex("0f33") + b"\xf4", regs))
    assert out.fault == GP and out.note == ""
    assert out.eip == 0x1000
