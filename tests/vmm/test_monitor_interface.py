"""A technique needs no change to the CPU: a throwaway one, written here, runs
the guest OS through the monitor interface alone and is reachable from the
registry, `trapvisor techniques`, `run_technique` and `trapvisor compare`.

``cr-counter`` runs the guest on a VM's virtual CPU (as ``emulate`` does) with
CR-write exiting on for CR0, CR3 and CR4: every MOV to one of them exits, the
monitor counts it, performs the write itself and steps past the instruction.
"""

import io

import pytest

from trapvisor import cli
from trapvisor.events import TRAP, Event, EventLog
from trapvisor.guests import build_guest
from trapvisor.machine.cpu.exits import (
    BudgetExhausted, ControlRegisterExit, ExceptionExit, GuestExit, MachineStopped,
)
from trapvisor.vmm import monitor
from trapvisor.vmm.dispatcher import Dispatcher
from trapvisor.vmm.monitor import Host, Monitor, RunOptions
from trapvisor.vmm.run import run_technique
from trapvisor.vmm.techniques.base import TechniqueResult
from trapvisor.vmm.vm import VM

CMDLINE = "workload=ctxswitch iterations=20"


class CrCounter(Monitor):
    name = "cr-counter"
    summary = "test technique: every write to CR0, CR3 or CR4 exits and is counted"

    def __init__(self, options: RunOptions, host=None):
        super().__init__(options, host)
        host = host or Host([options.memory_bytes])
        self.vm = VM(host.allocator, options.memory_bytes, serial_out=options.serial_out)
        self.vm.load_kernel(options.kernel, cmdline=options.cmdline)
        self.vm.instructions = self.instructions
        self.vcpu = self.vm.vcpu
        self.vcpu.intercepts.cr_write_exiting = (1 << 0) | (1 << 3) | (1 << 4)
        self.writes = {0: [], 3: [], 4: []}
        self.log = EventLog()
        self.stop = None
        self.dispatcher = Dispatcher({ControlRegisterExit: self.on_cr_write,
                                      BudgetExhausted: lambda e: None, GuestExit: lambda e: None,
                                      MachineStopped: lambda e: e.stop})

    def instructions(self) -> int:
        return self.vcpu.icount

    def on_cr_write(self, ex: ControlRegisterExit):
        assert ex.write and self.vcpu.regs[ex.gpr] == ex.value
        self.writes[ex.cr].append(ex.value)
        self.log.log(Event(self.name, TRAP, f"MOV to CR{ex.cr}", self.vcpu.eip))
        self.vcpu.write_control_register(ex.cr, ex.value)
        self.vcpu.eip += ex.length
        self.vcpu.icount += 1            # the monitor retired the instruction
        return None

    def run_slice(self, until, max_instructions):
        while self.stop is None and self.vm.exit_code is None and self.vcpu.icount < min(until, max_instructions):
            self.stop = self.dispatcher.dispatch(self.vcpu.run(min(until, max_instructions) - self.vcpu.icount))
        return self.stop is not None or self.vm.exit_code is not None

    def result(self):
        return TechniqueResult(self.name, "standard", self.vm.output, self.vm.exit_code,
                               self.stop.reason if self.stop else None, "", self.vcpu.icount, 0,
                               None, self.seconds, self.log, exits=self.dispatcher.statistics())


@pytest.fixture
def cr_counter():
    monitor.register(CrCounter)
    yield CrCounter
    monitor.unregister(CrCounter.name)


def test_a_technique_written_outside_the_package_runs_the_guest_os_equivalently(cr_counter):
    kernel = str(build_guest("tvos"))
    native = run_technique("native", kernel, cmdline=CMDLINE, max_instructions=50_000_000)
    m = CrCounter.build(kernel, cmdline=CMDLINE)
    r = m.run(50_000_000)
    assert r.output == native.output and r.exit_code == native.exit_code == 1
    assert r.instructions == native.instructions
    # ctxswitch loads CR3 on every switch between its two processes: each one exited.
    assert len(m.writes[3]) >= 40 and len(set(m.writes[3])) >= 2
    assert r.exits["cr access"] == sum(len(v) for v in m.writes.values())
    assert r.traps_by_reason()["trap:MOV to CR3"] == len(m.writes[3])


def test_the_registry_the_cli_and_compare_reach_a_registered_technique(cr_counter, capsys):
    assert monitor.get("cr-counter") is CrCounter
    assert cli.main(["techniques"]) == 0
    listing = capsys.readouterr().out
    assert "cr-counter" in listing and CrCounter.summary in listing
    for name in ("native", "emulate", "trap-emulate", "kvm"):
        assert name in listing
    status = cli.main(["compare", "guest:tvos", "--append", CMDLINE, "--techniques", "cr-counter",
                       "--json"])
    out = capsys.readouterr().out
    assert status == 0 and '"technique": "cr-counter"' in out and '"identical": true' in out


def test_an_unknown_technique_is_one_line(capsys):
    assert cli.main(["run", "guest:hello", "--technique", "no-such"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown technique 'no-such'" in err[0]


def test_a_technique_given_an_option_it_cannot_honour_names_it():
    from trapvisor.errors import UserError
    with pytest.raises(UserError, match="emulate does not support --shadow-cache"):
        run_technique("emulate", str(build_guest("hello")), shadow_cache=2, strict_options=True)


# ------------------------------------------------------------ the dispatcher
def test_the_dispatcher_routes_each_exit_type_to_its_arm_and_counts_it():
    seen = []
    d = Dispatcher({ExceptionExit: lambda e: seen.append(("exc", e.vector)),
                    ControlRegisterExit: lambda e: seen.append(("cr", e.cr))})
    assert d.dispatch(ExceptionExit(14, 2)) is None
    assert d.dispatch(ControlRegisterExit(3, True, 0x1000, 0)) is None
    assert d.dispatch(ExceptionExit(13, 0)) is None
    assert seen == [("exc", 14), ("cr", 3), ("exc", 13)]
    assert d.statistics() == {"exception": 2, "cr access": 1}


def test_an_exit_with_no_arm_stops_the_vm_not_the_host():
    d = Dispatcher({})
    stop = d.dispatch(ExceptionExit(6, None))
    assert stop.reason == "monitor error" and "unhandled exit" in stop.detail


def test_trap_emulate_dispatches_synthetic_exits_like_real_ones():
    """A #GP exit made by hand, at a guest instruction that traps at ring 1 (CLI),
    is interpreted on the virtual CPU as the real trap would be."""
    from trapvisor.vmm.techniques.trap_emulate import TrapEmulate
    te = TrapEmulate.build(str(build_guest("hello")), memory_bytes=32 << 20)
    vcpu, host = te.vm.vcpu, te.host
    # Point the guest at a CLI in its own memory, with IF set.
    te.vm.memory.ram[0x7000] = 0xFA                  # cli
    vcpu.eip = 0x7000
    vcpu.set_eflags(vcpu.get_eflags() | 0x200)
    from trapvisor.vmm.interpreter import push
    push(vcpu, host)
    assert te.dispatcher.dispatch(ExceptionExit(13, 0)) is None
    assert not vcpu.eflags_rest & 0x200 and vcpu.eip == 0x7001 and host.eip == 0x7001
    assert te.dispatcher.statistics() == {"exception": 1}
    assert any("#GP: cli" in k for k in te.result().traps_by_reason())


# ------------------------------------------------- options a technique honours
@pytest.mark.parametrize("technique", [n for n, c in monitor.registered().items()
                                       if {"modules", "disk"} <= c.honours and c.time_sliced])
def test_modules_and_disk_reach_the_guest_under_every_technique_that_honours_them(technique, tmp_path):
    """The Multiboot module is in guest memory where the boot information says, and
    the disk is the VM's ATA primary master (it was dropped without a word)."""
    import struct
    module, disk = tmp_path / "mod.bin", tmp_path / "disk.img"
    module.write_bytes(b"trapvisor module " * 64)
    disk.write_bytes(bytes(512 * 8))
    m = monitor.get(technique).build(str(build_guest("hello")), modules=(str(module),), disk=str(disk),
                                     memory_bytes=32 << 20)
    vm = getattr(m, "vm", None) or m.pc
    mem = vm.memory.ram if hasattr(vm, "memory") else vm.memory
    cpu = vm.vcpu if hasattr(vm, "vcpu") else vm.cpu
    info = cpu.regs[3]                                    # EBX: the Multiboot information
    flags, mods_count, mods_addr = struct.unpack_from("<I", mem, info)[0], \
        *struct.unpack_from("<II", mem, info + 20)
    assert flags & (1 << 3) and mods_count == 1
    start, end = struct.unpack_from("<II", mem, mods_addr)
    assert bytes(mem[start:end]) == module.read_bytes()
    assert any(getattr(d, "path", None) == str(disk) for _, d in vm.devices), "the disk is not attached"


def test_the_livelock_watchdog_trips_only_after_max_idle_exits_without_a_step():
    from trapvisor.vmm.monitor import MAX_IDLE_EXITS, LivelockWatchdog
    w = LivelockWatchdog()
    assert not w.stuck(5)                                   # a first step
    assert not any(w.stuck(5) for _ in range(MAX_IDLE_EXITS))
    assert w.stuck(5)                                       # one exit more without a step
    assert not w.stuck(6) and not w.stuck(6)                # a step resets the count
