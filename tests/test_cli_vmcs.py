"""``trapvisor vmcs dump``: the VMCS of a guest under vtx, field by field with the SDM's
names (SDM Vol. 3C Appendix B), and its options checked like every command's."""

import pytest

from tests.test_cli import one_line_error, tv


@pytest.mark.parametrize("args,message", [
    (("vmcs", "dump", "/nonexistent/kernel"), "not found"),
    (("vmcs", "dump", "guest:hello", "--at", "0"), "bad step count"),
    (("vmcs", "dump", "guest:hello", "--technique", "kvm"), "invalid choice"),
    (("vmcs", "dump", "guest:hello", "--memory", "12Q"), "bad memory size"),
    (("vmcs",), "required"),
])
def test_bad_input_is_one_line_and_status_2(args, message):
    p = tv(*args)
    assert message in one_line_error(p) or message in p.stderr


@pytest.mark.parametrize("technique", ["vtx", "vtx-noept"])
def test_dump_prints_every_area_with_sdm_names_and_the_exit_reason(technique):
    p = tv("vmcs", "dump", "guest:hello", "--technique", technique)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    for text in ("VM-execution, exit and entry control fields:", "guest-state area:",
                 "host-state area:", "CPU_BASED_VM_EXEC_CONTROL          0x4002 32-bit",
                 "GUEST_CS_AR_BYTES", "HOST_CR3", "VM_EXIT_REASON", "EXIT_REASON_IO_INSTRUCTION",
                 "launch state launched"):
        assert text in out, out
    assert ("EPT_POINTER" in out) == (technique == "vtx")
