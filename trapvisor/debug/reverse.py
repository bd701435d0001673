"""Reverse execution on the simulated machine: checkpoints, and going back by re-running.

The simulated PC is deterministic: its clock counts instructions, RDTSC and
the RTC follow that clock, interrupts come from devices on it, and the only
input from outside (serial input) is replayed from a recording
(``replay.py``).  So the machine's past can be reached again by restoring an
earlier state and running forward.  :class:`History` keeps in-memory
checkpoints (``snapshot.capture``) taken every :data:`CHECKPOINT_EVERY` steps
while gdb runs the guest, and implements

* ``reverse-stepi`` (gdb's ``bs`` packet): back to the previous instruction
  boundary: restore the last checkpoint before it, run to just before it,
  step by step;
* ``reverse-continue`` (``bc``): back to the last breakpoint or watchpoint
  hit before the current position: from the checkpoints backwards, run each
  interval forward with the debugger's controls, note the hits, and go to the
  last one (a watchpoint's: just before the instruction that made the access,
  so gdb sees the value change backwards); with none, to the start of the
  history (gdb's ``replaylog:begin``).  gdb builds ``reverse-step``, ``reverse-next`` and
  ``reverse-finish`` out of these two.

Positions are the machine's steps (instructions plus delivered events,
``Monitor.steps``).  Console output emitted again while re-running is
swallowed by an :class:`OutputGate`, so the user sees each byte once.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import snapshot

CHECKPOINT_EVERY = 1_000_000
MAX_CHECKPOINTS = 64           # beyond: every other one is dropped (the first kept), memory bounded
MARGIN = 2_000                 # the last steps before a target are taken one by one


class OutputGate:
    """A serial sink that shows each byte of the machine's one timeline once."""

    SNAPSHOT_WIRING = True        # the user's side of the console: not machine state

    def __init__(self, sink):
        self.sink = sink
        self.shown = 0            # bytes the user has seen
        self.emitted = 0          # bytes the current timeline has emitted

    def __call__(self, data: bytes) -> None:
        new = self.emitted + len(data) - self.shown
        self.emitted += len(data)
        if new > 0:
            self.shown += new
            if self.sink is not None:
                self.sink(bytes(data[-new:]))


@dataclass
class Checkpoint:
    pos: int
    state: object
    emitted: int


class History:
    def __init__(self, target, gate: OutputGate | None):
        self.t = target
        self.gate = gate
        self.checkpoints: list[Checkpoint] = []
        self.take()

    @property
    def pos(self) -> int:
        return self.t.m.steps()

    def take(self) -> None:
        """A checkpoint here (the monitor off its host CPU: the guest's view is current)."""
        if self.checkpoints and self.checkpoints[-1].pos >= self.pos:
            return
        self.checkpoints.append(Checkpoint(self.pos, snapshot.capture(self.t.m),
                                           self.gate.emitted if self.gate else 0))
        if len(self.checkpoints) > MAX_CHECKPOINTS:
            # Thin out: going back further then re-runs a longer interval, in bounded memory.
            cps = self.checkpoints
            self.checkpoints = [cps[0]] + cps[2:-1:2] + [cps[-1]]

    def due(self) -> bool:
        # Spaced as the thinned ones are, so the history's span grows with the run.
        spacing = CHECKPOINT_EVERY
        if len(self.checkpoints) > 2:
            spacing = max(spacing, (self.checkpoints[-1].pos - self.checkpoints[0].pos) // MAX_CHECKPOINTS)
        return self.pos - self.checkpoints[-1].pos >= spacing

    def _restore(self, cp: Checkpoint) -> None:
        snapshot.apply(cp.state, self.t.m)
        if self.gate is not None:
            self.gate.emitted = cp.emitted

    def _before(self, pos: int) -> Checkpoint | None:
        for cp in reversed(self.checkpoints):
            if cp.pos < pos:
                return cp
        return None

    def _step(self) -> None:
        m = self.t.m
        m.enter()
        m.run_slice(m.steps() + 1, self.t.limit)
        m.leave()

    def _forward_to(self, cp: Checkpoint, until: int, steps: int | None) -> tuple[int, int]:
        """Restore ``cp``, run fast to ``until`` - MARGIN, then one step at a time: ``steps``
        of them, or (None) until the position reaches ``until``.  Returns (steps taken, the
        position before the last one)."""
        self._restore(cp)
        m = self.t.m
        fast = until - MARGIN
        if fast > cp.pos:
            m.enter()
            m.run_slice(fast, self.t.limit)
            m.leave()
            if self.pos >= until:               # a long instruction (REP) went past: no fast part
                self._restore(cp)
        n, prev = 0, self.pos
        while (steps is None and self.pos < until) or (steps is not None and n < steps):
            prev = self.pos
            self._step()
            n += 1
        return n, prev

    def reverse_step(self):
        """Back to the last instruction boundary before here; False at the start of history."""
        here = self.pos
        cp = self._before(here)
        if cp is None:
            return False
        n, prev = self._forward_to(cp, here, None)
        self._forward_to(cp, here, n - 1)
        return True

    def reverse_continue(self, interrupted):
        """Back to the last debugger stop (breakpoint, watchpoint) before here.  Returns the
        Stop, or None when there is none (the machine is then at the start of its history)."""
        here = self.pos
        for cp in reversed([c for c in self.checkpoints if c.pos < here]):
            hits = self._hits(cp, here)
            if hits:
                stop = self._to_hit(cp, len(hits))
                if stop.kind == "watchpoint":
                    # Backwards, an access is met before it happens: at the instruction that
                    # makes it, the old value still in memory (as rr reports it to gdb).
                    self.reverse_step()
                return stop
            if interrupted():
                break
        self._restore(self.checkpoints[0])
        return None

    def _hits(self, cp: Checkpoint, here: int) -> list:
        """The debugger stops between ``cp`` and ``here`` (run forward, armed)."""
        self._restore(cp)
        hits = []
        while True:
            stop = self.t.run_armed(until=here, pass_over=bool(hits))
            if stop is None or self.pos >= here:      # at ``here``: the current stop itself
                break
            hits.append(stop)
        return hits

    def _to_hit(self, cp: Checkpoint, k: int):
        self._restore(cp)
        stop = None
        for i in range(k):
            stop = self.t.run_armed(until=None, pass_over=i > 0)
        return stop
