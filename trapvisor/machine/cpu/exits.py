"""Why the CPU stopped running: one type per exit reason.

``CPU.run(budget)`` returns one of these, the way KVM's ``KVM_RUN`` returns
with ``kvm_run.exit_reason`` set and a VMX processor leaves non-root
operation with a basic exit reason (SDM Vol. 3C §27.2.1, Appendix C).  A
monitor switches on the type; nothing crosses the CPU/monitor boundary as a
Python exception.

Which events exit is decided by the CPU's intercept controls
(``intercepts.py``); with the controls all clear (the bare machine) the CPU
only ever returns :class:`BudgetExhausted`, :class:`GuestExit`,
:class:`Preempted` and :class:`MachineStopped`.

An instruction that exits is not executed: the CPU's state is as it was
before the instruction, EIP points at it, and the exit says what it would
have done (a VMX instruction-caused exit, §27.1).  The one exception is an
exception exit raised while an event was being delivered, which is taken
where it arises (the monitor sees the vector that faulted).
"""

from __future__ import annotations

from dataclasses import dataclass


class Exit:
    """Base of every exit.  ``reason`` is the name used in events and statistics."""

    __slots__ = ()
    reason = "exit"


@dataclass(slots=True)
class BudgetExhausted(Exit):
    """The instruction budget given to ``run`` is spent (or a timer of the
    CPU's own clock came due).  VMX analogue: the preemption timer (reason 52)."""

    reason = "budget"


@dataclass(slots=True)
class Preempted(Exit):
    """The monitor asked the CPU to leave at the next block boundary
    (:meth:`CPU.request_exit`): a VM's timer was rearmed, a time slice must end.
    KVM analogue: ``immediate_exit``/a signal making ``KVM_RUN`` return EINTR."""

    reason = "preempted"


@dataclass(slots=True)
class GuestExit(Exit):
    """The guest wrote its exit code to the debug-exit port (a device of the board)."""

    code: int
    reason = "guest exit"


@dataclass(slots=True)
class MachineStopped(Exit):
    """The machine cannot go on: triple fault, an instruction trapvisor does not
    implement, HLT that nothing can wake, a reset.  VMX analogue: triple fault (2)."""

    stop: object            # the MachineStop
    reason = "stopped"

    @property
    def why(self) -> str:
        return self.stop.reason


@dataclass(slots=True)
class ExceptionExit(Exit):
    """An event the CPU would deliver through the IDT (SDM Vol. 3C §25.2,
    exception bitmap; reason 0 for exceptions and NMI, 1 for external interrupts).

    ``kind`` is "exception" (raised by an instruction), "software" (INT n,
    INT3, INTO: ``instruction_ip`` is the INT instruction, EIP already past it)
    or "external".  For a fault EIP points at the faulting instruction."""

    vector: int
    error_code: int | None
    kind: str = "exception"
    instruction_ip: int | None = None
    reason = "exception"


@dataclass(slots=True)
class HaltExit(Exit):
    """HLT with HLT exiting on (reason 12).  EIP points at the HLT."""

    length: int = 1
    reason = "hlt"


@dataclass(slots=True)
class IoExit(Exit):
    """IN, OUT, INS or OUTS on a port the I/O bitmap intercepts (reason 30; the
    exit qualification of Table 27-5: size, direction, string, REP, port).
    ``value`` is what an OUT would write; EIP points at the instruction."""

    port: int
    size: int
    write: bool
    string: bool = False
    rep: bool = False
    value: int | None = None
    length: int = 1
    reason = "io"


@dataclass(slots=True)
class ControlRegisterExit(Exit):
    """MOV to or from CRn, CLTS, LMSW the controls intercept (reason 28; Table
    27-3).  ``value`` is what a write would store; ``gpr`` the general register
    of a MOV (0-7, EAX..EDI), None for CLTS/LMSW."""

    cr: int
    write: bool
    value: int | None
    gpr: int | None
    mnemonic: str = "mov"
    length: int = 3
    reason = "cr access"


@dataclass(slots=True)
class DescriptorTableExit(Exit):
    """LGDT, LIDT, LLDT, LTR, SGDT, SIDT, SLDT, STR with descriptor-table
    exiting on (reasons 46 and 47)."""

    mnemonic: str
    length: int = 3
    reason = "descriptor table"


@dataclass(slots=True)
class SensitiveExit(Exit):
    """A sensitive instruction of a class the monitor intercepts (no VMX analogue:
    the x86 holes that binary translation and paravirtualization close)."""

    mnemonic: str
    length: int = 1
    reason = "sensitive"


@dataclass(slots=True)
class InstructionExit(Exit):
    """INVLPG under INVLPG exiting (reason 14); RDTSC, CPUID and VMCALL (16, 10,
    18) will use it too."""

    mnemonic: str
    length: int = 1
    operand: int | None = None     # INVLPG: the linear address
    reason = "instruction"


@dataclass(slots=True)
class CodeFenceExit(Exit):
    """Code was about to be fetched where the code fence forbids it (``intercepts.
    code_fence``): how a binary translator keeps untranslated guest code from
    running directly.  EIP is the address of the fetch."""

    eip: int
    reason = "code fence"


@dataclass(slots=True)
class DebugExit(Exit):
    """A host debugger's control fired (``intercepts.debug_*``; trapvisor/debug).

    ``kind`` is "breakpoint" (EIP at the instruction, not executed), "watchpoint"
    (after the instruction that made the access: ``address`` is the linear
    address touched, ``access`` "write", "read" or "access" as the watchpoint
    was set) or "step" (one instruction retired, or one event delivered).  VMX
    analogue for a step: the monitor trap flag exit (reason 37, SDM Vol. 3C
    §25.5.2); breakpoints and watchpoints are KVM_EXIT_DEBUG's."""

    kind: str
    address: int | None = None
    access: str | None = None
    reason = "debug"
