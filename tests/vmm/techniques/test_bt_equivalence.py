"""``bt`` is equivalent to the bare PC on the *standard* CPU, where trap-and-emulate is not.

Every workload of the guest OS, the sensitivity probe and every kernel of
guests/tests give byte-identical console output, the same exit code and the
*same guest instruction count* as the bare PC of the same CPU variant:
translated code runs one host instruction per guest instruction
(``translator.py``), so the guest's clock ticks as natively and its timer
interrupts land on the same instructions.  The coherence cases
(self-modifying code, a cache too small for the kernel) and precise faults
are run as hand-assembled programs under guests/hostile/fuzz.
"""

from __future__ import annotations

import tempfile

import pytest

from tests.vmm.runs import probe_lines, run
from trapvisor.guests import build_guest
from trapvisor.vmm.run import run_technique
from trapvisor.vmm.techniques.bt import BinaryTranslation

WORKLOADS = [
    "workload=probe",
    "workload=syscall iterations=100",
    "workload=compute iterations=1",
    "workload=ctxswitch iterations=50",
    "workload=pgfault iterations=30",
    "workload=ptemod iterations=30",
    "workload=forkwait iterations=2",
    "workload=io iterations=100",
    "workload=divzero iterations=30",
    "workload=crwrite iterations=100",
    "workload=selftest",
    "workload=protect",
    "workload=panic",
    "workload=mixed iterations=1",
]
TEST_KERNELS = ["hello", "paging-timer", "ring3", "aout"]


def same_as_native(cmdline: str, cpu: str = "standard", guest: str = "tvos"):
    native = run("native", cmdline, cpu, guest)
    bt = run("bt", cmdline, cpu, guest)
    assert bt.stop_reason == native.stop_reason, f"{bt.stop_reason}: {bt.detail}"
    assert bt.output == native.output
    assert bt.exit_code == native.exit_code
    assert bt.instructions == native.instructions, "the same guest instructions, however executed"
    return native, bt


@pytest.mark.parametrize("cmdline", WORKLOADS)
def test_bt_on_the_standard_cpu_is_equivalent_to_native(cmdline):
    native, bt = same_as_native(cmdline)
    assert native.exit_code in (1, 5), native.output[-400:]
    assert 0 < bt.direct < bt.instructions


@pytest.mark.parametrize("cmdline", ["workload=probe", "workload=ptemod iterations=30"])
def test_bt_on_the_strict_cpu_is_equivalent_to_native(cmdline):
    same_as_native(cmdline, "strict")


@pytest.mark.parametrize("kernel", TEST_KERNELS)
def test_bt_runs_the_test_kernels_as_the_bare_pc(kernel):
    native, bt = same_as_native("", guest=kernel)
    assert native.exit_code is not None


def test_the_probe_sees_no_monitor_state_under_bt():
    """What trap-emulate leaks on the standard CPU (tests/vmm/test_x86_holes.py), bt does not."""
    native = probe_lines(run("native", "workload=probe").output)
    bt = probe_lines(run("bt", "workload=probe").output)
    te = probe_lines(run("trap-emulate", "workload=probe").output)
    for name in ("sgdt", "sidt", "str", "smsw", "pushf", "popf", "lar", "lsl", "push", "call far"):
        if name in native:
            assert bt[name] == native[name], name
    assert any(te[k] != native[k] for k in native), "trap-emulate should show the holes"


def test_guest_user_code_runs_untranslated_and_the_kernel_from_the_cache():
    r = run("bt", "workload=compute iterations=1")
    s = r.bt
    assert s["executed direct (user)"] > 0.3 * r.instructions     # compute: user code, after the boot
    assert s["executed in tcache"] > 0 and s["units translated"] > 0
    assert s["executed in tcache"] + s["executed direct (user)"] + s["emulated"] == r.instructions
    assert s["of which IDENT"] > 0.5 * s["guest instructions translated"]
    assert s["hit rate"] > 0.9


def test_page_table_stores_are_adapted_to_callouts():
    r = run("bt", "workload=ptemod iterations=30")
    assert r.bt["adaptations"] > 0
    assert r.bt["callouts"].get("adapted (tracing faults)", 0) > 0


def test_a_translation_cache_too_small_for_the_kernel_is_flushed_and_still_correct():
    class TinyCache(BinaryTranslation):
        tcache_size = 8 << 10
    native = run("native", "workload=syscall iterations=100")
    bt = TinyCache.build(str(build_guest("tvos")), cmdline="workload=syscall iterations=100").run(300_000_000)
    assert bt.output == native.output and bt.instructions == native.instructions
    assert bt.bt["tcache flushes"] > 0


# -- hand-assembled programs run by guests/hostile/fuzz at ring 0 ---------------------------

def run_module(technique: str, code: bytes, paging: bool, strict: bool = False):
    head = bytes([0, 0, 0, int(paging)])
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        f.write(head + code)
        f.flush()
        return run_technique(technique, str(build_guest("fuzz")), modules=(f.name,),
                             memory_bytes=8 << 20, max_instructions=200_000, strict=strict)


# call next; next: pop ebx; mov byte [ebx+6], 5 (the immediate of the next MOV); mov al, 1;
# out 0xf4, al  -- natively AL is 5 (exit 11): the store changed the very next instruction.
SMC_AHEAD = bytes.fromhex("e800000000" "5b" "c6430605" "b001" "e6f4")
# call next; next: pop ebx; call f; mov byte [ebx+20], 7 (f's immediate); call f; out 0xf4, al;
# jmp $; f: mov al, 2; ret  -- natively exit 15: f was translated, changed, and called again.
SMC_BEHIND = bytes.fromhex("e800000000" "5b" "e80d000000" "c6431407" "e804000000" "e6f4" "ebfe"
                           "b002" "c3")
# mov ecx, 0; div ecx  -- #DE inside translated code: the handler prints the guest's EIP.
FAULT = bytes.fromhex("b900000000" "f7f1")


@pytest.mark.parametrize("paging", [False, True], ids=["flat", "paging"])
def test_kernel_code_changed_after_it_was_translated_runs_as_natively(paging):
    native = run_module("native", SMC_BEHIND, paging)
    assert native.exit_code == 15, native.output
    bt = run_module("bt", SMC_BEHIND, paging)
    assert (bt.output, bt.exit_code, bt.instructions) == (native.output, native.exit_code, native.instructions)
    assert bt.bt["stores into translated code"] > 0 and bt.bt["invalidations"] > 0


def test_a_store_into_the_next_instruction_takes_effect_as_on_qemu():
    """Self-modifying code inside one unit: the store is traced, the unit dropped, the
    next instruction translated afresh from the new bytes.  Held to QEMU (and the SDM,
    Vol. 3A §11.6: a store into code about to execute is detected), not to the bare
    simulated PC, which keeps running the block it decoded before the store (exit 3)."""
    qemu = qemu_module(SMC_AHEAD)
    assert qemu.exit_code == 11
    bt = run_module("bt", SMC_AHEAD, False)
    assert bt.exit_code == qemu.exit_code and bt.output.decode() == qemu.output
    assert bt.bt["stores into translated code"] > 0


def qemu_module(code: bytes):
    import subprocess

    from tests.guests.qemu import QemuRun, qemu_command
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        f.write(bytes([0, 0, 0, 0]) + code)
        f.flush()
        cmd = qemu_command(build_guest("fuzz"), memory_mib=8) + ["-initrd", f.name]
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False)
    return QemuRun(proc.stdout.decode("latin-1"), proc.returncode)


@pytest.mark.parametrize("strict", [False, True], ids=["standard", "strict"])
def test_a_fault_in_translated_code_is_delivered_with_the_guest_eip(strict):
    native = run_module("native", FAULT, True, strict)
    bt = run_module("bt", FAULT, True, strict)
    assert b"#DE" in native.output
    assert (bt.output, bt.exit_code, bt.instructions) == (native.output, native.exit_code, native.instructions)
