"""A PC whose CPU is KVM and whose devices are the project's (``trapvisor run --accel kvm``).

:class:`KvmMachine` puts together guest RAM (an mmap KVM maps into the
guest), a VM with the in-kernel irqchip and PIT when the host has them, one
vCPU with the CPUID policy for this host, and the *same* buses and device
objects the simulated PC builds (``machine.board.build_board``).  The
exit loop runs KVM_RUN, decodes each exit into a typed value
(``exits.decode_exit``), hands it to the one handler (``exits.handle_exit``),
and accounts it in the shared event format (``trapvisor.events``).

A periodic SIGALRM (every :data:`TICK_SECONDS`) makes KVM_RUN return with
EINTR so that device timers (the UART's input poll), the time limit and a
guest halted for good are noticed even while the vCPU sleeps in the kernel.

:func:`run_kvm` is the one-call API (the command line, the ``kvm``
technique, tests and benchmarks); it returns a :class:`RunResult` with the
summary lines, and the caller decides what to show (``trapvisor/cli/run.py``).
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections import Counter
from dataclasses import dataclass, field

from ..errors import UserError
from ..events import EXIT, INJECT, Event, EventLog
from . import exits, ioctls
from .cpuid import guest_cpuid
from .diagnose import explain_emulation_failure, register_dump
from .entry_state import apply_cpu_entry, cpu_entry_from
from .exits import (CONTINUE, STOP, WAIT, HltExit, IntrExit, IoExit, MmioExit, Outcome,
                    decode_exit, handle_exit)
from .guestmem import MAX_RAM_BYTES, KvmGuestMemory
from .hostinfo import KvmHostInfo, probe_kvm

TICK_SECONDS = 0.002
CTRL_A = 0x01


@dataclass
class RunResult:
    """What a KVM run ended with.  ``exit_status`` is what ``trapvisor run`` exits with."""
    exit_code: int | None                 # the guest's isa-debug-exit code, if it wrote one
    stop_reason: str                      # why the VM stopped, in words
    problem: bool = False                 # the guest died (fault, KVM error) rather than asked to stop
    detail: list = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    summary: list = field(default_factory=list)
    events: EventLog | None = None
    output: bytes = b""
    exit_status: int = 0
    host: KvmHostInfo | None = None


class StopRequest(Exception):
    pass


class KvmMachine:
    """One VM with one vCPU, wired to the project's device models."""

    def __init__(self, memory_bytes: int, *, serial_out=None, serial_in=None, disk=None,
                 irqchip: bool = True, host: KvmHostInfo | None = None, trace_file=None,
                 keep_events: bool = False, stop_after_output: str | None = None,
                 escape_char: bool = False):
        from ..machine.board import build_board
        from ..machine.clock import HostClock
        from .vm import KvmIrqSink, KvmSystem, KvmVm

        self.host = host or probe_kvm()
        require_usable_kvm(self.host)
        require_ram_fits(memory_bytes)
        self.system = self.memory = self.vm = self.vcpu = self.devices = self.board = None
        self._user_out = serial_out or (lambda data: None)
        self._user_in = serial_in
        self.output = bytearray()
        self._stop_regex = re.compile(stop_after_output.encode(), re.M) if stop_after_output else None
        self._escape = escape_char
        self._escape_armed = False
        self.stop: Outcome | None = None
        self.exit_code: int | None = None
        self.notes: list[str] = []
        self.events = EventLog(keep=keep_events, trace_file=trace_file)
        self.io_ports: Counter = Counter()
        self._counts: dict = {}
        self._durations: dict = {}
        self._ports: dict = {}
        self._injected = 0
        self.guest_ns = 0
        self.handler_ns = 0
        self.exit_count = 0
        self.boot_kind = "multiboot"
        try:
            self.system = KvmSystem()
            self.memory = KvmGuestMemory(memory_bytes)
            self.vm = KvmVm(self.system, self.memory, irqchip=irqchip)
            self.vcpu = self.vm.create_vcpu(0)
            policy = guest_cpuid(self.system.supported_cpuid(), software_kvm=not self.host.hardware_assisted)
            self.vcpu.set_cpuid(policy.entries)
            self.cpuid_hidden = policy.hidden
            self.clock = HostClock()
            in_kernel = self.vm.has_irqchip and self.vm.has_pit
            self.board = b = build_board(
                self.memory, self.clock,
                serial_out=self._serial_out, serial_in=self._serial_in if serial_in else None,
                disk=disk, on_exit=self._on_exit, on_reset=self._on_reset,
                in_kernel_irqchip=in_kernel, rtc_start=None)
            self.io_bus, self.mmio_bus, self.irq, self.devices = b.io_bus, b.mmio_bus, b.irq, b.devices
            if in_kernel:
                self.irq.connect(KvmIrqSink(self.vm))
        except BaseException:
            self.close()
            raise

    # -- device callbacks ------------------------------------------------------
    def _on_exit(self, code: int) -> None:
        self.exit_code = code
        self.stop = Outcome(STOP, stop_reason=f"guest wrote to isa-debug-exit: exit code {code}")

    def _on_reset(self) -> None:
        self.stop = Outcome(STOP, stop_reason="reset: the guest asked for a system reset")

    def _serial_out(self, data: bytes) -> None:
        self.output += data
        self._user_out(data)
        if self._stop_regex is not None and self.stop is None and self._stop_regex.search(self.output):
            self.stop = Outcome(STOP, stop_reason=f"console output matched {self._stop_regex.pattern.decode()!r}")

    def _serial_in(self) -> bytes:
        data = self._user_in()
        if not data or not self._escape:
            return data
        # Ctrl-A x quits, as in QEMU's -nographic console; Ctrl-A Ctrl-A sends one Ctrl-A.
        out = bytearray()
        for b in data:
            if self._escape_armed:
                self._escape_armed = False
                if b in (ord("x"), ord("X")):
                    self.stop = Outcome(STOP, stop_reason="quit from the console (Ctrl-A x)")
                    break
                out.append(b)
            elif b == CTRL_A:
                self._escape_armed = True
            else:
                out.append(b)
        return bytes(out)

    # -- loading ---------------------------------------------------------------
    def load(self, kernel: str, *, cmdline: str = "", modules=(), initrd: str | None = None,
             linux_entry: str = "auto") -> None:
        from .boot_linux import is_bzimage, load_linux
        from ..machine.loader import load_kernel
        from ..machine.loader.boot_state import entry_state
        from ..machine.loader.elf import is_elf
        from ..machine.loader.multiboot import find_header
        data = _read_head(kernel)
        if is_bzimage(data):
            boot = load_linux(self.memory, kernel, initrd=initrd, cmdline=cmdline,
                              software_kvm=not self.host.hardware_assisted, entry=linux_entry)
            self.boot_kind = "linux"
            self.notes.extend(boot.notes)
            apply_cpu_entry(self.vcpu, boot.entry)
            return
        if initrd:
            raise UserError(f"--initrd is for a Linux bzImage; {os.path.basename(kernel)} is not one")
        if find_header(data) is None and not is_elf(data):
            raise UserError(f"{os.path.basename(kernel)} is neither a Multiboot kernel nor a Linux bzImage",
                            hint="give a Multiboot (ELF or a.out-kludge) kernel, a bzImage, or guest:NAME")
        boot = load_kernel(self.memory, kernel, cmdline=cmdline, modules=list(modules))
        apply_cpu_entry(self.vcpu, cpu_entry_from(entry_state(boot)))

    # -- running -----------------------------------------------------------------
    def run(self, *, max_seconds: float | None = None) -> RunResult:
        start = time.perf_counter()
        deadline = start + max_seconds if max_seconds else None
        interrupted = False
        ticking = _start_ticks()
        try:
            self._loop(deadline)
        except KeyboardInterrupt:
            interrupted = True
            self.stop = Outcome(STOP, stop_reason="interrupted (Ctrl-C or a termination signal)")
        finally:
            _stop_ticks(ticking)
        seconds = time.perf_counter() - start
        return self._result(seconds, interrupted)

    def _loop(self, deadline: float | None) -> None:
        vcpu, page = self.vcpu, self.vcpu.run_page
        io_bus, mmio_bus, clock = self.io_bus, self.mmio_bus, self.clock
        userspace_irqchip = not self.vm.has_irqchip
        perf = time.perf_counter_ns
        # Per-exit accounting in plain dicts keyed by reason (folded into the
        # shared EventLog when the run ends): the hot path stays a few dict ops.
        counts, durations, ports = self._counts, self._durations, self._ports
        tracing = self.events.trace_file is not None or self.events.keep
        try:
            while self.stop is None:
                if userspace_irqchip:
                    self._offer_interrupt()
                t0 = perf()
                rc = vcpu.run()
                t1 = perf()
                if rc == 0:
                    ex = decode_exit(page, vcpu.exit_reason())
                elif rc in (-ioctls.EINTR, -ioctls.EAGAIN):
                    ex = IntrExit()
                else:
                    # Not an exit: the ioctl itself failed (e.g. EFAULT on a bad memory slot).
                    self.stop = Outcome(STOP, stop_reason=f"KVM_RUN failed: {os.strerror(-rc)}", problem=True,
                                        detail={"lines": register_dump(vcpu)})
                    break
                outcome = handle_exit(ex, io_bus, mmio_bus)
                if outcome.reply is not None:
                    off = ex.data_offset if type(ex) is IoExit else ioctls.RUN_UNION + 8
                    page[off:off + len(outcome.reply)] = outcome.reply
                if outcome.action is not CONTINUE:
                    if outcome.action == WAIT:
                        self._wait_for_interrupt()
                    else:
                        self._stop_on_fault(ex, outcome)
                clock.run_due()
                t2 = perf()
                self.guest_ns += t1 - t0
                reason = ex.reason
                counts[reason] = counts.get(reason, 0) + 1
                durations[reason] = durations.get(reason, 0) + (t2 - t1)
                if type(ex) is IoExit:
                    key = (ex.port, ex.is_write)
                    ports[key] = ports.get(key, 0) + 1
                elif type(ex) is IntrExit:
                    if deadline is not None and time.perf_counter() >= deadline and self.stop is None:
                        self.stop = Outcome(STOP, stop_reason="time limit")
                    if self.stop is None and not userspace_irqchip:
                        self._check_halted_for_good()
                if tracing:
                    self._trace(ex, t2 - t1)
        finally:
            self._fold_accounting()

    def _trace(self, ex, ns: int) -> None:
        """--trace: one record per exit in the shared event format (trapvisor/events.py)."""
        if type(ex) is IoExit:
            detail = exits.io_detail(ex)
        elif type(ex) is MmioExit:
            detail = {"address": ex.address, "size": ex.size, "direction": "write" if ex.is_write else "read"}
        else:
            detail = {}
        ev = Event("kvm", EXIT, ex.reason, guest_eip=self.vcpu.get_regs().rip, detail=detail, duration_ns=ns)
        log = self.events
        if log.keep and len(log.events) < log.limit:
            log.events.append(ev)
        if log.trace_file is not None:
            log.trace_file.write(ev.to_json() + "\n")

    def _fold_accounting(self) -> None:
        """Move the loop's counters into the EventLog (counts and ns by (kind, reason))."""
        log = self.events
        for reason, n in self._counts.items():
            log.counts[(EXIT, reason)] += n
            log.duration_ns[(EXIT, reason)] += self._durations[reason]
            self.exit_count += n
            self.handler_ns += self._durations[reason]
        for (port, is_write), n in self._ports.items():
            self.io_ports[(port, "out" if is_write else "in")] += n
        if self._injected:
            log.counts[(INJECT, "KVM_INTERRUPT")] += self._injected
            self._injected = 0
        self._counts.clear()
        self._durations.clear()
        self._ports.clear()

    # -- interrupts without an in-kernel irqchip -----------------------------------
    def _offer_interrupt(self) -> None:
        """Userspace PIC: inject when the guest can take it, else ask for an interrupt window."""
        intc = self.devices.interrupts
        if intc is None or not intc.interrupt_pending():
            self.vcpu.request_interrupt_window(False)
            return
        if self.vcpu.ready_for_interrupt_injection():
            vector = intc.acknowledge()
            self.vcpu.inject_interrupt(vector)
            self._injected += 1
            if self.events.trace_file is not None:
                self.events.trace_file.write(Event("kvm", INJECT, "KVM_INTERRUPT", detail={"vector": vector}).to_json()
                                             + "\n")
            self.vcpu.request_interrupt_window(False)
        else:
            self.vcpu.request_interrupt_window(True)

    def _wait_for_interrupt(self) -> None:
        """A HLT exit (userspace irqchip): sleep until the next device timer is due."""
        intc = self.devices.interrupts
        if not self.vcpu.get_regs().rflags & 0x200:
            self.stop = Outcome(STOP, stop_reason="halted forever: HLT with interrupts disabled",
                                problem=self.boot_kind != "linux")
            return
        while self.stop is None and not (intc is not None and intc.interrupt_pending()):
            deadline = self.clock.next_deadline()
            if deadline >= self.clock.NEVER:
                self.stop = Outcome(STOP, stop_reason="halted forever: HLT and no timer armed", problem=True)
                return
            delay = (deadline - self.clock.now_ns()) / 1e9
            if delay > 0:
                time.sleep(min(delay, 0.05))
            self.clock.run_due()

    def _check_halted_for_good(self) -> None:
        """In-kernel irqchip: a vCPU in HLT with IF=0 will never run again (Linux's power-off halt)."""
        if self.vcpu.is_halted() and not self.vcpu.get_regs().rflags & 0x200:
            if self.boot_kind == "linux":
                self.stop = Outcome(STOP, stop_reason="power off: the guest halted with interrupts disabled")
            else:
                self.stop = Outcome(STOP, stop_reason="halted forever: HLT with interrupts disabled",
                                    problem=True)

    # -- faults ------------------------------------------------------------------------
    def _stop_on_fault(self, ex, outcome: Outcome) -> None:
        detail: list[str] = []
        reason = outcome.stop_reason
        if type(ex) is exits.InternalErrorExit and ex.suberror == ioctls.KVM_INTERNAL_ERROR_EMULATION:
            line, more = explain_emulation_failure(self.vcpu, self.memory, self.host, ex.insn_bytes)
            reason = line
            detail.extend(more)
            detail.append(f"KVM reported: {outcome.stop_reason}")
        if outcome.problem:
            detail.extend(register_dump(self.vcpu))
        self.stop = Outcome(STOP, stop_reason=reason, problem=outcome.problem, detail={"lines": detail})

    # -- the end ----------------------------------------------------------------------
    def _result(self, seconds: float, interrupted: bool) -> RunResult:
        stop = self.stop or Outcome(STOP, stop_reason="stopped")
        if interrupted:
            status = 130
        elif self.exit_code is not None:
            status = self.exit_code
        elif stop.problem:
            status = 4
        elif stop.stop_reason == "time limit":
            status = 3
        else:
            status = 0
        res = RunResult(self.exit_code, stop.stop_reason, stop.problem, list(stop.detail.get("lines", [])),
                        seconds, interrupted, [], self.events, bytes(self.output), status, self.host)
        res.summary = self.summary(res)
        return res

    def summary(self, res: RunResult) -> list[str]:
        what = (f"exit code {res.exit_code}" if res.exit_code is not None
                else "guest stopped (see above)" if res.problem else res.stop_reason)
        chip = ("in-kernel irqchip and PIT (KVM_CREATE_IRQCHIP, KVM_CREATE_PIT2)" if self.vm.has_irqchip
                else "userspace PIC/PIT/APIC models (no in-kernel irqchip)")
        lines = [
            f"trapvisor: {what}; {self.exit_count:,} VM exits in {res.seconds:.2f} s "
            f"(in KVM_RUN {self.guest_ns / 1e9:.2f} s, handling exits {self.handler_ns / 1e9:.3f} s)",
            f"trapvisor: {self.host.label}: {self.host.reason}",
            f"trapvisor: devices: {chip}; the rest are trapvisor's own models",
        ]
        if self.cpuid_hidden:
            lines.append("trapvisor: CPUID features hidden from the guest (software KVM cannot emulate them): "
                         + " ".join(self.cpuid_hidden))
        lines.extend(f"trapvisor: {n}" for n in self.notes)
        if self.boot_kind != "linux" and self.host.legacy_paging is False:
            lines.append("trapvisor: note: this host's KVM does not support 32-bit paging (CR0.PG outside long "
                         "mode); a 32-bit guest that turns paging on gets #GP")
        rows = self.events.by_reason()
        if rows:
            lines.append(f"  {'exit reason':<28}{'count':>10}{'total ms':>12}{'us/exit':>10}")
            for kind, reason, n, ns, _cyc in rows:
                if kind != EXIT:
                    lines.append(f"  {reason + ' (' + kind + ')':<28}{n:>10,}")
                    continue
                lines.append(f"  {reason:<28}{n:>10,}{ns / 1e6:>12.2f}{ns / 1e3 / max(n, 1):>10.1f}")
            top = self.io_ports.most_common(6)
            if top:
                lines.append("  I/O exits by port: " + ", ".join(f"{p:#x} {d} {n:,}" for (p, d), n in top))
        return lines

    def close(self) -> None:
        """Close the vCPU and VM fds and /dev/kvm, then unmap guest RAM."""
        if self.devices is not None:
            self.devices.close()
            self.devices = None
        if self.vm is not None:
            self.vm.close()
        if self.system is not None:
            self.system.close()
        if self.memory is not None:
            self.memory.close()


def require_usable_kvm(host: KvmHostInfo) -> None:
    if not host.available:
        raise UserError(f"--accel kvm: {host.message} ({host.problem})", hint=host.hint)


def require_ram_fits(memory_bytes: int) -> None:
    if memory_bytes > MAX_RAM_BYTES:
        raise UserError(f"--memory {memory_bytes >> 20} MiB is more than the {MAX_RAM_BYTES >> 20} MiB "
                        "trapvisor maps below the PCI hole under KVM")


def _read_head(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(1 << 16)
    except IsADirectoryError:
        raise UserError(f"kernel {path} is a directory, not a file") from None
    except OSError as e:
        raise UserError(f"cannot read kernel {path}: {e.strerror or e}") from None


# -- the periodic kick ------------------------------------------------------------------
def _terminate(signum, frame):
    # SIGTERM/SIGHUP end the run like Ctrl-C, so the terminal and the fds are restored.
    raise KeyboardInterrupt


def _start_ticks():
    """SIGALRM every TICK_SECONDS so KVM_RUN returns (EINTR) even while the vCPU sleeps."""
    try:
        old = {signal.SIGALRM: signal.signal(signal.SIGALRM, lambda signum, frame: None)}
    except ValueError:          # not the main thread: no ticks (timers then run only on exits)
        return None
    for sig in (signal.SIGTERM, signal.SIGHUP):
        old[sig] = signal.signal(sig, _terminate)
    signal.setitimer(signal.ITIMER_REAL, TICK_SECONDS, TICK_SECONDS)
    return old


def _stop_ticks(old) -> None:
    if old is None:
        return
    signal.setitimer(signal.ITIMER_REAL, 0, 0)
    for sig, handler in old.items():
        signal.signal(sig, handler)


# -- the one-call API --------------------------------------------------------------------
def run_kvm(kernel_path, *, memory_bytes: int, cmdline: str = "", modules=(), initrd=None, disk=None,
            max_seconds: float | None = None, stop_after_output: str | None = None, trace_file=None,
            serial_out=None, serial_in=None, irqchip: bool = True, linux_entry: str = "auto",
            keep_events: bool = False, escape_char: bool = False, on_start=None) -> RunResult:
    """Boot ``kernel_path`` (Multiboot or bzImage, or guest:NAME) under KVM and run it to the end.

    ``serial_out`` (a callable taking bytes; None discards) takes the console
    output, ``serial_in`` (a callable returning the bytes available now)
    gives its input; ``escape_char``: Ctrl-A x in the input quits.
    ``on_start()`` is called once the kernel is loaded, just before the vCPU
    first runs (the command line puts the terminal in raw mode there).
    ``trace_file`` is a path or an open text file.  Raises UserError for
    anything the user can fix; guest faults are in the result.
    """
    from ..guests import resolve_kernel
    kernel = str(resolve_kernel(str(kernel_path)))
    if not os.path.exists(kernel):
        raise UserError(f"{kernel}: no such file")
    trace, own_trace = trace_file, False
    if isinstance(trace_file, (str, os.PathLike)):
        try:
            trace, own_trace = open(trace_file, "w"), True
        except OSError as e:
            raise UserError(f"cannot write trace file {trace_file}: {e.strerror}") from None
    machine = None
    try:
        machine = KvmMachine(memory_bytes, serial_out=serial_out, serial_in=serial_in, disk=disk,
                             irqchip=irqchip, trace_file=trace, keep_events=keep_events,
                             stop_after_output=stop_after_output, escape_char=escape_char)
        machine.load(kernel, cmdline=cmdline, modules=modules, initrd=initrd, linux_entry=linux_entry)
        if on_start is not None:
            on_start()
        return machine.run(max_seconds=max_seconds)
    finally:
        if machine is not None:
            machine.close()
        if own_trace:
            trace.close()
