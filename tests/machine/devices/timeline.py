"""A VirtualClock whose guest time the test sets, and an IRQ recorder."""

from __future__ import annotations

from trapvisor.machine.clock import VirtualClock


class Timeline:
    """Guest time under the test's control; timers fire exactly at their deadlines."""

    def __init__(self, start_ns: int = 0):
        self.ns = start_ns
        self.clock = VirtualClock(1, counter=lambda: self.ns)

    def advance_to(self, t_ns: int) -> None:
        clock = self.clock
        while True:
            d = clock.next_deadline()
            if d > t_ns:
                break
            self.ns = max(self.ns, d)
            clock.run_due()
        self.ns = max(self.ns, t_ns)
        clock.run_due()

    def advance(self, ns: int) -> None:
        self.advance_to(self.ns + ns)


class IrqRecorder:
    """An IrqSink that records (time, irq, level) for every line change."""

    def __init__(self, timeline: Timeline | None = None):
        self.timeline = timeline
        self.events: list[tuple[int, int, bool]] = []
        self.level = [False] * 24

    def set_irq(self, irq: int, level: bool) -> None:
        self.level[irq] = level
        self.events.append((self.timeline.ns if self.timeline else 0, irq, level))

    def rising(self, irq: int) -> list[int]:
        """Times of the rising edges of ``irq``."""
        out, prev = [], False
        for t, i, lv in self.events:
            if i != irq:
                continue
            if lv and not prev:
                out.append(t)
            prev = lv
        return out
