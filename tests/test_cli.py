"""The command line: one clear line for bad input, guest failures reported as guest events."""

import os
import signal
import subprocess
import sys
import time

import pytest


def tv(*args, timeout=120, **kw):
    return subprocess.run([sys.executable, "-m", "trapvisor", *args], capture_output=True, text=True,
                          timeout=timeout, **kw)


def one_line_error(p, status=2):
    assert p.returncode == status, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert lines and lines[0].startswith("trapvisor")
    assert len([line for line in lines if "error" in line]) == 1
    return lines[0]


@pytest.mark.parametrize("args,message", [
    (("run", "/nonexistent/kernel"), "not found"),
    (("run", "guest:hello", "--memory", "12Q"), "bad memory size"),
    (("run", "guest:hello", "--memory", "1M"), "must be between"),
    (("run", "guest:no-such-guest"), "no bundled guest"),
    (("run", "guest:hello", "--serial", "bogus:x"), "bad --serial"),
    (("run", "guest:hello", "--cpu", "turbo"), "invalid choice"),
    (("compare", "/nonexistent/kernel"), "not found"),
    (("run", "guest:hello", "--technique", "trap-emulate", "--shadow-cache", "0"), "bad shadow cache size"),
    (("compare", "guest:hello", "--shadow-cache", "many"), "bad shadow cache size"),
])
def test_bad_input_is_one_line_and_status_2(args, message):
    p = tv(*args)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert message in p.stderr


def test_a_file_that_is_not_a_kernel_is_rejected(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("just text\n")
    assert "neither a Multiboot kernel nor an ELF" in one_line_error(tv("run", str(f)))


def test_a_kernel_larger_than_memory_is_rejected(tmp_path):
    blob = tmp_path / "big.bin"
    blob.write_bytes(b"\x90" * (3 << 20))
    line = one_line_error(tv("run", str(blob), "--raw-load", "0x100000", "--memory", "2M"))
    assert "memory" in line


def test_exit_status_is_the_guests_debug_exit_code():
    p = tv("run", "guest:hello")
    assert p.returncode == 1 and "Hello from trapvisor" in p.stdout
    assert "exit code 1" in p.stderr and "MIPS" in p.stderr


def test_instruction_limit_stops_with_status_3():
    p = tv("run", "guest:hello", "--max-instructions", "50")
    assert p.returncode == 3 and "instruction limit" in p.stderr


def test_triple_fault_reports_a_register_dump():
    p = tv("run", "guest:triple-fault")
    assert p.returncode == 4, p.stderr
    assert "triple fault" in p.stderr and "EIP=" in p.stderr and "CR0=" in p.stderr


def test_unimplemented_instruction_names_address_bytes_and_disassembly(tmp_path):
    code = tmp_path / "sse.bin"
    code.write_bytes(bytes.fromhex("90 90 0f 28 c1 f4"))   # nop; nop; movaps xmm0,xmm1; hlt
    p = tv("run", str(code), "--raw-load", "0x100000")
    assert p.returncode == 4
    assert "instruction not implemented" in p.stderr
    assert "0x00100002" in p.stderr and "0f 28 c1" in p.stderr and "movaps" in p.stderr


def test_ctrl_c_stops_cleanly_with_a_summary():
    proc = subprocess.Popen([sys.executable, "-m", "trapvisor", "run", "guest:spin"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err and "instructions" in err


def test_guests_lists_the_bundled_guests():
    p = tv("guests")
    assert p.returncode == 0 and "tvos" in p.stdout and "hello" in p.stdout
