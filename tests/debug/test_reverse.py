"""Reverse execution on the target itself (gdb drives it in test_replay.py): back one
instruction lands exactly where the machine was, back to a breakpoint finds the last hit,
a watchpoint backwards stops before the write, and the history stays bounded."""

import pytest

from trapvisor.debug import reverse
from trapvisor.debug.sim_target import SimTarget
from trapvisor.guests import build_guest
from trapvisor.vmm.monitor import RunOptions, get



def symbol(name: str) -> int:
    from elftools.elf.elffile import ELFFile
    with open(build_guest("tvos"), "rb") as f:
        for sym in ELFFile(f).get_section_by_name(".symtab").iter_symbols():
            if sym.name == name:
                return sym["st_value"]
    raise KeyError(name)


SYSCALL, SYS_EXIT, CURRENT = symbol("syscall"), symbol("sys_exit"), symbol("current")


def target(technique, out=None):
    m = get(technique)(RunOptions(str(build_guest("tvos")), cmdline="workload=syscall iterations=300",
                                  serial_out=out))
    return SimTarget(m, 2_000_000_000, output_gate=out)


@pytest.mark.parametrize("technique", ["native", "trap-emulate", "emulate"])
def test_reverse_stepi_and_reverse_continue_land_exactly(technique):
    t = target(technique)
    t.insert_breakpoint(0, SYSCALL, 1)
    seen = []
    for _ in range(3):
        assert t.resume(None, lambda: False).kind == "breakpoint"
        seen.append((t.m.steps(), list(t.state.regs), t.state.eip))
    for expected in reversed(seen[:-1]):
        assert t.reverse(False, lambda: False).kind == "breakpoint"
        assert (t.m.steps(), list(t.state.regs), t.state.eip) == expected
    t.remove_breakpoint(0, SYSCALL, 1)
    before = (t.m.steps(), list(t.state.regs), t.state.eip)
    t.resume(1, lambda: False)
    t.resume(1, lambda: False)
    assert t.reverse(True, lambda: False).kind == "step"
    assert t.reverse(True, lambda: False).kind == "step"
    assert (t.m.steps(), list(t.state.regs), t.state.eip) == before


def test_a_watchpoint_backwards_stops_before_the_write():
    t = target("native")
    t.insert_breakpoint(0, SYS_EXIT, 1)               # sys_exit
    assert t.resume(None, lambda: False).kind == "breakpoint"
    t.insert_breakpoint(2, CURRENT, 4)
    stop = t.reverse(False, lambda: False)
    assert stop.kind == "watchpoint" and stop.address == CURRENT
    assert t.read_memory(1, CURRENT, 4) == bytes(4)   # the write has not happened yet
    t.remove_breakpoint(2, CURRENT, 4)
    t.resume(1, lambda: False)
    assert t.read_memory(1, CURRENT, 4) != bytes(4)   # one step forward: it has


def test_with_no_earlier_hit_the_machine_goes_to_the_start_of_its_history():
    t = target("native")
    start = (t.m.steps(), t.state.eip)
    t.insert_breakpoint(0, SYSCALL, 1)
    t.resume(None, lambda: False)
    assert t.reverse(False, lambda: False).kind == "history-begin"
    assert (t.m.steps(), t.state.eip) == start


def test_the_console_shows_each_byte_once():
    shown = bytearray()
    gate = reverse.OutputGate(shown.extend)
    t = target("native", gate)
    t.insert_breakpoint(0, SYS_EXIT, 1)
    t.resume(None, lambda: False)
    t.insert_breakpoint(0, SYSCALL, 1)
    t.reverse(False, lambda: False)
    t.remove_breakpoint(0, SYSCALL, 1)
    t.remove_breakpoint(0, SYS_EXIT, 1)
    t.resume(None, lambda: False)
    assert bytes(shown).count(b"tvos: workload=syscall") == 1 and b"result syscall" in shown


def test_the_history_stays_bounded(monkeypatch):
    monkeypatch.setattr(reverse, "CHECKPOINT_EVERY", 10_000)
    monkeypatch.setattr(reverse, "MAX_CHECKPOINTS", 8)
    t = target("native")
    t.insert_breakpoint(0, SYS_EXIT, 1)
    t.resume(None, lambda: False)
    cps = t.history.checkpoints
    assert 2 <= len(cps) <= 9 and cps[0].pos == 0
    assert all(a.pos < b.pos for a, b in zip(cps, cps[1:]))
    t.remove_breakpoint(0, SYS_EXIT, 1)
    t.insert_breakpoint(0, SYSCALL, 1)
    assert t.reverse(False, lambda: False).kind == "breakpoint"     # still reaches the past
