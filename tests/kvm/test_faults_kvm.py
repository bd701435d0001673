"""Bad input and guest faults under KVM: one clear message, fds closed."""
import os

import pytest

from trapvisor.errors import UserError
from trapvisor.kvm.hostinfo import KvmHostInfo
from trapvisor.kvm.runner import KvmMachine, run_kvm

from .conftest import interrupt_after, multiboot_image

MEM = 16 << 20


def write_kernel(tmp_path, code: bytes):
    p = tmp_path / "k.bin"
    p.write_bytes(multiboot_image(code))
    return str(p)


def fds():
    return set(os.listdir("/proc/self/fd"))


def test_neither_multiboot_nor_bzimage(kvm_host, tmp_path):
    p = tmp_path / "junk"
    p.write_bytes(b"\x90" * 20000)
    with pytest.raises(UserError, match="neither a Multiboot kernel nor a Linux bzImage"):
        run_kvm(str(p), memory_bytes=MEM, serial_out=lambda b: None)


def test_unusable_kvm_is_one_clear_line():
    host = KvmHostInfo(available=False, problem="absent", message="/dev/kvm does not exist",
                       hint="load a KVM module or run with --accel sim")
    with pytest.raises(UserError) as e:
        KvmMachine(MEM, host=host)
    assert "/dev/kvm does not exist" in str(e.value) and "\n" not in str(e.value)
    assert "--accel sim" in e.value.hint


def test_initrd_too_large(kvm_host, tmp_path):
    from .test_boot_linux_unit import fake_bzimage
    k = tmp_path / "bzImage"
    k.write_bytes(fake_bzimage())
    big = tmp_path / "initrd"
    with open(big, "wb") as f:
        f.truncate(20 << 20)
    before = fds()
    with pytest.raises(UserError, match="does not fit in guest memory"):
        run_kvm(str(k), memory_bytes=32 << 20, initrd=str(big), serial_out=lambda b: None,
                linux_entry="bzimage")
    assert fds() <= before


def test_triple_fault_dumps_registers(kvm_host, tmp_path):
    # lidt [null descriptor]; ud2  ->  #UD, #GP, #DF through an empty IDT: shutdown.
    code = bytes([0x0F, 0x01, 0x1D]) + (0x100040).to_bytes(4, "little") + bytes([0x0F, 0x0B])
    before = fds()
    res = run_kvm(write_kernel(tmp_path, code), memory_bytes=MEM, serial_out=lambda b: None, max_seconds=30)
    assert res.problem and res.exit_status == 4
    assert "triple fault" in res.stop_reason or "KVM could not run" in res.stop_reason
    assert any(line.startswith("RIP=") for line in res.dump)
    assert fds() <= before


def test_emulation_failure_is_decoded(kvm_host, tmp_path):
    if kvm_host.hardware_assisted:
        pytest.skip("ldmxcsr is an emulation failure only on software KVM")
    # nop; ldmxcsr [0x7000]
    res = run_kvm(write_kernel(tmp_path, bytes([0x90, 0x0F, 0xAE, 0x15, 0x00, 0x70, 0x00, 0x00])), memory_bytes=MEM,
                  serial_out=lambda b: None, max_seconds=30)
    assert res.problem
    assert "`ldmxcsr 0x7000`" in res.stop_reason and "0x100021" in res.stop_reason
    assert "software" in res.stop_reason
    assert any("KVM_EXIT_INTERNAL_ERROR" in line for line in res.dump)


def test_int3_raises_bp_as_on_the_simulated_pc(kvm_host, tmp_path):
    """kvm_pvm's emulator cannot run INT3; trapvisor delivers the #BP it raises, so the guest's
    handler sees the saved EIP after the instruction, as on the simulated PC and on hardware."""
    import pathlib
    from trapvisor.machine.pc import run_kernel
    from .test_guests_kvm import build_flat_guest
    k = str(build_flat_guest(pathlib.Path(__file__).parent / "guests" / "int3.S", tmp_path))
    sim, out = [], []
    run_kernel(k, memory_bytes=MEM, serial_out=sim.append, max_seconds=30)
    res = run_kvm(k, memory_bytes=MEM, serial_out=out.append, max_seconds=30)
    text = b"".join(out).decode()
    assert text == b"".join(sim).decode() and text.startswith("#BP, saved eip "), text
    saved, want = text.strip().removeprefix("#BP, saved eip ").split(", int3 ends at ")
    assert saved == want and res.exit_code == 1
    if not kvm_host.hardware_assisted:
        assert any("int3 delivered as #BP (1 times)" in line for line in res.summary)


def test_fwait_without_a_pending_x87_error_runs_on(kvm_host, tmp_path):
    # nop; fwait; isa-debug-exit 0
    res = run_kvm(write_kernel(tmp_path, bytes([0x90, 0x9B, 0xB0, 0x00, 0xE6, 0xF4])), memory_bytes=MEM,
                  serial_out=lambda b: None, max_seconds=30)
    assert res.exit_code == 1, res.stop_reason


def test_ctrl_c_stops_the_vm_and_closes_fds(kvm_host, tmp_path):
    kernel = write_kernel(tmp_path, bytes([0xEB, 0xFE]))          # jmp .
    before = fds()
    m = KvmMachine(MEM, serial_out=lambda b: None)
    try:
        m.load(kernel)
        res = interrupt_after(m, 1.0, max_seconds=60)
    finally:
        m.close()
    assert res.interrupted and res.exit_status == 130 and "interrupted" in res.stop_reason
    assert fds() <= before


def test_time_limit(kvm_host, tmp_path):
    res = run_kvm(write_kernel(tmp_path, bytes([0xEB, 0xFE])), memory_bytes=MEM,
                  serial_out=lambda b: None, max_seconds=0.5)
    assert res.stop_reason == "time limit" and res.exit_status == 3
    assert any("KVM_EXIT_INTR" in line for line in res.summary)


def test_halted_for_good_is_noticed(kvm_host, tmp_path):
    # cli; hlt: with the in-kernel irqchip the vCPU sleeps inside KVM_RUN; the tick and
    # KVM_GET_MP_STATE notice it (for Linux this is how `poweroff` ends the VM).
    res = run_kvm(write_kernel(tmp_path, bytes([0xFA, 0xF4])), memory_bytes=MEM,
                  serial_out=lambda b: None, max_seconds=60)
    assert "halted forever" in res.stop_reason and res.exit_status == 4
    res = run_kvm(write_kernel(tmp_path, bytes([0xFA, 0xF4])), memory_bytes=MEM,
                  serial_out=lambda b: None, max_seconds=60, irqchip=False)
    assert "halted forever" in res.stop_reason and res.exit_status == 4
