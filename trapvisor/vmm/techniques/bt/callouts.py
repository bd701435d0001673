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

A near RET, the most frequent callout by far (every guest function returns
through one: a return address on the guest's stack is a guest EIP, which
no host RET could go to), is performed in place when nothing about it needs
the virtual CPU: the return address is read through the guest's own stack
segment and the host's shadow mappings, ESP adjusted, and the host goes on
at the translation of the return address.  Anything unusual (a fault on the
read, a stack at the window, a 16-bit stack, single-stepping, debug
breakpoints, a return past the CS limit) takes the general path, where the
virtual CPU executes the RET with every check.
"""

from __future__ import annotations

from ....events import TRAP
from ....machine.cpu.cpu import CpuFault
from ...interpreter import push
from ....machine.cpu.constants import CS, SS, TF
from .translator import Untranslatable

ESP = 4


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
    if c.reason == "ret" and _near_ret(bt, c):
        return None
    bt._leave_cache()
    bt.pull_guest()
    bt.interpret_callout(c)
    bt.inject_pending()
    push(vcpu, host)
    if vcpu.inhibit_irq:
        bt.shadow_at = host.icount
    return None


def _near_ret(bt, c) -> bool:
    """RET / RET imm16 without leaving the cache; False to take the general path."""
    host, vcpu = bt.host, bt.vm.vcpu
    if not host.ss32 or host.attr[SS] & 0x1C == 0x14 or vcpu.eflags_rest & TF or vcpu.bp_exec \
            or vcpu.bp_data or host.bp_data:
        return False
    raw = c.unit.rows and next((r.guest_bytes for r in c.unit.rows if r.host == c.at), None)
    if not raw or raw[0] not in (0xC3, 0xC2):
        return False
    pop = 4 + (int.from_bytes(raw[1:3], "little") if raw[0] == 0xC2 else 0)
    esp = host.regs[ESP]
    if esp + 3 > host.limit[SS]:
        return False
    try:
        target = host.lin_read((host.base[SS] + esp) & 0xFFFFFFFF, 4)
    except CpuFault:
        return False
    if target > vcpu.limit[CS]:
        return False
    try:
        to = bt._entry(target)[1]
    except (CpuFault, Untranslatable):
        return False
    host.regs[ESP] = (esp + pop) & 0xFFFFFFFF
    vcpu.icount += 1              # the guest's RET, executed by the monitor
    vcpu.inhibit_irq = False      # it ends any interrupt shadow an STI opened
    host.eip = to
    bt.interpreted_count += 1
    bt.charge(TRAP, "bt in-place ret", bt.costs.bt_indirect, c.guest)
    return True
