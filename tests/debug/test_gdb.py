"""Real gdb (Debian's, in batch mode) against tvos with its symbols, on the bare PC and
under the techniques: breakpoints at kernel functions, bt, step, print, watch, info
registers, monitor commands, continue to the guest's exit.  Under a technique gdb
must see the guest's state (CS 0x8 and CPL 0 of its kernel, its own GDT), never the
monitor's ring-compressed host CPU (CS 0x9 at ring 1, the shadow GDT)."""

import pathlib

import pytest

from tests.hosttools_gate import need

from .gdbrun import WORKLOAD, gdb_session

TECHNIQUES = ["native", "trap-emulate", "emulate"]
KERNEL_SRC = pathlib.Path(__file__).resolve().parents[2] / "guests" / "os" / "kernel"


def src_line(name: str, text: str) -> int:
    """The line of the guest OS's source file ``name`` that holds ``text`` (1-based), so that
    the tests follow the sources instead of hard-coding line numbers."""
    for n, line in enumerate((KERNEL_SRC / name).read_text().splitlines(), 1):
        if text in line:
            return n
    raise AssertionError(f"{text!r} not in {name}")


@pytest.fixture(autouse=True)
def _gdb():
    need("gdb")


@pytest.mark.parametrize("technique", TECHNIQUES)
def test_break_bt_step_print_and_continue_to_the_end(technique):
    s = gdb_session(["--technique", technique], [
        "break pit_init", "continue", "bt", "print cmdline_copy", "next", "step",
        "info registers", "continue"])
    g = s.gdb
    assert "Breakpoint 1, pit_init () at" in g and f"timer.c:{src_line('timer.c', 'cpu_outb(PIT_MODE')}" in g
    assert "#1  0x" in g and "in kmain (" in g and "main.c:" in g           # bt
    assert f'tvos.elf {WORKLOAD}", ' in g                                     # print a global
    assert f"{src_line('timer.c', 'cpu_outb(PIT_CH0')}\t    cpu_outb(PIT_CH0" in g     # next: the next line
    assert "cpu_outb (port=" in g and f"cpuops_native.c:{src_line('cpuops_native.c', 'void cpu_outb(')}" in g            # step: into the call
    assert "cs             0x8 " in g and "ss             0x10 " in g         # the guest's selectors
    assert "exited with code 01" in g
    assert s.rc == 1 and "result syscall iterations=300" in s.stdout


@pytest.mark.parametrize("technique", TECHNIQUES)
def test_a_watchpoint_stops_at_the_write_to_a_global(technique):
    s = gdb_session(["--technique", technique], [
        "watch current", "continue", "bt", "print current->pid", "delete", "continue"])
    g = s.gdb
    assert "Hardware watchpoint 1: current" in g
    assert "Old value = (struct proc *) 0x0" in g and "New value = (struct proc *) 0x10ef60 <procs>" in g
    assert "#0  scheduler () at" in g and "$1 = 1" in g
    assert "exited with code 01" in g and s.rc == 1


@pytest.mark.parametrize("technique", ["native", "trap-emulate"])
def test_monitor_info_registers_shows_the_guests_cpl_and_tables(technique):
    s = gdb_session(["--technique", technique], [
        "break trap", "continue", "monitor info registers", "monitor techniques", "kill"])
    g = s.gdb
    assert "Breakpoint 1, trap (tf=" in g
    assert "CPL=0" in g and "GDTR=00101800/002f" in g and "IDTR=00101000/07ff" in g
    assert f"technique {technique}" in g
    assert f"* {technique}" in g and "  emulate" in g        # monitor techniques marks this one
    assert s.rc != 0 and "result syscall" not in s.stdout     # killed before the end


def test_stepi_hbreak_rwatch_and_writing_a_register():
    s = gdb_session([], [
        "hbreak kalloc_init", "continue", "stepi", "stepi", "info registers eip",
        "print $eax = 0x1234", "print/x $eax", "delete", "rwatch nfree", "continue",
        "delete", "continue"])
    g = s.gdb
    assert "Hardware assisted breakpoint 1 at" in g and "kalloc_init (" in g
    assert "$1 = 4660" in g and "$2 = 0x1234" in g
    assert "Hardware read watchpoint 2: nfree" in g and "Value = " in g
    assert "exited with code 01" in g


def test_ctrl_c_interrupts_a_running_guest():
    # Started running: gdb's connection stops it (as QEMU does), then it runs on until Ctrl-C.
    s = gdb_session([], ["continue", "info registers eip", "kill"], start_stopped=False,
                    workload="workload=compute iterations=64", interrupt_after=3)
    g = s.gdb
    assert "received signal SIGINT" in g
    assert "eip            0x" in g and "result compute" not in s.stdout


# -- /dev/kvm ---------------------------------------------------------------------------------

def _kvm_reference():
    """The same run without gdb: its exit code and console (on a software KVM without 32-bit
    paging tvos panics when it turns paging on; a VT-x host runs it to the end)."""
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-m", "trapvisor", "run", "guest:tvos", "--accel", "kvm", "-q",
                        "--append", WORKLOAD], capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout


def test_gdb_on_kvm_breaks_steps_watches_and_runs_to_the_same_end():
    from tests.hosttools_gate import need_kvm
    from trapvisor.kvm.hostinfo import probe_kvm
    need_kvm(probe_kvm())
    rc, console = _kvm_reference()
    s = gdb_session(["--accel", "kvm"], [
        "break kalloc_init", "continue", "bt", "print cmdline_copy", "watch range_end", "continue",
        "delete", "next", "step", "stepi", "info registers", "monitor info registers", "continue"])
    g = s.gdb
    assert "Breakpoint 1, kalloc_init (start=" in g and \
        f"kalloc.c:{src_line('kalloc.c', 'range_start = PGROUNDUP(start);')}" in g
    assert "in kmain (" in g and f"main.c:{src_line('main.c', 'kalloc_init((u32)kernel_end, top);')}" in g
    assert f'tvos.elf {WORKLOAD}", ' in g
    assert f"{src_line('kalloc.c', 'kfree((void *)(pa - PGSIZE));')}\t        kfree((void *)(pa - PGSIZE));" in g
    assert "cs             0x8 " in g and "eip            0x10" in g      # in the kernel, at 1 MiB up
    assert "Old value = 0" in g and "New value = 67108864" in g               # watch range_end
    assert "vCPU 0: CPL=0" in g and "GDT base=0000000000101800 limit=002f" in g
    assert f"exited with code {rc:02d}" in g
    assert s.rc == rc and s.stdout == console          # the guest ran as it runs without gdb
