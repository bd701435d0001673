"""The debugger's view of a simulated machine: the bare PC or a guest under a technique.

Every run of the simulated PC goes through a technique of the monitor
(``vmm/monitor.py``; ``native`` is the bare PC), so one target serves them all
through the monitor interface:

* the guest's architectural state is the *state CPU*: the bare PC's CPU, or the
  VM's virtual CPU (``vm.vcpu``), which holds the guest's view (its CPL, its
  selectors, its GDT/IDT and CR3), never the host CPU's ring-compressed,
  shadowed one.  A technique that runs the guest on a simulated host CPU is
  taken off it (:meth:`Monitor.leave`, its world switch) whenever the guest is
  stopped, so the virtual CPU is current, and put back (:meth:`Monitor.enter`)
  to resume it;
* breakpoints, watchpoints and single steps are the CPU's debug controls
  (``intercepts.debug_*``), set on the CPU that executes the guest's
  instructions (the host CPU under trap-and-emulate): a
  :class:`~trapvisor.machine.cpu.exits.DebugExit` ends the technique's slice
  (``vmm/dispatcher.DebugStop``).  Guest memory is never patched with INT3.

Known limits: an instruction the monitor interprets on the virtual CPU (the
faulting CLI, OUT, MOV CR3 of trap-and-emulate) is stepped as one step, but a
store it makes is not seen by a watchpoint; a step under trap-and-emulate may
land in an interrupt handler when the monitor injects an interrupt.
"""

from __future__ import annotations

from ..machine.cpu.constants import CS
from ..machine.cpu.exits import DebugExit
from ..vmm.dispatcher import DebugStop
from .paging_walk import linear_to_physical
from .target import GENERAL, REGISTERS, SEGMENTS, X87_RESET, Stop, Target, Unmapped

SLICE = 20_000          # guest steps between two looks for Ctrl-C
# gdb's Z types: 0 software, 1 hardware breakpoint; 2 write, 3 read, 4 access watchpoint.
WATCH_KINDS = {2: "write", 3: "read", 4: "access"}
SEG_INDEX = {"es": 0, "cs": 1, "ss": 2, "ds": 3, "fs": 4, "gs": 5}


class SimTarget(Target):
    MONITOR_COMMANDS = ["info registers", "techniques", "snapshot FILE"]

    def __init__(self, monitor, max_instructions: int, snapshot_options: dict | None = None):
        self.m = monitor
        self.snapshot_options = snapshot_options
        self.limit = max_instructions
        self.name = monitor.name
        self.breakpoints: dict[int, set] = {}      # linear address -> Z types set there
        self.watchpoints: dict[tuple, tuple] = {}  # (type, addr, len) -> (first, last, kind)
        self.ended: Stop | None = None
        self.m.leave()

    # -- the two CPUs ------------------------------------------------------------------
    @property
    def state(self):
        """The CPU holding the guest's architectural state (see the module docstring)."""
        pc = getattr(self.m, "pc", None)
        return pc.cpu if pc is not None else self.m.vm.vcpu

    @property
    def executor(self):
        """The CPU that executes the guest's instructions (where the debug controls go)."""
        return self.m.host if getattr(self.m, "uses_host", False) else self.state

    # -- registers ---------------------------------------------------------------------
    def read_registers(self, thread: int) -> dict[str, int]:
        cpu = self.state
        values = {name: cpu.regs[i] for i, name in enumerate(GENERAL)}
        values["eip"] = cpu.eip
        values["eflags"] = cpu.get_eflags()
        for name in SEGMENTS:
            values[name] = cpu.sel[SEG_INDEX[name]]
        for name, _ in REGISTERS[16:]:
            values[name] = X87_RESET.get(name, 0)
        return values

    def write_registers(self, thread: int, values: dict[str, int]) -> None:
        cpu = self.state
        for name, v in values.items():
            if name in GENERAL:
                cpu.regs[GENERAL.index(name)] = v & 0xFFFFFFFF
            elif name == "eip":
                cpu.eip = v & 0xFFFFFFFF
            elif name == "eflags":
                cpu.set_eflags(v)
            elif name in SEG_INDEX and v != cpu.sel[SEG_INDEX[name]]:
                raise ValueError(f"{name}: loading a segment register from the debugger is not supported")

    # -- memory ------------------------------------------------------------------------
    def _physical(self, lin: int) -> int | None:
        cpu = self.state

        def read32(pa):
            return cpu.phys_read32(pa) if pa + 4 <= cpu.ram_size else None
        return linear_to_physical(lin, cpu.cr0, cpu.cr3, cpu.cr4, read32)

    def read_memory(self, thread: int, addr: int, length: int) -> bytes:
        cpu, out = self.state, bytearray()
        for i in range(length):
            pa = self._physical(addr + i) if i == 0 or (addr + i) & 0xFFF == 0 else pa + 1
            if pa is None or pa >= cpu.ram_size:
                if not out:
                    raise Unmapped(f"{addr:#x}")
                break
            out.append(cpu.ram[pa])
        return bytes(out)

    def write_memory(self, thread: int, addr: int, data: bytes) -> None:
        cpu = self.state
        targets = []
        for i in range(len(data)):
            pa = self._physical(addr + i)
            if pa is None or pa >= cpu.ram_size:
                raise Unmapped(f"{addr + i:#x}")
            targets.append(pa)
        for pa, b in zip(targets, data):
            cpu.phys_write(pa, 1, b)      # drops decoded blocks of the page (code patched)

    # -- breakpoints -------------------------------------------------------------------
    def insert_breakpoint(self, kind: int, addr: int, length: int) -> bool:
        if kind in (0, 1):
            self.breakpoints.setdefault(addr & 0xFFFFFFFF, set()).add(kind)
            return True
        if kind in WATCH_KINDS:
            self.watchpoints[(kind, addr, length)] = (addr, addr + max(length, 1) - 1, WATCH_KINDS[kind])
            return True
        return False

    def remove_breakpoint(self, kind: int, addr: int, length: int) -> bool:
        if kind in (0, 1):
            kinds = self.breakpoints.get(addr & 0xFFFFFFFF, set())
            kinds.discard(kind)
            if not kinds:
                self.breakpoints.pop(addr & 0xFFFFFFFF, None)
            return True
        if kind in WATCH_KINDS:
            self.watchpoints.pop((kind, addr, length), None)
            return True
        return False

    def _arm(self, step: bool) -> None:
        """Put the guest back on its CPU with the debugger's controls set."""
        self.m.enter()
        cpu = self.executor
        ic = cpu.intercepts
        ic.debug_breakpoints = frozenset(self.breakpoints)
        ic.debug_watchpoints = tuple(self.watchpoints.values())
        ic.debug_single_step = step
        cpu.debug_controls_changed()
        here = (cpu.base[CS] + cpu.eip) & 0xFFFFFFFF
        cpu.dbg_resume = here if here in self.breakpoints else None

    def _disarm(self) -> None:
        cpu = self.executor
        ic = cpu.intercepts
        ic.debug_breakpoints, ic.debug_watchpoints, ic.debug_single_step = frozenset(), (), False
        cpu.debug_controls_changed()
        cpu.dbg_resume = None
        self.m.leave()

    # -- running -----------------------------------------------------------------------
    def resume(self, step_thread: int | None, interrupted) -> Stop:
        if self.ended is not None:
            return self.ended
        step = step_thread is not None
        self._arm(step)
        try:
            while True:
                ended = self.m.run_slice(self.m.steps() + (1 if step else SLICE), self.limit)
                ex = self._take_debug_exit()
                if ex is not None:
                    return self._stop_for(ex)
                if ended:
                    self.ended = self._end()
                    return self.ended
                if step:
                    return Stop("step")     # the step was an instruction the monitor interpreted
                if interrupted():
                    return Stop("interrupt")
        finally:
            self._disarm()

    def _take_debug_exit(self) -> DebugExit | None:
        """The DebugExit that ended the technique's slice, if one did (and forget it)."""
        m = self.m
        last = getattr(m, "pc", None) and m.last
        if last is not None and getattr(last, "debug", None) is not None:
            ex, last.debug = last.debug, None
            m.last = None
            return ex
        for attr in ("stop_reason", "stop"):
            stop = getattr(m, attr, None)
            if isinstance(stop, DebugStop):
                setattr(m, attr, None)
                return stop.exit
        return None

    def _stop_for(self, ex: DebugExit) -> Stop:
        if ex.kind == "breakpoint":
            kinds = self.breakpoints.get(ex.address, {0})
            return Stop("breakpoint" if 0 in kinds else "hw-breakpoint", address=ex.address)
        if ex.kind == "watchpoint":
            return Stop("watchpoint", address=ex.address, access=ex.access)
        return Stop("step")

    def _end(self) -> Stop:
        r = self.m.result()
        self.result = r
        if r.exit_code is not None:
            return Stop("exited", exit_code=r.exit_code)
        return Stop("ended", detail=f"{r.stop_reason}: {r.detail}" if r.detail else str(r.stop_reason))

    # -- monitor commands --------------------------------------------------------------
    def monitor(self, command: str) -> str | None:
        words = command.split()
        if words == ["info", "registers"]:
            cpu = self.state
            return f"{cpu.state_dump()}\n(the guest's view, technique {self.name})\n"
        if len(words) == 2 and words[0] == "snapshot":
            return self.snapshot(words[1])
        if words == ["techniques"]:
            from ..vmm.monitor import registered
            lines = [f"{'*' if name == self.name else ' '} {name:14} {cls.summary}"
                     for name, cls in registered().items()]
            return "\n".join(lines) + "\n"
        return None

    def snapshot(self, path: str) -> str:
        """``monitor snapshot FILE``: the machine as it is at this stop (debug/snapshot.py)."""
        from ..errors import UserError
        from .snapshot import save
        if self.snapshot_options is None:
            return "snapshot: this run was not started from the command line's options\n"
        try:
            size = save(path, self.m, self.snapshot_options)
        except UserError as e:
            return f"snapshot: {e}\n"
        return (f"snapshot of the machine after {self.m.steps():,} guest steps written to {path} "
                f"({size:,} bytes); trapvisor run --restore {path}\n")

    def detach(self) -> None:
        self.breakpoints.clear()
        self.watchpoints.clear()

    def kill(self) -> None:
        self.ended = Stop("ended", detail="killed from the debugger")
