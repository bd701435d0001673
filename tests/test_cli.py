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
    assert "not a Linux bzImage, a Multiboot kernel or an ELF" in one_line_error(tv("run", str(f)))


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
    # (MOVAPS was the example until SSE without CPUID.SSE became #UD: now a PREFETCH form.)
    code = tmp_path / "prefetch.bin"
    code.write_bytes(bytes.fromhex("90 90 0f 0d 00 f4"))   # nop; nop; prefetch [eax]; hlt
    p = tv("run", str(code), "--raw-load", "0x100000")
    assert p.returncode == 4
    assert "instruction not implemented" in p.stderr
    assert "0x00100002" in p.stderr and "0f 0d 00" in p.stderr and "prefetch" in p.stderr


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


# -- every option checked before any VM: one line, status 2, no traceback --------------------

@pytest.fixture
def files(tmp_path):
    """Paths the bad command lines below refer to as {name}."""
    made = {"dir": tmp_path / "adir", "missing": tmp_path / "no" / "such" / "dir" / "f",
            "file": tmp_path / "data.bin", "disk": tmp_path / "disk.img",
            "bad_toml": tmp_path / "bad.toml", "unknown_key": tmp_path / "unknown.toml",
            "negative": tmp_path / "negative.toml", "boolean": tmp_path / "boolean.toml",
            "costs": tmp_path / "costs.toml", "table": tmp_path / "table.toml"}
    made["dir"].mkdir()
    made["file"].write_bytes(b"data")
    made["disk"].write_bytes(bytes(512 * 64))
    made["bad_toml"].write_text("trap_roundtrip = [")
    made["unknown_key"].write_text("warp_factor = 9\n")
    made["negative"].write_text("trap_roundtrip = -1\n")
    made["boolean"].write_text("trap_roundtrip = true\n")
    made["costs"].write_text("trap_roundtrip = 5\n")
    made["table"].write_text("[trap_roundtrip]\ncycles = 5\n")
    return {k: str(v) for k, v in made.items()}


H = ("run", "guest:hello")
TE = H + ("--technique", "trap-emulate")
EM = H + ("--technique", "emulate")
KVM = H + ("--accel", "kvm")

BAD_COMMAND_LINES = [
    # the five that ended in a traceback
    (H + ("--trace", "{dir}"), "is a directory"),
    (H + ("--trace", "{missing}"), "no such directory"),
    (H + ("--raw-load", "zz"), "bad address"),
    (KVM + ("--stop-after-output", "(["), "bad regular expression"),
    (H + ("--stop-after-output", "(["), "bad regular expression"),
    # counts, times and sizes
    (H + ("--max-instructions", "0"), "bad instruction limit"),
    (H + ("--max-instructions", "-5"), "bad instruction limit"),
    (H + ("--max-instructions", "ten"), "bad instruction limit"),
    (TE + ("--max-instructions", "0"), "bad instruction limit"),
    (H + ("--max-seconds", "0"), "bad time limit"),
    (H + ("--max-seconds", "-1"), "bad time limit"),
    (H + ("--max-seconds", "nan"), "bad time limit"),
    (H + ("--max-seconds", "inf"), "bad time limit"),
    (H + ("--memory", "0"), "bad memory size"),
    (H + ("--memory=-64M",), "bad memory size"),
    (H + ("--memory", "4G"), "must be between"),
    (H + ("--memory", "2049K"), "a multiple of 4 KiB"),
    (TE + ("--shadow-cache", "-1"), "bad shadow cache size"),
    (H + ("--raw-load", "0x100000000"), "bad address"),
    (H + ("--raw-load=-10",), "bad address"),
    # files and directories
    (("run", "{dir}"), "is a directory"),
    (("run", "guest:"), "empty guest name"),
    (H + ("--module", "{missing}"), "module file not found"),
    (H + ("--module", "{dir}"), "is a directory"),
    (H + ("--disk", "{missing}"), "disk image file not found"),
    (H + ("--disk", "{dir}"), "is a directory"),
    (KVM + ("--initrd", "{missing}"), "initrd file not found"),
    (EM + ("--costs", "{missing}"), "cost model file not found"),
    (EM + ("--costs", "{dir}"), "is a directory"),
    (EM + ("--costs", "{bad_toml}"), "not valid TOML"),
    (EM + ("--costs", "{unknown_key}"), "unknown cost keys warp_factor"),
    (EM + ("--costs", "{negative}"), "non-negative integer"),
    (EM + ("--costs", "{boolean}"), "non-negative integer"),
    (EM + ("--costs", "{table}"), "non-negative integer"),
    (H + ("--serial", "file:"), "needs a path"),
    (H + ("--serial", "file:{dir}"), "is a directory"),
    (H + ("--serial", "file:{missing}"), "no such directory"),
    (H + ("--serial", "socket:localhost"), "bad --serial socket"),
    (H + ("--serial", "socket:localhost:0"), "bad --serial socket"),
    (H + ("--serial", "socket:localhost:65536"), "bad --serial socket"),
    (H + ("--serial", "tty"), "bad --serial spec"),
    (H + ("--accel", "qemu"), "invalid choice"),
    (H + ("--technique", "binary-translation"), "unknown technique 'binary-translation'; known: native"),
    (H + ("--linux-entry", "elf"), "invalid choice"),
    (H + ("--bogus",), "unrecognized arguments"),
    (("run",), "give a kernel (a file or guest:NAME), --restore FILE or --replay FILE"),
    ((), "required: COMMAND"),
    (("frobnicate",), "invalid choice"),
    # options the chosen path cannot honour
    (H + ("--initrd", "{file}"), "--initrd is for a Linux bzImage; hello.elf is not one"),
    (H + ("--stop-after-output", "login:"), "--stop-after-output: needs --accel kvm"),
    (H + ("--costs", "{costs}"), "--costs: applies to --technique"),
    (H + ("--shadow-cache", "2"), "--shadow-cache: applies to --technique"),
    (TE + ("--raw-load", "100000"), "--raw-load: --technique trap-emulate"),
    (EM + ("--shadow-cache", "2"), "--shadow-cache: --technique emulate does not support it"),
    (EM + ("--trace", "{file}"), "--trace: --technique emulate does not support it"),
    (KVM + ("--technique", "emulate"), "--technique: applies to the simulated PC"),
    (KVM + ("--max-instructions", "5"), "--max-instructions: KVM does not count"),
    (KVM + ("--raw-load", "100000"), "--raw-load: --accel kvm"),
    (KVM + ("--costs", "{costs}"), "--costs: applies to --technique"),
    (KVM + ("--cpu", "strict"), "--cpu strict: under --accel kvm"),
    (H + ("--raw-load", "100000", "--module", "{file}"), "--module: a raw binary"),
    # compare
    (("compare", "guest:hello", "--max-instructions", "0"), "bad instruction limit"),
    (("compare", "guest:hello", "--techniques", "native,bogus"), "unknown technique 'bogus'"),
    (("compare", "guest:hello", "--techniques", ","), "no technique"),
    (("compare", "guest:hello", "--techniques", "native,native"), "given twice"),
    (("compare", "guest:hello", "--html", "{dir}"), "is a directory"),
    (("compare", "guest:hello", "--html", "{missing}"), "no such directory"),
    (("compare", "guest:hello", "--memory", "1M"), "must be between"),
    (("compare", "guest:hello", "--costs", "{bad_toml}"), "not valid TOML"),
    (("compare", "guest:hello", "--cpu", "turbo"), "invalid choice"),
    (("compare", "guest:hello", "--techniques", "native,emulate", "--shadow-cache", "2"),
     "--shadow-cache: no technique among those compared keeps shadow page tables"),
    (("compare", "{missing}"), "kernel file not found"),
    # vms
    (("vms", "guest:hello", "--slice", "0"), "bad time slice"),
    (("vms", "guest:hello", "--max-instructions", "0"), "bad instruction limit"),
    (("vms", "guest:hello", "--memory", "12Q"), "bad memory size"),
    (("vms", "guest:hello", "--costs", "{unknown_key}"), "unknown cost keys"),
    (("vms", "guest:hello", "--cpu", "turbo"), "invalid choice"),
    (("vms", "{missing} workload=probe"), "kernel file not found"),
    (("vms", "guest:hello", "guest:hello", "--memory", "2G"), "--memory: 2 VMs of 2048 MiB"),
    (("vms",), "required"),
    # the small commands
    (("guests", "--all"), "unrecognized arguments"),
    (("info", "kvm"), "unrecognized arguments"),
    (("doctor", "--verbose"), "unrecognized arguments"),
    (("demo", "tvos"), "unrecognized arguments"),
    (("demo-linux", "--memory", "4G"), "must be between"),
    (("demo-linux", "--trace", "{dir}"), "is a directory"),
    (("fetch-linux", "--now"), "unrecognized arguments"),
]


@pytest.mark.parametrize("args,message", BAD_COMMAND_LINES,
                         ids=[" ".join(a) or "no-command" for a, _ in BAD_COMMAND_LINES])
def test_every_bad_option_is_one_line_and_status_2(args, message, files, capsys):
    from trapvisor.cli import main
    status = main([a.format(**files) for a in args])
    out, err = capsys.readouterr()
    assert status == 2, (out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("trapvisor: error: "), err
    assert message in lines[0] and "Traceback" not in err


@pytest.mark.parametrize("args", [
    H + ("--trace", "/"), H + ("--trace", "/no/such/dir/f"), H + ("--raw-load", "zz"),
    KVM + ("--stop-after-output", "(["), ("compare", "guest:hello", "--max-instructions", "0"),
])
def test_the_former_tracebacks_are_one_line_in_a_real_process(args):
    p = tv(*args)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert len(p.stderr.splitlines()) == 1 and p.stderr.startswith("trapvisor: error: ")


def test_a_hint_stays_on_the_error_line(monkeypatch, capsys):
    from trapvisor import cli
    from trapvisor.errors import UserError

    def no_kvm(args):
        raise UserError("--accel kvm: /dev/kvm does not exist", hint="run with --accel sim")
    monkeypatch.setattr(cli.run, "cmd_run", no_kvm)
    assert cli.main(["run", "guest:hello", "--accel", "kvm"]) == 2
    err = capsys.readouterr().err
    assert err == "trapvisor: error: --accel kvm: /dev/kvm does not exist (hint: run with --accel sim)\n"


def test_good_options_reach_the_machine(tmp_path):
    trace = tmp_path / "trace.txt"
    serial = tmp_path / "serial.txt"
    p = tv("run", "guest:hello", "--trace", str(trace), "--serial", f"file:{serial}",
           "--max-seconds", "60", "--max-instructions", "100000")
    assert p.returncode == 1, p.stderr
    assert b"Hello from trapvisor" in serial.read_bytes() and trace.read_text().strip()


def test_a_technique_takes_its_options(tmp_path):
    costs = tmp_path / "costs.toml"
    costs.write_text("direct_instruction = 2\n")
    p = tv("run", "guest:hello", "--technique", "trap-emulate", "--costs", str(costs), "--shadow-cache", "2",
           "--cpu", "strict", "--max-instructions", "1000000")
    assert p.returncode == 1 and "trap-emulate" in p.stderr and "Hello from trapvisor" in p.stdout


def test_guest_linux_is_a_known_kernel_name():
    from trapvisor.cli import options as o
    assert o.kernel("guest:linux") == "guest:linux"
    p = tv("run", "guest:nosuch")
    assert "linux" in one_line_error(p)
