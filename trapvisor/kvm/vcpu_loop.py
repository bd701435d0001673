"""One vCPU's exit loop, on a thread of its own (``--smp N``: one thread per vCPU).

The loop is KVM_RUN, then ``exits.decode_exit``, then ``exits.handle_exit``
against the shared buses, with the reply copied into the run page.  Device
models are not thread-safe, so every device access happens under the
machine's one lock (as QEMU's big lock), which the timer thread also takes
to run device timers.  Everything else is per-vCPU: the run page, the exit
accounting (folded into the machine's event log when the run ends).

A KVM_RUN that returns EINTR was kicked (``vcpu.KvmVcpu.kick``): the loop
clears ``immediate_exit``, then answers whatever was asked (stop, pause, an
interrupt to inject on the userspace irqchip, a housekeeping round in which
it reports whether it is parked: halted with interrupts off, or an AP that
never received its SIPI).

Without an in-kernel irqchip (one vCPU only) the BSP injects the userspace
8259A/APIC's vectors itself with KVM_INTERRUPT when the run page says the
guest can take one, and otherwise asks for an interrupt-window exit (KVM
api.rst 4.16 KVM_INTERRUPT and section 5, ``request_interrupt_window`` and
``ready_for_interrupt_injection``).  It also runs the device timers after
every exit and arms ITIMER_REAL for the next one (setitimer(2)): SIGALRM is
unblocked on the BSP's thread alone, so the kernel's own timer makes KVM_RUN
return when the userspace PIT or APIC timer is due, however busy the host is
(the timer thread, which the host may schedule late, kicks it as well).
"""

from __future__ import annotations

import signal
import threading
import time

from ..events import INJECT, Event
from . import ioctls
from .exits import CONTINUE, DEBUG, STOP, WAIT, IntrExit, IoExit, Outcome, decode_exit, handle_exit

RFLAGS_IF = 0x200
# Signals meant for the whole process go to the main thread, never to a vCPU thread.
_PROCESS_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM}


class VcpuLoop:
    def __init__(self, machine, vcpu, *, bsp: bool):
        self.m = machine
        self.vcpu = vcpu
        self.bsp = bsp
        self.counts: dict = {}
        self.durations: dict = {}
        self.ports: dict = {}
        self.injected = 0
        self.guest_ns = 0
        self.handler_ns = 0
        self.round = -1              # the last housekeeping round this vCPU answered
        self.parked = False          # ... and whether it was parked then
        self.paused = False
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None

    # -- the thread ------------------------------------------------------------------
    def start(self) -> None:
        self.thread = threading.Thread(target=self._main, name=f"vcpu{self.vcpu.index}", daemon=True)
        self.thread.start()

    def _main(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, _PROCESS_SIGNALS)
        if self.bsp and self.m.userspace_timer_signal:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})
        self.run_here()

    def run_here(self) -> None:
        """Run the loop on the calling thread until the machine stops."""
        self.vcpu.bind_thread()
        try:
            self._loop()
        except Exception as e:        # a bug or an ioctl failure: stop every vCPU, say which
            self.m.request_stop(Outcome(STOP, stop_reason=f"vCPU {self.vcpu.index}: {type(e).__name__}: {e}",
                                        problem=True))

    # -- the loop ----------------------------------------------------------------------
    def _loop(self) -> None:
        m, vcpu = self.m, self.vcpu
        page = vcpu.run_page
        io_bus, mmio_bus, lock = m.io_bus, m.mmio_bus, m.lock
        offer = self._offer_interrupt if (self.bsp and not m.vm.has_irqchip) else None
        timers = self._run_timers if (offer is not None and m.userspace_timer_signal) else None
        perf = time.perf_counter_ns
        counts, durations, ports = self.counts, self.durations, self.ports
        tracing = m.events.trace_file is not None or m.events.keep
        while m.stop is None:
            if m.pause_requested:
                self._pause()
                continue
            if offer is not None:
                with lock:
                    offer()
            t0 = perf()
            rc = vcpu.run()
            t1 = perf()
            if rc == 0:
                ex = decode_exit(page, vcpu.exit_reason())
            elif rc in (-ioctls.EINTR, -ioctls.EAGAIN):
                vcpu.set_immediate_exit(False)
                ex = IntrExit()
            else:
                # Not an exit: the ioctl itself failed (e.g. EFAULT on a bad memory slot).
                m.stop_on_ioctl_failure(vcpu, rc)
                break
            with lock:
                outcome = handle_exit(ex, io_bus, mmio_bus)
            if outcome.reply is not None:
                off = ex.data_offset if type(ex) is IoExit else ioctls.RUN_UNION + 8
                page[off:off + len(outcome.reply)] = outcome.reply
            if outcome.action is not CONTINUE:
                if outcome.action == WAIT:
                    self._wait_for_interrupt()
                elif outcome.action == DEBUG and m.on_debug is not None:
                    m.on_debug(vcpu, ex)      # trapvisor/debug: the machine pauses for gdb
                elif not m.recover(vcpu, ex):
                    m.stop_on_fault(vcpu, ex, outcome)
            if timers is not None:
                timers()
            t2 = perf()
            self.guest_ns += t1 - t0
            reason = ex.reason
            counts[reason] = counts.get(reason, 0) + 1
            durations[reason] = durations.get(reason, 0) + (t2 - t1)
            if type(ex) is IoExit:
                key = (ex.port, ex.is_write)
                ports[key] = ports.get(key, 0) + 1
            elif type(ex) is IntrExit and m.round != self.round:
                self._answer_round()
            if tracing:
                m.trace_exit(vcpu, ex, t2 - t1)

    def _answer_round(self) -> None:
        """A housekeeping kick: report whether this vCPU is parked (in-kernel irqchip)."""
        r = self.m.round
        if self.m.vm.has_irqchip:
            state = self.vcpu.mp_state()
            if state in (ioctls.KVM_MP_STATE_UNINITIALIZED, ioctls.KVM_MP_STATE_INIT_RECEIVED):
                self.parked = not self.bsp
            else:
                self.parked = state == ioctls.KVM_MP_STATE_HALTED and not self.vcpu.get_regs().rflags & RFLAGS_IF
        self.round = r

    def _pause(self) -> None:
        m = self.m
        with m.pause_cond:
            self.paused = True
            m.pause_cond.notify_all()
            while m.pause_requested and m.stop is None:
                m.pause_cond.wait(0.5)
            self.paused = False
            m.pause_cond.notify_all()

    # -- interrupts without an in-kernel irqchip --------------------------------------------
    _armed = None

    def _run_timers(self) -> None:
        """Fire the due device timers; arm ITIMER_REAL (SIGALRM, to this thread) for the next."""
        clock = self.m.clock
        with self.m.lock:
            clock.run_due()
            due = clock.next_deadline()
        if due != self._armed and due < clock.NEVER:
            self._armed = due
            signal.setitimer(signal.ITIMER_REAL, max((due - clock.now_ns()) / 1e9, 1e-6))

    def _offer_interrupt(self) -> None:
        """Userspace PIC: inject when the guest can take it, else ask for an interrupt window."""
        intc, vcpu = self.m.devices.interrupts, self.vcpu
        if intc is None or not intc.interrupt_pending():
            vcpu.request_interrupt_window(False)
            return
        if vcpu.ready_for_interrupt_injection():
            vector = intc.acknowledge()
            vcpu.inject_interrupt(vector)
            self.injected += 1
            trace = self.m.events.trace_file
            if trace is not None:
                trace.write(Event("kvm", INJECT, "KVM_INTERRUPT", detail={"vector": vector}).to_json() + "\n")
            vcpu.request_interrupt_window(False)
        else:
            vcpu.request_interrupt_window(True)

    def _wait_for_interrupt(self) -> None:
        """A HLT exit (userspace irqchip): sleep until the timer thread sees an interrupt pending."""
        m = self.m
        intc = m.devices.interrupts
        if not self.vcpu.get_regs().rflags & RFLAGS_IF:
            m.request_stop(Outcome(STOP, stop_reason="halted forever: HLT with interrupts disabled",
                                   problem=m.boot_kind != "linux"))
            return
        while m.stop is None and not m.pause_requested:
            with m.lock:
                if intc is not None and intc.interrupt_pending():
                    return
                armed = m.clock.next_deadline() < m.clock.NEVER
            if not armed:
                m.request_stop(Outcome(STOP, stop_reason="halted forever: HLT and no timer armed", problem=True))
                return
            self.wake.wait(0.05)
            self.wake.clear()
