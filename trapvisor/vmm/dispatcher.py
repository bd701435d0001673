"""The dispatcher: Popek and Goldberg's D, the switch on every exit of a guest.

Each time the CPU leaves guest code (``CPU.run`` returns a typed exit,
``machine/cpu/exits.py``), the technique hands the exit to its dispatcher,
which calls the one arm registered for that exit type and counts it.  An arm
returns None to let the guest go on, or a ``MachineStop`` to end the VM.  An
exit type with no arm is a bug of the technique (it set an intercept control
it does not handle): the VM is stopped with a diagnostic, never the host.

This is ``handle_kvm_exit`` of Firecracker and the exit handler table of a VT-x
monitor (one handler per basic exit reason), and it is unit-tested the same
way, with synthetic exits (tests/vmm/test_dispatcher.py).
"""

from __future__ import annotations

from collections import Counter

from ..machine.cpu import MachineStop
from ..machine.cpu.exits import DebugExit


class DebugStop(MachineStop):
    """A host debugger's control fired (``DebugExit``): the technique's run loop ends
    as for any stop, and the debugger (trapvisor/debug) takes it and resumes the
    VM later.  Every technique with a dispatcher gets this without an arm of its own."""

    def __init__(self, exit: DebugExit):
        super().__init__("debug", exit.kind)
        self.exit = exit


class Dispatcher:
    """The exit switch of one technique: ``{exit type: arm}``, each exit counted."""

    def __init__(self, arms: dict):
        self.arms = dict(arms)
        self.counts: Counter = Counter()     # exits by reason

    def dispatch(self, exit):
        """Route one exit; None to resume the guest, or a MachineStop."""
        arm = self.arms.get(exit.__class__)
        self.counts[exit.reason] += 1
        if arm is None:
            if exit.__class__ is DebugExit:
                return DebugStop(exit)
            return MachineStop("monitor error", f"unhandled exit {exit!r}: the technique set an "
                                                f"intercept control it has no arm for")
        return arm(exit)

    def statistics(self) -> dict[str, int]:
        return dict(self.counts.most_common())
