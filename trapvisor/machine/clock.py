"""Guest-visible time and device timers.

Devices that keep time (PIT, RTC, local APIC timer, UART transmit pacing) ask
a clock for ``now_ns()`` and arm one-shot callbacks with ``add_timer``.  The
clock decides what a nanosecond of guest time is:

* :class:`VirtualClock` (the simulated PC): guest time is a function of the
  number of instructions executed, ``ns_per_instruction`` each, like QEMU's
  ``-icount``.  Runs are therefore deterministic and independent of how fast
  Python is; an idle CPU (HLT) jumps straight to the next timer deadline.
* :class:`HostClock` (KVM): guest time is host monotonic time.

Timer callbacks run on the thread that calls :meth:`run_due`, never
asynchronously, so devices need no locks.
"""

from __future__ import annotations

import heapq
import itertools
import time


class Timer:
    __slots__ = ("deadline", "callback", "cancelled")

    def __init__(self, deadline: int, callback):
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False


class Clock:
    """Base: a heap of one-shot timers over some notion of now."""

    NEVER = 1 << 62

    def __init__(self) -> None:
        self._heap: list = []
        self._seq = itertools.count()
        # Called when a new timer becomes the earliest: whoever runs the CPU in
        # budgets up to the next deadline must cut the current budget short.
        self.on_earlier_deadline = None

    def now_ns(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def add_timer(self, deadline_ns: int, callback) -> Timer:
        t = Timer(deadline_ns, callback)
        earlier = deadline_ns < self.next_deadline()
        heapq.heappush(self._heap, (deadline_ns, next(self._seq), t))
        if earlier and self.on_earlier_deadline is not None:
            self.on_earlier_deadline()
        return t

    def cancel(self, timer: Timer | None) -> None:
        if timer is not None:
            timer.cancelled = True

    def next_deadline(self) -> int:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        return heap[0][0] if heap else self.NEVER

    def run_due(self) -> int:
        """Fire every timer whose deadline has passed; return how many fired."""
        fired = 0
        heap = self._heap
        now = self.now_ns()
        while heap and heap[0][0] <= now:
            _, _, t = heapq.heappop(heap)
            if not t.cancelled:
                t.cancelled = True
                t.callback()
                fired += 1
        return fired


class VirtualClock(Clock):
    """Guest time = instructions executed x ns_per_instruction + idle time skipped."""

    def __init__(self, ns_per_instruction: int = 10, counter=None):
        super().__init__()
        self.ns_per_instruction = ns_per_instruction
        self.counter = counter or (lambda: 0)
        self.idle_ns = 0

    def now_ns(self) -> int:
        return self.counter() * self.ns_per_instruction + self.idle_ns

    def instructions_until(self, deadline_ns: int) -> int:
        """How many instructions may run before ``deadline_ns`` is reached (>= 1)."""
        return max(1, -(-(deadline_ns - self.now_ns()) // self.ns_per_instruction))

    def skip_to_next_deadline(self) -> bool:
        """Idle the CPU until the next timer; False if no timer is armed."""
        deadline = self.next_deadline()
        if deadline >= self.NEVER:
            return False
        now = self.now_ns()
        if deadline > now:
            self.idle_ns += deadline - now
        return True


class HostClock(Clock):
    """Guest time = host monotonic time since the clock was made."""

    def __init__(self) -> None:
        super().__init__()
        self._t0 = time.monotonic_ns()

    def now_ns(self) -> int:
        return time.monotonic_ns() - self._t0
