"""VMX: root and non-root operation on the simulated CPU (SDM Vol. 3C ch. 23-30).

A CPU built with ``vmx="early"`` or ``vmx="late"`` (``CPU(..., vmx=...)``)
has one :class:`Vmx`, holding what the processor keeps of VMX operation:
whether it is in VMX operation (VMXON, §23.7) and in root or non-root
operation, the VMXON pointer, the current-VMCS pointer and the VMCSs it has
cached (§24.1, §24.11), and the capability profile (``capabilities.py``).

* ``instructions.py``: VMXON ... VMCALL, INVEPT, INVVPID, with their
  VMsucceed/VMfail conventions and VM-instruction error numbers (ch. 30);
* ``entry.py``: VM entry -- the checks of ch. 26 on controls, host and guest
  state, loading the guest state, event injection -- and the mapping of the
  VMCS execution controls onto the CPU's intercept controls;
* ``exit.py``: VM exit (ch. 27) -- which CPU exits are VM exits, the exit
  information fields, saving guest state, loading host state;
* ``ept.py``: EPT (ch. 28); VPID and EPTP tag the CPU's TLB (§28.3): each
  (VPID, EPTP) keeps a TLB of its own, which entry and exit switch between
  instead of flushing.

The CPU's ``run`` goes through :meth:`Vmx.run`: in non-root operation a typed
exit (``exits.py``) that the VMCS asks for becomes a VM exit.  After it the
processor is in root operation with the host state loaded; a VM entered from
the host side by a monitor in Python (:class:`VmxHost`) gets the VM exit back
as a :class:`~..exits.VmExit`, and a VM entered by VMLAUNCH in the simulated
machine's own code goes on running that code at HOST_RIP.
"""

from __future__ import annotations

from . import capabilities as C
from .vmcs import Vmcs


class VmxFailure(Exception):
    """A VMX instruction issued from the host side (:class:`VmxHost`) failed:
    ``error`` is the VM-instruction error number, None for VMfailInvalid."""

    def __init__(self, what: str, error: int | None):
        super().__init__(f"{what}: VMfail{'Invalid' if error is None else f'Valid({error})'}")
        self.what, self.error = what, error


class VmEntered:
    """Set as ``cpu.stop`` by VMLAUNCH/VMRESUME in the machine's own code: the run
    loop returns and :meth:`Vmx.run` starts it again in the new mode."""

    __slots__ = ()
    reason = "vm entry"


class Vmx:
    def __init__(self, cpu, profile_name: str):
        self.cpu = cpu
        self.profile = C.profile(profile_name)
        # IA32_FEATURE_CONTROL as firmware leaves it: locked, VMX outside SMX enabled (§23.7).
        self.feature_control = C.FEATURE_CONTROL_LOCK | C.FEATURE_CONTROL_VMX_OUTSIDE_SMX
        self.vmxon = False
        self.vmxon_ptr = None
        self.current: Vmcs | None = None
        self.cached: dict[int, Vmcs] = {}
        self.nonroot = False
        self.monitor_driven = False     # the VM was entered from Python (VmxHost)
        self.root_intercepts = None     # the root's intercept controls while the guest runs
        self.tlbs: dict = {}            # (vpid, eptp) -> (tlb dicts, global set)
        self.tlb_tag = 0
        self.entries = self.exits = 0
        self.ept_walks = 0              # guest-physical translations walked (ept.py)
        self.exit_counts: dict[int, int] = {}

    # -- MSRs (ops_msr.read_msr/write_msr) ----------------------------------------
    def read_msr(self, n: int):
        if n == C.IA32_FEATURE_CONTROL:
            return self.feature_control
        from ..constants import CR4_SUPPORTED
        return C.read_capability_msr(self.profile, n, CR4_SUPPORTED)

    def write_msr(self, n: int, v: int) -> bool:
        """WRMSR to a VMX MSR: IA32_FEATURE_CONTROL while unlocked; the capability
        MSRs are read-only (#GP(0))."""
        from ..constants import GP
        from ..cpu import CpuFault
        if n == C.IA32_FEATURE_CONTROL:
            if self.feature_control & C.FEATURE_CONTROL_LOCK:
                raise CpuFault(GP, 0)
            self.feature_control = v & 0xFFFFFFFF
            return True
        if C.IA32_VMX_BASIC <= n <= C.IA32_VMX_TRUE_ENTRY_CTLS:
            raise CpuFault(GP, 0)
        return False

    # -- TLB tagging (§28.3.1) ------------------------------------------------------------
    def switch_tlb(self, tag, keep: bool) -> None:
        """Make ``tag``'s TLB the CPU's.  ``keep`` False: the mappings of both the
        old and the new tag are dropped (VM entry/exit without VPID, §28.3.3.1)."""
        cpu = self.cpu
        if keep:
            self.tlbs[self.tlb_tag] = (cpu._tlb, cpu.tlb_global)
            cpu._tlb, cpu.tlb_global = self.tlbs.pop(tag, None) or (({}, {}, {}, {}), set())
        else:
            self.tlbs.pop(tag, None)
            cpu._tlb, cpu.tlb_global = ({}, {}, {}, {}), set()
        self.tlb_tag = tag
        cpu.set_cpl(cpu.cpl)         # tlb_r/tlb_w of the current privilege

    def invalidate(self, pred) -> None:
        """Drop the TLBs whose tag satisfies ``pred`` (INVEPT, INVVPID)."""
        for tag in [t for t in self.tlbs if pred(t)]:
            del self.tlbs[tag]
        if pred(self.tlb_tag):
            cpu = self.cpu
            cpu._tlb, cpu.tlb_global = ({}, {}, {}, {}), set()
            cpu.set_cpl(cpu.cpl)

    # -- running (CPU.run) ------------------------------------------------------------------
    def run(self, max_instructions):
        from .exit import vm_exit_for
        cpu = self.cpu
        limit = None if max_instructions is None else cpu.steps() + max_instructions
        while True:
            budget = None if limit is None else limit - cpu.steps()
            if budget is not None and budget <= 0 and not self.nonroot:
                from ..exits import BudgetExhausted
                return BudgetExhausted()
            exit = cpu._run(budget)
            if exit.__class__ is VmEntered:
                continue
            if not self.nonroot:
                return exit
            vmexit = vm_exit_for(self, exit)
            if vmexit is None:
                return exit           # not a VM exit (the monitor's budget, a machine stop)
            if self.monitor_driven:
                return vmexit
            # Host code of the simulated machine goes on at HOST_RIP.


class VmxHost:
    """The VMX instructions issued from the host side, by a monitor written in
    Python: each does what the instruction does at CPL 0 in VMX root operation,
    and raises :class:`VmxFailure` where the instruction would VMfail.  The VM
    entered by :meth:`launch`/:meth:`resume` runs under ``cpu.run`` and comes
    back as a ``VmExit``."""

    def __init__(self, cpu):
        if cpu.vmx is None:
            raise ValueError("this CPU has no VMX (build it with vmx='early' or 'late')")
        self.cpu, self.vmx = cpu, cpu.vmx

    def _do(self, what, status):
        if status is not None:
            raise VmxFailure(what, status[1] if status[0] == "valid" else None)

    def vmxon(self, region: int) -> None:
        from . import instructions as I
        self._do("VMXON", I.vmxon(self.cpu, region))

    def vmxoff(self) -> None:
        from . import instructions as I
        self._do("VMXOFF", I.vmxoff(self.cpu))

    def vmclear(self, region: int) -> None:
        from . import instructions as I
        self._do("VMCLEAR", I.vmclear(self.cpu, region))

    def vmptrld(self, region: int) -> None:
        from . import instructions as I
        self._do("VMPTRLD", I.vmptrld(self.cpu, region))

    def vmptrst(self) -> int:
        return 0xFFFFFFFFFFFFFFFF if self.vmx.current is None else self.vmx.current.address

    def vmread(self, field) -> int:
        from . import instructions as I
        from .vmcs import ENCODING
        enc = ENCODING[field] if isinstance(field, str) else field
        value, status = I.vmread(self.cpu, enc)
        self._do(f"VMREAD {field}", status)
        return value

    def vmwrite(self, field, value: int) -> None:
        from . import instructions as I
        from .vmcs import ENCODING
        enc = ENCODING[field] if isinstance(field, str) else field
        self._do(f"VMWRITE {field}", I.vmwrite(self.cpu, enc, value))

    def launch(self):
        """VMLAUNCH; returns None with the guest entered, or the VmExit of a VM-entry
        failure (invalid guest state, §26.8).  Raises VmxFailure on VMfail."""
        return self._enter(True)

    def resume(self):
        return self._enter(False)

    def _enter(self, launch):
        from . import instructions as I
        self.vmx.monitor_driven = True
        status, failure = I.vm_entry_instruction(self.cpu, launch)
        self._do("VMLAUNCH" if launch else "VMRESUME", status)
        return failure

    def host_interrupt(self):
        """An interrupt of the host's own arrives while the guest runs: with
        external-interrupt exiting, a VM exit with reason 1 (§25.2); without
        "acknowledge interrupt on exit" the interruption information is not
        valid and the interrupt stays with the host's controller (§27.2.2).
        This is how a monitor whose time slice ends takes the processor back
        (the host timer of a real VT-x monitor).  Returns the VmExit, or None
        if the processor is not in non-root operation."""
        from ..exits import ExceptionExit
        from .exit import vm_exit_for
        vmx = self.vmx
        if not vmx.nonroot:
            return None
        if not vmx.controls[0] & 1:
            raise ValueError("host_interrupt needs external-interrupt exiting")
        vmexit = vm_exit_for(vmx, ExceptionExit(0, None, "external"))
        vmx.current["VM_EXIT_INTR_INFO"] = 0
        return vmexit

    def invept(self, kind: int, eptp: int = 0) -> None:
        from . import instructions as I
        self._do("INVEPT", I.invept(self.cpu, kind, eptp))

    def invvpid(self, kind: int, vpid: int = 0, linear: int = 0) -> None:
        from . import instructions as I
        self._do("INVVPID", I.invvpid(self.cpu, kind, vpid, linear))
