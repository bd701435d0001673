"""EPT (SDM Vol. 3C ch. 28): guest-physical addresses translated through the EPT
paging structures (§28.2.2), EPT violations (§28.2.3.2, qualification Table
27-7) and misconfigurations (§28.2.3.1), accessed and dirty flags (§28.2.4),
and the TLB's VPID and EPTP tags with INVEPT and INVVPID (§28.3)."""

import struct

import pytest

from trapvisor.machine.cpu.vmx import capabilities as C

from .vmxlib import (
    EPT_PD, EPT_PML4, GUEST_BASE, GUEST_CODE, ept_entry_addr, guest_tables, host_cpu, run_guest,
    setup_vmcs,
)

STORE = bytes.fromhex("c70500002000" + "34120000")     # mov dword [0x200000], 0x1234
LOAD = bytes.fromhex("a100002000")                      # mov eax, [0x200000]
LOAD_FAR = bytes.fromhex("a100005000")                  # mov eax, [0x500000]: not mapped
HLT = b"\xf4"


def ept_guest(code: bytes, *, vpid=0, ad=False):
    """A guest with EPT, unrestricted (paging off: linear = guest-physical); its
    guest-physical 0 is host GUEST_BASE."""
    cpu = host_cpu("late")
    proc2 = C.SEC_UNRESTRICTED_GUEST | (C.SEC_ENABLE_VPID if vpid else 0)
    h = setup_vmcs(cpu, code, ept=True, proc2=proc2, proc=C.CPU_HLT_EXITING, guest_base=GUEST_BASE)
    guest_tables(cpu, guest_base=GUEST_BASE)
    if vpid:
        h.vmwrite("VIRTUAL_PROCESSOR_ID", vpid)
    if ad:
        h.vmwrite("EPT_POINTER", h.vmread("EPT_POINTER") | 1 << 6)
    return cpu, h


def ram32(cpu, addr):
    return struct.unpack_from("<I", cpu.mem.ram, addr)[0]


def test_guest_physical_accesses_go_through_the_ept():
    cpu, h = ept_guest(STORE + HLT)
    assert run_guest(cpu, h).basic == 12
    assert ram32(cpu, GUEST_BASE + 0x200000) == 0x1234, "the store reached host GUEST_BASE + gpa"
    assert ram32(cpu, 0x200000) == 0, "and not host-physical 0x200000"


def test_an_unmapped_guest_physical_address_is_an_ept_violation():
    """Table 27-7: a read (bit 0), nothing allowed (5:3 = 0), guest-linear valid (bit 7),
    an access to the translation of a linear address (bit 8); the guest-physical and
    guest-linear addresses; the instruction not executed."""
    cpu, h = ept_guest(LOAD_FAR + HLT)
    ex = run_guest(cpu, h)
    assert ex.basic == 48 and ex.name == "EXIT_REASON_EPT_VIOLATION"
    assert h.vmread("EXIT_QUALIFICATION") == 1 | 1 << 7 | 1 << 8
    assert h.vmread("GUEST_PHYSICAL_ADDRESS") == 0x500000
    assert h.vmread("GUEST_LINEAR_ADDRESS") == 0x500000
    assert h.vmread("GUEST_RIP") == GUEST_CODE


def test_a_write_to_a_read_only_ept_page_is_a_violation_with_the_permissions():
    cpu, h = ept_guest(STORE + HLT)
    pte = ept_entry_addr(0x200000)
    struct.pack_into("<Q", cpu.mem.ram, pte, struct.unpack_from("<Q", cpu.mem.ram, pte)[0] & ~2)
    ex = run_guest(cpu, h)
    assert ex.basic == 48
    # write (bit 1); the entry was readable (3) and executable (5); linear valid, translation.
    assert h.vmread("EXIT_QUALIFICATION") == 2 | 1 << 3 | 1 << 5 | 1 << 7 | 1 << 8
    assert ram32(cpu, GUEST_BASE + 0x200000) == 0, "the store did not happen"


@pytest.mark.parametrize("entry_bits", [2, 6, 7 | 2 << 3, 7 | 1 << 40])
def test_misconfigured_entries_are_exit_reason_49(entry_bits):
    """§28.2.3.1: write without read; write+execute without read; memory type 2; a
    reserved bit above the physical-address width."""
    cpu, h = ept_guest(LOAD + HLT)
    pte = ept_entry_addr(0x200000)
    struct.pack_into("<Q", cpu.mem.ram, pte, (GUEST_BASE + 0x200000) | entry_bits | (6 << 3 if entry_bits < 8 else 0))
    ex = run_guest(cpu, h)
    assert ex.basic == 49 and h.vmread("GUEST_PHYSICAL_ADDRESS") == 0x200000


def test_the_guests_own_paging_structures_are_read_through_the_ept():
    """With guest paging on, an EPT violation on a guest paging-structure access has
    bit 8 of the qualification clear (Table 27-7)."""
    cpu, h = ept_guest(LOAD + HLT)
    h.vmwrite("GUEST_CR0", 0x80000031)
    h.vmwrite("GUEST_CR3", 0x600000)        # the guest's page directory: not mapped by EPT
    ex = run_guest(cpu, h)
    assert ex.basic == 48
    q = h.vmread("EXIT_QUALIFICATION")
    assert q & 1 and q & 1 << 7 and not q & 1 << 8
    assert h.vmread("GUEST_PHYSICAL_ADDRESS") == 0x600000 | (GUEST_CODE >> 20) & 0xFFC


def test_guest_paging_over_ept_maps_linear_to_host_physical():
    cpu, h = ept_guest(STORE + HLT)
    # Guest page directory at guest-physical 0x3000: 4 MiB page 0 -> guest-physical 0 (PSE).
    struct.pack_into("<I", cpu.mem.ram, GUEST_BASE + 0x3000, 0x83)
    h.vmwrite("GUEST_CR0", 0x80000031)
    h.vmwrite("GUEST_CR3", 0x3000)
    h.vmwrite("GUEST_CR4", 0x10 | C.CR4_VMXE)
    assert run_guest(cpu, h).basic == 12
    assert ram32(cpu, GUEST_BASE + 0x200000) == 0x1234
    assert ram32(cpu, GUEST_BASE + 0x3000) & 0x60 == 0x60, "the guest's A and D bits were set"


def test_a_2_mib_ept_page():
    cpu, h = ept_guest(STORE + HLT)
    struct.pack_into("<Q", cpu.mem.ram, EPT_PD + 8 * 1, 0x600000 | 7 | 6 << 3 | 1 << 7)
    assert run_guest(cpu, h).basic == 12
    assert ram32(cpu, 0x600000) == 0x1234


def test_accessed_and_dirty_flags():
    """§28.2.4: with EPTP bit 6, accessed on every entry used, dirty on a written leaf."""
    cpu, h = ept_guest(LOAD + HLT, ad=True)
    assert run_guest(cpu, h).basic == 12
    pte = struct.unpack_from("<Q", cpu.mem.ram, ept_entry_addr(0x200000))[0]
    pml4e = struct.unpack_from("<Q", cpu.mem.ram, EPT_PML4)[0]
    assert pte & 1 << 8 and not pte & 1 << 9 and pml4e & 1 << 8
    cpu, h = ept_guest(STORE + HLT, ad=True)
    run_guest(cpu, h)
    pte = struct.unpack_from("<Q", cpu.mem.ram, ept_entry_addr(0x200000))[0]
    assert pte & 1 << 9


def _remap_and_reenter(cpu, h, invalidate):
    """Load through the EPT (caching the translation), point the EPT entry at another
    host frame, resume at the load again, and return what the guest read."""
    struct.pack_into("<I", cpu.mem.ram, GUEST_BASE + 0x200000, 0x1111)
    struct.pack_into("<I", cpu.mem.ram, 0x700000, 0x2222)
    assert run_guest(cpu, h).basic == 12 and cpu.regs[0] == 0x1111
    struct.pack_into("<Q", cpu.mem.ram, ept_entry_addr(0x200000), 0x700000 | 7 | 6 << 3)
    invalidate()
    h.vmwrite("GUEST_RIP", GUEST_CODE)
    assert run_guest(cpu, h, launch=False).basic == 12
    return cpu.regs[0]


def test_without_vpid_entry_and_exit_flush_the_tlb():
    cpu, h = ept_guest(LOAD + HLT)
    assert _remap_and_reenter(cpu, h, lambda: None) == 0x2222


def test_with_vpid_translations_survive_until_invept_or_invvpid():
    """§28.3.3: tagged mappings are kept across VM exits and entries; software must
    invalidate them (INVEPT single-context, INVVPID single-context)."""
    cpu, h = ept_guest(LOAD + HLT, vpid=1)
    assert _remap_and_reenter(cpu, h, lambda: None) == 0x1111, "the stale mapping is still used"
    cpu, h = ept_guest(LOAD + HLT, vpid=1)
    assert _remap_and_reenter(cpu, h, lambda: h.invept(1, h.vmread("EPT_POINTER"))) == 0x2222
    cpu, h = ept_guest(LOAD + HLT, vpid=1)
    assert _remap_and_reenter(cpu, h, lambda: h.invvpid(1, 1)) == 0x2222
    cpu, h = ept_guest(LOAD + HLT, vpid=1)
    assert _remap_and_reenter(cpu, h, lambda: h.invvpid(0, 1, 0x200000)) == 0x2222


def test_invept_and_invvpid_reject_unsupported_operands():
    """§30.3: VMfailValid(28) for an unsupported type or VPID 0."""
    from trapvisor.machine.cpu.vmx import VmxFailure
    cpu, h = ept_guest(HLT, vpid=1)
    for call in (lambda: h.invept(3), lambda: h.invvpid(1, 0), lambda: h.invvpid(7, 1)):
        with pytest.raises(VmxFailure) as e:
            call()
        assert e.value.error == 28
