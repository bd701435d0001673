"""A PC whose CPUs are KVM vCPUs and whose devices are the project's (``trapvisor run --accel kvm``).

:class:`KvmMachine` puts together guest RAM (an mmap KVM maps into the
guest), a VM with the in-kernel irqchip and PIT when the host has them (left
in the firmware's state: ``firmware_state.py``), one vCPU per CPU of the
board (``--smp N``; the vCPU id is the APIC ID of ``cpuid_model.Topology``),
each with its own CPUID table (``cpuid.py``), and the *same* buses, device
objects, MP and ACPI tables the simulated PC builds
(``machine.board.build_board``).

Threads: each vCPU runs its exit loop on a thread of its own
(``vcpu_loop.py``); the thread that calls :meth:`KvmMachine.run` is the
timer thread.  It sleeps until the next device timer is due (the UART's
input poll, the userspace PIT and APIC timers), runs it under the device
lock, and kicks the BSP when the userspace interrupt controller has an
interrupt for it, so timer interrupts arrive on time whether or not the guest
exits.  Every :data:`HOUSEKEEPING_SECONDS` it kicks every vCPU so that each
reports whether it is parked (a VM whose vCPUs are all halted with
interrupts off has stopped for good: Linux's power-off halt).  It also takes
Ctrl-C and the time limit; :meth:`pause`, :meth:`resume` and
:meth:`request_stop` may be called from any thread.

:func:`run_kvm` is the one-call API (the command line, the ``kvm``
technique, tests and benchmarks); it returns a :class:`RunResult` with the
summary lines, and the caller decides what to show (``trapvisor/cli/run.py``).
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections import Counter

from ..errors import UserError
from ..events import EXIT, INJECT, Event, EventLog
from ..machine.run_result import RunResult
from . import exits, ioctls
from .diagnose import explain_emulation_failure, register_dump
from .entry_state import apply_cpu_entry, cpu_entry_from
from .exits import STOP, InternalErrorExit, IoExit, MmioExit, Outcome
from .guestmem import MAX_RAM_BYTES, KvmGuestMemory
from .hostinfo import KvmHostInfo, probe_kvm
from .vcpu import install_kick_handler
from .vcpu_loop import VcpuLoop

HOUSEKEEPING_SECONDS = 0.02
CTRL_A = 0x01
MAX_SMP = 254                 # xAPIC IDs 0..254 (0xFF is the broadcast ID)
BP_VECTOR = 3                 # #BP (Intel SDM Vol. 3A Table 6-1)
MF_VECTOR = 16                # #MF, x87 floating-point error
FSW_ES = 1 << 7               # x87 status word: error summary (SDM Vol. 1 8.1.3)


class KvmMachine:
    """One VM with ``smp`` vCPUs, wired to the project's device models."""

    def __init__(self, memory_bytes: int, *, serial_out=None, serial_in=None, disk=None,
                 irqchip: bool = True, host: KvmHostInfo | None = None, trace_file=None,
                 keep_events: bool = False, stop_after_output: str | None = None,
                 escape_char: bool = False, smp: int = 1, cpu: str = "model"):
        from ..machine import bios, cpuid_model
        from ..machine.board import build_board
        from ..machine.clock import HostClock
        from . import firmware_state
        from .cpuid import CPU_KINDS
        from .vm import KvmIrqSink, KvmSystem, KvmVm

        self.host = host or probe_kvm()
        require_usable_kvm(self.host)
        require_ram_fits(memory_bytes)
        if cpu not in CPU_KINDS:
            raise UserError(f"--cpu {cpu}: expected one of {', '.join(CPU_KINDS)} under --accel kvm")
        if not 1 <= smp <= MAX_SMP:
            raise UserError(f"--smp {smp}: expected 1 to {MAX_SMP} CPUs")
        self.system = self.memory = self.vm = self.devices = self.board = None
        self.vcpus: list = []
        self.loops: list[VcpuLoop] = []
        self.cpu_kind = cpu
        self.topology = cpuid_model.Topology.for_cpus(smp)
        self.firmware = bios.Firmware.for_cpus(smp, self.topology)
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
        self.guest_ns = self.handler_ns = self.exit_count = 0
        self.recovered: Counter = Counter()
        self.boot_kind = "multiboot"
        self.cpuid_model = None
        self.cpuid_hidden: list[str] = []
        self.cpuid_irqchip_hidden: list[str] = []
        self.lock = threading.RLock()
        self.pause_requested = False
        self.pause_cond = threading.Condition()
        self.round = 0
        self._timer_wake = threading.Event()
        self.userspace_timer_signal = False      # SIGALRM to the BSP (vcpu_loop.py), set by run()
        # A host debugger (trapvisor/debug/kvm_target.py): called on a vCPU's thread with its
        # KVM_EXIT_DEBUG, or with a software KVM's failure to emulate an INT3 (True: it was the
        # debugger's); None: such an exit stops the VM as unexpected.
        self.on_debug = None
        try:
            self.system = KvmSystem()
            limit = self.system.check_extension(ioctls.KVM_CAP_MAX_VCPUS) or self.system.check_extension(
                ioctls.KVM_CAP_NR_VCPUS) or 1
            if smp > limit:
                raise UserError(f"--smp {smp}: this host's KVM allows at most {limit} vCPUs per VM")
            self.memory = KvmGuestMemory(memory_bytes)
            self.vm = KvmVm(self.system, self.memory, irqchip=irqchip)
            in_kernel = self.vm.has_irqchip and self.vm.has_pit
            if smp > 1 and not in_kernel:
                raise UserError(f"--smp {smp} needs KVM's in-kernel irqchip (INIT and SIPI go through its "
                                "local APICs); this VM has the userspace interrupt controllers")
            if in_kernel:
                firmware_state.apply(self.vm, self.firmware)
            for i, apic_id in enumerate(self.topology.apic_ids()):
                vcpu = self.vm.create_vcpu(apic_id)
                self.vcpus.append(vcpu)
                self.loops.append(VcpuLoop(self, vcpu, bsp=i == 0))
            self.vcpu = self.vcpus[0]
            self.clock = HostClock()
            self.clock.on_earlier_deadline = self._timer_wake.set
            self.board = b = build_board(
                self.memory, self.clock,
                serial_out=self._serial_out, serial_in=self._serial_in if serial_in else None,
                disk=disk, on_exit=self._on_exit, on_reset=self._on_reset,
                in_kernel_irqchip=in_kernel, rtc_start=None, firmware=self.firmware)
            self.io_bus, self.mmio_bus, self.irq, self.devices = b.io_bus, b.mmio_bus, b.irq, b.devices
            if in_kernel:
                self.irq.connect(KvmIrqSink(self.vm))
        except BaseException:
            self.close()
            raise

    # -- device callbacks ------------------------------------------------------
    def _on_exit(self, code: int) -> None:
        self.exit_code = code
        self.request_stop(Outcome(STOP, stop_reason=f"guest wrote to isa-debug-exit: exit code {code}"))

    def _on_reset(self) -> None:
        self.request_stop(Outcome(STOP, stop_reason="reset: the guest asked for a system reset"))

    def _serial_out(self, data: bytes) -> None:
        self.output += data
        self._user_out(data)
        if self._stop_regex is not None and self.stop is None and self._stop_regex.search(self.output):
            self.request_stop(Outcome(STOP, stop_reason=f"console output matched {self._stop_regex.pattern.decode()!r}"))

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
                    self.request_stop(Outcome(STOP, stop_reason="quit from the console (Ctrl-A x)"))
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
        from ..machine import cpuid_model
        from ..machine.loader import load_kernel
        from ..machine.loader.boot_state import entry_state
        from ..machine.loader.elf import is_elf
        from ..machine.loader.multiboot import find_header
        data = _read_head(kernel)
        if is_bzimage(data):
            self.boot_kind = "linux"
            self._set_cpuid(cpuid_model.PC64, paravirt=True)
            boot = load_linux(self.memory, kernel, initrd=initrd, cmdline=cmdline,
                              software_kvm=not self.host.hardware_assisted, entry=linux_entry,
                              rsdp=self.board.rsdp)
            self.notes.extend(boot.notes)
            apply_cpu_entry(self.vcpu, boot.entry)
            return
        if initrd:
            raise UserError(f"--initrd is for a Linux bzImage; {os.path.basename(kernel)} is not one")
        if find_header(data) is None and not is_elf(data):
            raise UserError(f"{os.path.basename(kernel)} is neither a Multiboot kernel nor a Linux bzImage",
                            hint="give a Multiboot (ELF or a.out-kludge) kernel, a bzImage, or guest:NAME")
        self._set_cpuid(cpuid_model.PC, paravirt=False)
        boot = load_kernel(self.memory, kernel, cmdline=cmdline, modules=list(modules))
        apply_cpu_entry(self.vcpu, cpu_entry_from(entry_state(boot)))

    def _set_cpuid(self, model, *, paravirt: bool) -> None:
        """Each vCPU's CPUID table (cpuid.py): the model's, or the host's with --cpu host."""
        from .cpuid import guest_cpuid
        supported = self.system.supported_cpuid()
        self.cpuid_model = model if self.cpu_kind == "model" else None
        for vcpu in self.vcpus:
            policy = guest_cpuid(supported, software_kvm=not self.host.hardware_assisted, cpu=self.cpu_kind,
                                 model=model, topology=self.topology, apic_id=vcpu.index,
                                 irqchip_in_kernel=self.vm.has_irqchip, paravirt=paravirt)
            vcpu.set_cpuid(policy.entries)
        self.cpuid_hidden, self.cpuid_irqchip_hidden = policy.hidden, policy.irqchip_hidden

    # -- control from any thread -----------------------------------------------------
    def request_stop(self, outcome: Outcome | None = None) -> None:
        """Stop every vCPU (the first reason given wins)."""
        with self.pause_cond:
            if self.stop is None:
                self.stop = outcome or Outcome(STOP, stop_reason="stopped by request")
            self.pause_cond.notify_all()
        self._timer_wake.set()
        for loop in self.loops:
            loop.wake.set()
        self._kick_all()

    def pause(self, timeout: float = 10.0) -> bool:
        """Hold every vCPU outside KVM_RUN; returns once all are held (False on timeout or stop)."""
        self.pause_requested = True
        self._kick_all()
        for loop in self.loops:
            loop.wake.set()
        end = time.monotonic() + timeout
        with self.pause_cond:
            while not all(lp.paused for lp in self.loops if lp.thread is not None and lp.thread.is_alive()):
                if self.stop is not None or time.monotonic() >= end:
                    return False
                self.pause_cond.wait(0.05)
        return True

    def resume(self) -> None:
        with self.pause_cond:
            self.pause_requested = False
            self.pause_cond.notify_all()

    @property
    def paused(self) -> bool:
        return self.pause_requested and all(lp.paused for lp in self.loops)

    def _kick_all(self) -> None:
        for vcpu in self.vcpus:
            vcpu.kick()

    # -- running -----------------------------------------------------------------
    def run(self, *, max_seconds: float | None = None) -> RunResult:
        start = time.perf_counter()
        deadline = time.monotonic() + max_seconds if max_seconds else None
        interrupted = False
        old = _install_signals()
        self.userspace_timer_signal = old is not None and not self.vm.has_irqchip
        if self.userspace_timer_signal:
            # SIGALRM only ever reaches the BSP's thread (vcpu_loop.py unblocks it there).
            old[signal.SIGALRM] = signal.signal(signal.SIGALRM, lambda signum, frame: None)
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        try:
            for loop in self.loops:
                loop.start()
            self._timer_loop(deadline)
        except KeyboardInterrupt:
            interrupted = True
            self.request_stop(Outcome(STOP, stop_reason="interrupted (Ctrl-C or a termination signal)"))
        finally:
            if self.stop is None:
                self.request_stop()
            self._join()
            if self.userspace_timer_signal:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})
            _restore_signals(old)
            self._fold_accounting()
        seconds = time.perf_counter() - start
        return self._result(seconds, interrupted)

    def _timer_loop(self, deadline: float | None) -> None:
        """The timer thread: device timers on time, kicks for the userspace irqchip, housekeeping."""
        clock, lock, wake = self.clock, self.lock, self._timer_wake
        bsp = self.loops[0]
        intc = self.devices.interrupts if not self.vm.has_irqchip else None
        next_round = time.monotonic() + HOUSEKEEPING_SECONDS
        while self.stop is None:
            with lock:
                clock.run_due()
                pending = intc is not None and intc.interrupt_pending()
                due = clock.next_deadline()
            if pending:
                bsp.wake.set()
                bsp.vcpu.kick()
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                self.request_stop(Outcome(STOP, stop_reason="time limit"))
                break
            if now >= next_round:
                self._housekeeping()
                next_round = now + HOUSEKEEPING_SECONDS
            timeout = min(next_round - now, (due - clock.now_ns()) / 1e9,
                          deadline - now if deadline is not None else HOUSEKEEPING_SECONDS)
            if timeout > 0:
                wake.wait(timeout)
            wake.clear()

    def _housekeeping(self) -> None:
        """End the last round (all vCPUs parked: the VM is halted for good), start the next."""
        r = self.round
        if self.vm.has_irqchip and all(lp.round == r and lp.parked for lp in self.loops):
            if self.boot_kind == "linux":
                self.request_stop(Outcome(STOP, stop_reason="power off: the guest halted with interrupts disabled"))
            else:
                self.request_stop(Outcome(STOP, stop_reason="halted forever: HLT with interrupts disabled",
                                          problem=True))
            return
        self.round = r + 1
        self._kick_all()

    def _join(self) -> None:
        for loop in self.loops:
            while loop.thread is not None and loop.thread.is_alive():
                loop.vcpu.kick()
                loop.thread.join(0.05)

    # -- what the loops call back ---------------------------------------------------------
    def trace_exit(self, vcpu, ex, ns: int) -> None:
        """--trace: one record per exit in the shared event format (trapvisor/events.py)."""
        if type(ex) is IoExit:
            detail = exits.io_detail(ex)
        elif type(ex) is MmioExit:
            detail = {"address": ex.address, "size": ex.size, "direction": "write" if ex.is_write else "read"}
        else:
            detail = {}
        if len(self.vcpus) > 1:
            detail["vcpu"] = vcpu.index
        ev = Event("kvm", EXIT, ex.reason, guest_eip=vcpu.get_regs().rip, detail=detail, duration_ns=ns)
        with self.lock:
            log = self.events
            if log.keep and len(log.events) < log.limit:
                log.events.append(ev)
            if log.trace_file is not None:
                log.trace_file.write(ev.to_json() + "\n")

    def recover(self, vcpu, ex) -> bool:
        """Software KVM only: run the one-byte instructions its emulator cannot, as the SDM says.

        INT3 raises #BP, a trap: the saved RIP follows the instruction (Intel SDM Vol. 3A
        6.5, Table 6-1).  FWAIT raises #MF if the x87 has an unmasked exception pending
        (FSW.ES, SDM Vol. 1 8.6 and Vol. 2A WAIT/FWAIT), and is otherwise a no-op.
        """
        if (self.host.hardware_assisted or type(ex) is not InternalErrorExit
                or ex.suberror != ioctls.KVM_INTERNAL_ERROR_EMULATION):
            return False
        op = ex.insn_bytes[:1]
        if op == b"\xcc" and self.on_debug is not None and self.on_debug(vcpu, ex):
            return True          # a host debugger's INT3 (trapvisor/debug): the machine pauses for it
        if op == b"\xcc":
            self._advance(vcpu, 1)
            vcpu.inject_exception(BP_VECTOR)
            self.recovered["int3 delivered as #BP"] += 1
        elif op == b"\x9b":
            if vcpu.get_fpu().fsw & FSW_ES:
                vcpu.inject_exception(MF_VECTOR)
            else:
                self._advance(vcpu, 1)
            self.recovered["fwait run by trapvisor"] += 1
        else:
            return False
        return True

    @staticmethod
    def _advance(vcpu, n: int) -> None:
        regs = vcpu.get_regs()
        regs.rip += n
        vcpu.set_regs(regs)

    def stop_on_ioctl_failure(self, vcpu, rc: int) -> None:
        self.request_stop(Outcome(STOP, stop_reason=f"KVM_RUN failed: {os.strerror(-rc)}", problem=True,
                                  detail={"lines": self._who(vcpu) + register_dump(vcpu)}))

    def stop_on_fault(self, vcpu, ex, outcome: Outcome) -> None:
        detail: list[str] = self._who(vcpu)
        reason = outcome.stop_reason
        if type(ex) is InternalErrorExit and ex.suberror == ioctls.KVM_INTERNAL_ERROR_EMULATION:
            line, more = explain_emulation_failure(vcpu, self.memory, self.host, ex.insn_bytes)
            reason = line
            detail.extend(more)
            detail.append(f"KVM reported: {outcome.stop_reason}")
        if outcome.problem:
            detail.extend(register_dump(vcpu))
        self.request_stop(Outcome(STOP, stop_reason=reason, problem=outcome.problem, detail={"lines": detail}))

    def _who(self, vcpu) -> list[str]:
        return [f"on vCPU {vcpu.index} of {len(self.vcpus)}"] if len(self.vcpus) > 1 else []

    def _fold_accounting(self) -> None:
        """Move the loops' counters into the EventLog (counts and ns by (kind, reason))."""
        log = self.events
        for loop in self.loops:
            for reason, n in loop.counts.items():
                log.counts[(EXIT, reason)] += n
                log.duration_ns[(EXIT, reason)] += loop.durations[reason]
                self.exit_count += n
                self.handler_ns += loop.durations[reason]
            for (port, is_write), n in loop.ports.items():
                self.io_ports[(port, "out" if is_write else "in")] += n
            if loop.injected:
                log.counts[(INJECT, "KVM_INTERRUPT")] += loop.injected
            self.guest_ns += loop.guest_ns
            loop.counts, loop.durations, loop.ports, loop.injected, loop.guest_ns = {}, {}, {}, 0, 0

    # -- the end ----------------------------------------------------------------------
    def _result(self, seconds: float, interrupted: bool) -> RunResult:
        stop = self.stop or Outcome(STOP, stop_reason="stopped")
        lines = list(stop.detail.get("lines", []))
        res = RunResult(self.exit_code, stop.stop_reason, lines[0] if lines else "", problem=stop.problem,
                        seconds=seconds, interrupted=interrupted, dump=lines, events=self.events,
                        output=bytes(self.output), backend=self.host)
        res.summary = self.summary(res)
        return res

    def summary(self, res: RunResult) -> list[str]:
        what = (f"exit code {res.exit_code}" if res.exit_code is not None
                else "guest stopped (see above)" if res.problem else res.stop_reason)
        chip = ("in-kernel irqchip and PIT (KVM_CREATE_IRQCHIP, KVM_CREATE_PIT2), left in the firmware's state"
                if self.vm.has_irqchip else "userspace PIC/PIT/APIC models (no in-kernel irqchip)")
        vcpus = f"{len(self.vcpus)} vCPUs (APIC IDs {', '.join(str(v.index) for v in self.vcpus)}); " \
            if len(self.vcpus) > 1 else ""
        lines = [
            f"trapvisor: {what}; {vcpus}{self.exit_count:,} VM exits in {res.seconds:.2f} s "
            f"(in KVM_RUN {self.guest_ns / 1e9:.2f} s, handling exits {self.handler_ns / 1e9:.3f} s)",
            f"trapvisor: {self.host.label}: {self.host.reason}",
            f"trapvisor: devices: {chip}; the rest are trapvisor's own models",
        ]
        m = self.cpuid_model
        lines.append("trapvisor: CPUID: " + (f"the {m.name} model ({m.vendor}, family {m.family} model {m.model} "
                                              f"stepping {m.stepping}) within what KVM supports" if m is not None
                                              else "the host's (--cpu host)")
                     + f"; topology {self.topology.sockets} socket(s) x {self.topology.cores} core(s) x "
                       f"{self.topology.threads} thread(s)")
        if self.cpuid_hidden:
            lines.append("trapvisor: CPUID features hidden from the guest (software KVM cannot run them): "
                         + " ".join(self.cpuid_hidden))
        if self.cpuid_irqchip_hidden:
            lines.append("trapvisor: CPUID features hidden from the guest (the userspace APIC does not emulate "
                         "them): " + " ".join(self.cpuid_irqchip_hidden))
        for what_, n in self.recovered.items():
            lines.append(f"trapvisor: software-KVM workaround: {what_} ({n:,} times)")
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


# -- signals -----------------------------------------------------------------------------
def _terminate(signum, frame):
    # SIGTERM/SIGHUP end the run like Ctrl-C, so the terminal and the fds are restored.
    raise KeyboardInterrupt


def _install_signals():
    """A handler for the kick signal (it only has to interrupt KVM_RUN; it stays installed)
    and SIGTERM/SIGHUP as Ctrl-C.

    Only the main thread may install handlers.  The kick's is normally in place
    from the import of vcpu.py; where it is not, a kick still sets
    immediate_exit but cannot interrupt a KVM_RUN in progress.
    """
    install_kick_handler()
    if threading.current_thread() is not threading.main_thread():
        return None
    old = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        old[sig] = signal.signal(sig, _terminate)
    return old


def _restore_signals(old) -> None:
    if old is None:
        return
    for sig, handler in old.items():
        signal.signal(sig, handler)


# -- the one-call API --------------------------------------------------------------------
def run_kvm(kernel_path, *, memory_bytes: int, cmdline: str = "", modules=(), initrd=None, disk=None,
            max_seconds: float | None = None, stop_after_output: str | None = None, trace_file=None,
            serial_out=None, serial_in=None, irqchip: bool = True, linux_entry: str = "auto",
            keep_events: bool = False, escape_char: bool = False, on_start=None, smp: int = 1,
            cpu: str = "model") -> RunResult:
    """Boot ``kernel_path`` (Multiboot or bzImage, or guest:NAME) under KVM and run it to the end.

    ``serial_out`` (a callable taking bytes; None discards) takes the console
    output, ``serial_in`` (a callable returning the bytes available now)
    gives its input; ``escape_char``: Ctrl-A x in the input quits.
    ``on_start()`` is called once the kernel is loaded, just before the vCPU
    first runs (the command line puts the terminal in raw mode there).
    ``trace_file`` is a path or an open text file.  ``smp``: the number of
    vCPUs; ``cpu``: ``model`` (the shared CPU model) or ``host`` (the host's
    CPUID, as QEMU's ``-cpu host``).  Raises UserError for anything the user
    can fix; guest faults are in the result.
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
                             stop_after_output=stop_after_output, escape_char=escape_char, smp=smp, cpu=cpu)
        machine.load(kernel, cmdline=cmdline, modules=modules, initrd=initrd, linux_entry=linux_entry)
        if on_start is not None:
            on_start()
        return machine.run(max_seconds=max_seconds)
    finally:
        if machine is not None:
            machine.close()
        if own_trace:
            trace.close()
