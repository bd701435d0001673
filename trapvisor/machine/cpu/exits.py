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
class MmioExit(Exit):
    """An access to a physical address beyond RAM under ``mmio_exiting``, as KVM's
    KVM_EXIT_MMIO (and VT-x's EPT violation on an unbacked guest-physical page, SDM
    Vol. 3C §28.2.3.2): ``value`` for a write.  The instruction is not executed (its
    checks and translations came first); the monitor performs the access on its
    device model and completes the instruction."""

    address: int
    size: int
    write: bool
    value: int | None = None
    reason = "mmio"


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
    source: int | None = None      # LMSW: its 16-bit operand (Table 27-3, "LMSW source data")
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
    """A sensitive instruction of a class the monitor intercepts
    (``intercepts.sensitive_exiting``; no VMX analogue: the x86 holes that binary
    translation and paravirtualization close).  ``name`` is the class
    (``audit.SENSITIVE``), ``mnemonic`` the instruction, lower case; it is not
    executed, EIP stays at it."""

    mnemonic: str
    length: int = 1
    name: str = ""
    reason = "sensitive"


@dataclass(slots=True)
class InstructionExit(Exit):
    """An instruction its exiting control intercepts: INVLPG (reason 14, ``operand``
    the linear address), RDTSC (16), CPUID (10), RDMSR and WRMSR (31, 32,
    ``operand`` ECX), and the VMX instructions (18-27, 50, 53) in VMX non-root
    operation (SDM Vol. 3C §25.1.2, §25.1.3).  ``mnemonic`` is lower case."""

    mnemonic: str
    length: int = 1
    operand: int | None = None     # INVLPG: the linear address; RDMSR/WRMSR: ECX; VMX: displacement
    info: int = 0                  # VMX instructions: the instruction-information field (Table 27-13/14)
    reason = "instruction"


@dataclass(slots=True)
class CodeFenceExit(Exit):
    """Code was about to be fetched where the code fence forbids it (``intercepts.
    code_fence``): how a binary translator keeps untranslated guest code from
    running directly.  EIP is the address of the fetch."""

    eip: int
    reason = "code fence"


@dataclass(slots=True)
class DebugRegisterExit(Exit):
    """MOV to or from DRn under MOV-DR exiting (reason 29; Table 27-4): ``gpr`` the
    general register, 0-7."""

    dr: int
    write: bool
    gpr: int
    length: int = 3
    reason = "mov dr"


@dataclass(slots=True)
class TaskSwitchExit(Exit):
    """A task switch under task-switch exiting (reason 9, unconditional in VMX non-root
    operation, SDM Vol. 3C §25.1.2; qualification Table 27-2).  ``source`` is "call",
    "jmp", "iret" or "int" (through a task gate of the IDT: ``vector``, ``error_code``
    and ``kind`` then say which event, which was not delivered)."""

    selector: int
    source: str
    vector: int | None = None
    error_code: int | None = None
    kind: str | None = None
    reason = "task switch"


@dataclass(slots=True)
class InterruptWindowExit(Exit):
    """Interrupt-window exiting: at an instruction boundary with EFLAGS.IF = 1 and no
    blocking by STI or MOV SS (reason 7, SDM Vol. 3C §25.2).  Taken between blocks,
    where the bare CPU would deliver a pending interrupt."""

    reason = "interrupt window"


@dataclass(slots=True)
class PreemptionTimerExit(Exit):
    """The preemption-timer deadline (``intercepts.preemption_deadline``, in steps)
    was reached (reason 52, SDM Vol. 3C §25.5.1)."""

    reason = "preemption timer"


@dataclass(slots=True)
class EptViolationExit(Exit):
    """A guest-physical access the EPT paging structures do not allow (reason 48,
    SDM Vol. 3C §28.2.3.2; qualification per Table 27-7).  ``linear`` is None for
    an access with no linear address.  The instruction is not executed."""

    gpa: int
    qualification: int
    linear: int | None = None
    reason = "ept violation"


@dataclass(slots=True)
class EptMisconfigExit(Exit):
    """An EPT paging-structure entry that is misconfigured (reason 49, SDM Vol. 3C
    §28.2.3.1)."""

    gpa: int
    reason = "ept misconfiguration"


@dataclass(slots=True)
class VmExit(Exit):
    """A VM exit (SDM Vol. 3C ch. 27), as a monitor that entered the VM from the
    host side sees it: the processor is back in VMX root operation, the exit
    information is in the current VMCS.  ``name`` is the SDM's basic exit reason
    (``EXIT_REASON_*``, Appendix C); the dispatcher counts exits by it."""

    basic: int
    name: str
    entry_failure: bool = False

    @property
    def reason(self) -> str:
        return self.name


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
