"""The host debugger's controls (``intercepts.debug_*``): breakpoints exit before the
instruction, watchpoints after the access, single-stepping after every instruction,
each as a :class:`DebugExit`; the guest's own state (DR6, EFLAGS, memory) is untouched,
and with the controls cleared the CPU runs as before.  (Rules: docs/architecture.md;
the VMX counterpart of a step is the monitor trap flag, SDM Vol. 3C §25.5.2.)"""

from trapvisor.machine.cpu.exits import BudgetExhausted, DebugExit

from .test_intercepts import CODE, DATA, cpu_with

# mov eax, 1; mov [DATA], eax; mov ebx, [DATA]; inc eax; nop...
PROGRAM = (b"\xb8\x01\x00\x00\x00" + b"\xa3" + DATA.to_bytes(4, "little")
           + b"\x8b\x1d" + DATA.to_bytes(4, "little") + b"\x40" + b"\x90" * 16)
STORE = CODE + 5
LOAD = CODE + 10
INC = CODE + 16


def armed(**controls):
    cpu = cpu_with(PROGRAM)
    for name, value in controls.items():
        setattr(cpu.intercepts, "debug_" + name, value)
    cpu.debug_controls_changed()
    return cpu


def test_a_breakpoint_exits_before_its_instruction_which_has_not_run():
    cpu = armed(breakpoints=frozenset({LOAD}))
    ex = cpu.run(100)
    assert ex == DebugExit("breakpoint", LOAD)
    assert cpu.eip == LOAD and cpu.icount == 2 and cpu.regs[3] == 0
    # Running again stops there again; passed over once, the program goes on.
    assert cpu.run(100) == DebugExit("breakpoint", LOAD)
    cpu.dbg_resume = LOAD
    assert isinstance(cpu.run(3), BudgetExhausted)
    assert cpu.regs[3] == 1 and cpu.regs[0] == 2


def test_single_step_exits_after_each_instruction():
    cpu = armed(single_step=True)
    eips = []
    for _ in range(4):
        ex = cpu.run(100)
        assert isinstance(ex, DebugExit) and ex.kind == "step"
        eips.append(cpu.eip)
    assert eips == [STORE, LOAD, INC, INC + 1] and cpu.icount == 4


def test_a_write_watchpoint_exits_after_the_store_and_not_on_the_load():
    cpu = armed(watchpoints=((DATA, DATA + 3, "write"),))
    ex = cpu.run(100)
    assert ex == DebugExit("watchpoint", DATA, "write")
    assert cpu.eip == LOAD and cpu.mem.ram[DATA] == 1      # after the store
    assert isinstance(cpu.run(3), BudgetExhausted)          # the load does not stop it


def test_read_and_access_watchpoints_see_the_load():
    cpu = armed(watchpoints=((DATA + 2, DATA + 2, "read"),))
    assert cpu.run(100) == DebugExit("watchpoint", DATA + 2, "read") and cpu.eip == INC
    cpu = armed(watchpoints=((DATA, DATA, "access"),))
    assert cpu.run(100) == DebugExit("watchpoint", DATA, "access") and cpu.eip == LOAD
    assert cpu.run(100) == DebugExit("watchpoint", DATA, "access") and cpu.eip == INC


def test_the_guest_sees_nothing_of_the_debugger():
    cpu = armed(breakpoints=frozenset({LOAD}), watchpoints=((DATA, DATA, "access"),))
    dr6, flags = cpu.dr[6], cpu.get_eflags()
    cpu.run(100)
    assert cpu.dr[6] == dr6 and cpu.get_eflags() == flags and cpu.deliveries == 0


def test_cleared_controls_run_the_program_to_its_budget():
    cpu = armed(breakpoints=frozenset({LOAD}), single_step=True)
    cpu.intercepts.clear()
    cpu.debug_controls_changed()
    assert isinstance(cpu.run(4), BudgetExhausted) and cpu.regs[0] == 2 and cpu.regs[3] == 1
