"""Callouts: what the monitor does when translated code exits through a ``ud2``.

VMware's translator calls out of the translation cache into the monitor
for what it does not translate inline (Adams & Agesen, ASPLOS 2006, §3.1).
Here a callout is a ``ud2`` at a known tcache address: the host CPU raises
#UD before executing it (nothing retires), the exception exits to the
monitor (the exception bitmap), and the monitor finds the :class:`~.tcache.
Callout` recorded for that address:

* ``emulate``: the guest instruction is executed on the virtual CPU, with
  the guest's privileges and tables (an interpreter routine, as under
  trap-and-emulate, but without the hardware trap: the translator knew the
  instruction was sensitive).  When the guest goes on with the next
  instruction, the host resumes right after the ``ud2``, in the same unit
  (every guest instruction of a unit is an entry point: ``tcache.entries``);
* ``chain``: a branch to a unit not translated yet: translate it and patch
  the branch, so that it is taken without an exit from then on;
* ``continue``: the end of a unit at its size limit (or before code that
  cannot be fetched yet): go on at the unit for the next guest EIP.
"""

from __future__ import annotations

from ....events import TRAP
from ....machine.cpu.cpu import CpuFault
from ...interpreter import push
from .translator import Untranslatable


def handle(bt, c):
    """Perform callout ``c`` for technique ``bt``; None (the guest goes on) or a MachineStop."""
    host, vcpu, costs = bt.host, bt.vm.vcpu, bt.costs
    if c.kind in ("chain", "continue"):
        bt.callout_counts[c.kind if c.kind == "continue" else "chain (translate target)"] += 1
        try:
            unit, to = bt._entry(c.guest)
        except (CpuFault, Untranslatable):
            # The target cannot be fetched: the guest takes its fault there, as natively.
            bt._leave_cache(guest=c.guest)
            bt.pull_guest()
            bt._interpret_step("fetch at a branch target")
            return None
        if c.kind == "chain":
            bt.translator.link(c, unit, to)
            bt.chains += 1
        host.eip = to
        bt.charge(TRAP, f"bt {c.kind}", costs.bt_chain, c.guest, log=False)
        return None
    bt.callout_counts[c.reason] += 1
    bt._leave_cache()
    bt.pull_guest()
    bt.interpret_callout(c)
    bt.inject_pending()
    push(vcpu, host)
    if vcpu.inhibit_irq:
        bt.shadow_at = host.icount
    return None
