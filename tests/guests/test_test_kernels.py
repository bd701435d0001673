"""The small test kernels boot on QEMU and say what they should."""

from trapvisor.guests import build_guest

from .qemu import run_kernel


def test_hello():
    out, code = run_kernel(build_guest("hello"))
    assert out == "Hello from trapvisor\n"
    assert code == 1          # value 0 written to port 0xf4


def test_aout_kludge_kernel():
    run = run_kernel(build_guest("aout"))
    assert run.lines == [
        "aout: loaded through the a.out kludge",
        "aout: magic ok",
        "aout: data ok",
        "aout: bss ok",
        "aout: entry ok",
    ]
    assert run.exit_code == 1


def test_paging_timer_default_and_ticks_argument():
    run = run_kernel(build_guest("paging-timer"))
    assert run.lines == [
        "paging-timer: start",
        "paging-timer: gdt and idt loaded",
        "paging-timer: 4 KiB page alias ok",
        "paging-timer: 4 MiB PSE page alias ok",
        "paging-timer: took 10 timer interrupts at 100 Hz with HLT between them",
        "paging-timer: done",
    ]
    assert run.exit_code == 1
    run = run_kernel(build_guest("paging-timer"), append="ticks=3")
    assert "paging-timer: took 3 timer interrupts at 100 Hz with HLT between them" in run.lines
    assert run.exit_code == 1


def test_paging_timer_rejects_bad_ticks():
    run = run_kernel(build_guest("paging-timer"), append="ticks=0")
    assert run.lines[-1] == "paging-timer: ticks must be 1..100000"
    assert run.exit_value == 2


def test_ring3():
    run = run_kernel(build_guest("ring3"))
    assert run.lines == [
        "ring3: start",
        "ring3: tss loaded, tr=0x0028, dropping to ring 3",
        "ring3: hello from ring 3 via int 0x80",
        "ring3: user reads cpl 3, trap frame cs rpl 3",
        "ring3: #GP from cpl 3 on cli, skipped",
        "ring3: resumed after the #GP",
        "ring3: exit syscall from cpl 3",
        "ring3: done",
    ]
    assert run.exit_code == 1
