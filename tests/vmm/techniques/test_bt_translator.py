"""The translator on hand-assembled guest code: what each instruction becomes.

Guest bytes are written into a VM's RAM (paging off, flat segments, as the
Multiboot loader leaves the machine) and translated; the unit's rows and the
bytes in the translation cache are checked against iced-x86's decoding of
them.  These are the rules of docs/binary-translation.md, instruction class
by instruction class.
"""

from __future__ import annotations

import iced_x86 as iced
import pytest

from trapvisor.guests import build_guest
from trapvisor.vmm.allocator import MONITOR_WINDOW
from trapvisor.vmm.techniques.bt import BinaryTranslation
from trapvisor.vmm.techniques.bt import classify as C
from trapvisor.vmm.techniques.bt.translator import UD2, Untranslatable

AT = 0x200000        # guest-physical = linear (paging off) address of the test code


@pytest.fixture
def bt():
    return BinaryTranslation.build(str(build_guest("hello")), memory_bytes=8 << 20)


def translate(bt, code: bytes, at: int = AT):
    bt.vm.vcpu.mem.ram[at:at + len(code)] = code
    return bt.translator.translate(at)


def host_code(bt, unit) -> list:
    """The unit's bytes in the cache, decoded."""
    raw = bytes(bt.alloc.host.ram[unit.host - MONITOR_WINDOW:unit.host - MONITOR_WINDOW + unit.size])
    return list(iced.Decoder(32, raw, ip=unit.host))


def test_ident_instructions_are_copied_byte_for_byte(bt):
    code = bytes.fromhex("89c8" "01d8" "8b4304" "c7450800100000" "0fafc1" "f3ab")  # mov add mov mov imul rep stosd
    unit = translate(bt, code + bytes.fromhex("c3"))
    idents = [r for r in unit.rows if r.kind == C.IDENT]
    assert len(idents) == 6
    assert b"".join(r.host_bytes for r in idents) == code
    assert all(r.host_bytes == r.guest_bytes for r in idents)
    # ... laid out contiguously from the unit's start, each mapped back to its guest EIP.
    assert idents[0].host == unit.host
    for r in idents:
        assert bt.tc.guest_at[r.host] == r.guest


def test_a_conditional_branch_becomes_a_rel32_branch_to_a_chain_stub(bt):
    # jne +2 (rel8); nop; nop; ret
    unit = translate(bt, bytes.fromhex("7502" "90" "90" "c3"))
    jcc = unit.rows[0]
    assert jcc.kind == C.JCC
    host = host_code(bt, unit)
    assert host[0].mnemonic == iced.Mnemonic.JNE and host[0].len == 6      # 0f 85 rel32
    stub = host[0].near_branch32
    assert bt.tc.contains(stub)
    assert bytes(bt.alloc.host.ram[stub - MONITOR_WINDOW:stub - MONITOR_WINDOW + 2]) == UD2
    callout = bt.tc.callouts[stub]
    assert callout.kind == "chain" and callout.guest == AT + 4 and callout.site == jcc.host
    # The fall-through goes on in the same unit: the nops, then the RET callout.
    assert [r.kind for r in unit.rows] == [C.JCC, C.IDENT, C.IDENT, C.CALLOUT]
    assert bt.tc.guest_at[stub] == AT + 4


def test_a_branch_to_a_translated_unit_is_chained_directly(bt):
    target = translate(bt, bytes.fromhex("90c3"), at=AT + 0x100)
    unit = translate(bt, bytes.fromhex("e9fb000000"))        # jmp AT+0x100
    host = host_code(bt, unit)
    assert host[0].mnemonic == iced.Mnemonic.JMP and host[0].near_branch32 == target.host
    assert unit.rows[-1].kind == C.JMP
    assert target.incoming and target.incoming[0][0] == unit.host
    # Dropping the target points the branch back at its stub.
    bt.tc.invalidate(target)
    host = host_code(bt, unit)
    assert bt.tc.callouts[host[0].near_branch32].kind == "chain"


def test_a_direct_call_pushes_the_guest_return_address_and_goes_on_into_the_callee(bt):
    # call AT+8; ret; int3; int3; (callee, AT+8:) nop; nop; ret
    unit = translate(bt, bytes.fromhex("e803000000" "c3" "cccc" "90" "90" "c3"))
    call = unit.rows[0]
    assert call.kind == C.CALL
    push = iced.Decoder(32, call.host_bytes).decode()
    assert push.code == iced.Code.PUSHD_IMM32 and push.immediate32 == AT + 5     # the guest's return EIP
    # The callee follows in the unit: the rows after the call are the callee's, at AT+8.
    assert [(r.guest - AT, r.kind) for r in unit.rows[1:]] == [(8, C.IDENT), (9, C.IDENT), (10, C.CALLOUT)]


def test_cli_writes_the_virtual_if_through_gs(bt):
    unit = translate(bt, bytes.fromhex("fa" "c3"))
    cli = unit.rows[0]
    assert cli.kind == C.CLI
    ins = iced.Decoder(32, cli.host_bytes).decode()
    assert ins.code == iced.Code.MOV_RM32_IMM32 and ins.memory_segment == iced.Register.GS
    assert ins.memory_displacement == 0 and ins.immediate32 == 0


@pytest.mark.parametrize("hexcode,reason,ends", [
    ("fb", "sti", False), ("9c", "pushf", False), ("9d", "popf", False), ("f4", "hlt", False),
    ("0f0100", "descriptor table", False), ("0f0108", "descriptor table", False),
    ("0f00c0", "descriptor table", False), ("0f00c8", "descriptor table", False),
    ("0f01e0", "cr access", False), ("0f20c0", "cr access", False), ("0f22d8", "cr access", False),
    ("0f21c0", "dr access", False), ("0f0138", "invlpg", False),
    ("e460", "io", False), ("ee", "io", False), ("6c", "io", False), ("6e", "io", False),
    ("0e", "segment register", False), ("8cc8", "segment register", False), ("8ed8", "segment register", False),
    ("1f", "segment register", False), ("c51e", "segment load", False),
    ("0f02c0", "lar/lsl/verr/verw", False), ("0f03c0", "lar/lsl/verr/verw", False),
    ("0f00e0", "lar/lsl/verr/verw", False), ("0f00e8", "lar/lsl/verr/verw", False),
    ("2e8b00", "cs/gs access", False), ("658b00", "cs/gs access", False),
    ("cd80", "int", True), ("cc", "int", True), ("cf", "iret", True), ("c3", "ret", True),
    ("c20400", "ret", True), ("cb", "far transfer", True), ("ffe0", "indirect transfer", True),
    ("ff10", "indirect transfer", True), ("ea000000000800", "far transfer", True),
    ("e2fe", "loop/jcxz", True), ("e3fe", "loop/jcxz", True), ("0f0b", "undefined", True),
    ("0f34", "sysenter/sysexit", True),
])
def test_sensitive_and_indirect_instructions_become_callouts(bt, hexcode, reason, ends):
    unit = translate(bt, bytes.fromhex(hexcode) + bytes.fromhex("90c3"))
    row = unit.rows[0]
    assert (row.kind, row.reason) == (C.CALLOUT, reason)
    assert row.host_bytes == UD2
    callout = bt.tc.callouts[row.host]
    assert callout.kind == "emulate" and callout.guest == AT
    # A callout that is not a transfer lets the unit go on with the next instruction.
    assert (len(unit.rows) == 1) == ends


def test_a_unit_ends_at_its_size_limit_with_a_continue_stub(bt):
    bt.translator.max_unit = 5
    unit = translate(bt, b"\x90" * 20)
    assert [r.kind for r in unit.rows] == [C.IDENT] * 5 + ["continue"]
    stub = bt.tc.callouts[unit.rows[-1].host]
    assert stub.kind == "continue" and stub.guest == AT + 5
    # The stub is no entry point for AT+5 (entering there would loop on the stub).
    assert bt.tc.lookup(AT + 5) is None
    assert bt.tc.lookup(AT + 3) == (unit, unit.host + 3)


def test_a_fault_ahead_ends_the_unit_without_touching_the_guest(bt):
    vcpu = bt.vm.vcpu
    end = bt.vm.partition.size          # the last bytes of RAM, then nothing
    vcpu.cr2 = 0x1234
    unit = translate(bt, b"\x90\x90", at=end - 2)
    assert [r.kind for r in unit.rows] == [C.IDENT, C.IDENT, "continue"]
    assert vcpu.cr2 == 0x1234
    with pytest.raises(Untranslatable):
        bt.translator.translate(end)


def test_branches_past_the_cs_limit_are_left_to_the_virtual_cpu(bt):
    vcpu = bt.vm.vcpu
    vcpu.limit[1] = AT + 0x1000
    unit = translate(bt, bytes.fromhex("e900100000"))     # jmp AT+0x1005, past the limit
    assert (unit.rows[0].kind, unit.rows[0].reason) == (C.CALLOUT, "branch past the CS limit")


def test_an_adapted_instruction_is_translated_as_a_callout(bt):
    bt.translator.adapted.add(AT + 2)
    unit = translate(bt, bytes.fromhex("89c8" "8903" "c3"))
    assert [r.kind for r in unit.rows] == [C.IDENT, C.CALLOUT, C.CALLOUT]
    assert unit.rows[1].reason == "adapted (tracing faults)"


def test_a_full_cache_is_flushed_whole(bt):
    tc = bt.tc
    first = translate(bt, b"\x90" * 60 + b"\xc3")
    tc.next = tc.hi - 40                     # as if the cache had filled up
    second = translate(bt, b"\x90" * 60 + b"\xc3", at=AT + 0x1000)
    assert tc.flushes == 1 and not first.valid and second.valid
    assert second.host == tc.lo and tc.lookup(AT) is None
