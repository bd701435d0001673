"""Which guest instructions the translator copies (IDENT) and what it does with the rest.

Adams and Agesen (ASPLOS 2006, §3.1) describe VMware's translator as
*subsetting*: most instructions are translated IDENT (copied unchanged), and
only control flow, PC-relative and privileged or sensitive instructions are
translated into something else.  This module is that classification for
guest code at virtual CPL 0 run at host ring 1 (``translator.py``):

* ``IDENT``: copied byte for byte.  An IDENT instruction that nevertheless
  faults at ring 1 (a privileged instruction this table does not name) is
  still correct: the fault exits to the monitor, which re-executes the
  instruction on the virtual CPU, as trap-and-emulate does;
* ``JCC``, ``JMP``, ``CALL``: direct control flow, rewritten with rel32
  displacements into the translation cache (near, 32-bit operand size only);
* ``CLI``: inline code on the virtual-CPU page (virtual IF := 0);
* ``CALLOUT``: everything else that is sensitive (Robin and Irvine, USENIX
  Security 2000: the 17 sensitive unprivileged instructions; the privileged
  ones of SDM Vol. 3A §2.8 and §5.9), every indirect or far transfer, every
  segment-register access, and every access through CS or GS (the
  monitor's code and data segments while translated code runs).  A callout
  exits to the monitor, which executes the instruction on the virtual CPU.
  ``ends`` says whether the unit stops there (control flow) or goes on.
"""

from __future__ import annotations

import iced_x86 as iced

M = iced.Mnemonic
FC = iced.FlowControl
R = iced.Register

IDENT, JCC, JMP, CALL, CLI, CALLOUT = "ident", "jcc", "jmp", "call", "cli", "callout"

# Sensitive or privileged, and not a control transfer: a callout, after which the
# unit goes on with the next instruction.
_SENSITIVE = {
    # Robin & Irvine's sensitive unprivileged instructions (what PUSHF shows, POPF
    # silently drops, SGDT/SIDT/SLDT/STR/SMSW reveal, LAR/LSL/VERR/VERW read).
    M.PUSHF: "pushf", M.PUSHFD: "pushf", M.POPF: "popf", M.POPFD: "popf",
    M.SGDT: "descriptor table", M.SIDT: "descriptor table", M.SLDT: "descriptor table",
    M.STR: "descriptor table", M.SMSW: "cr access",
    M.LAR: "lar/lsl/verr/verw", M.LSL: "lar/lsl/verr/verw", M.VERR: "lar/lsl/verr/verw",
    M.VERW: "lar/lsl/verr/verw", M.ARPL: "arpl",
    # Segment loads that check or show the privilege level.
    M.LDS: "segment load", M.LES: "segment load", M.LFS: "segment load",
    M.LGS: "segment load", M.LSS: "segment load",
    # Privileged (SDM Vol. 3A §2.8): they would trap at ring 1; calling out is cheaper.
    M.STI: "sti", M.HLT: "hlt", M.LGDT: "descriptor table", M.LIDT: "descriptor table",
    M.LLDT: "descriptor table", M.LTR: "descriptor table", M.LMSW: "cr access",
    M.CLTS: "cr access", M.INVLPG: "invlpg", M.INVD: "cache control", M.WBINVD: "cache control",
    M.RDMSR: "msr", M.WRMSR: "msr", M.RDPMC: "rdpmc", M.RDTSC: "rdtsc", M.RDTSCP: "rdtsc",
    M.CPUID: "cpuid",
    M.IN: "io", M.OUT: "io", M.INSB: "io", M.INSW: "io", M.INSD: "io",
    M.OUTSB: "io", M.OUTSW: "io", M.OUTSD: "io",
    M.MONITOR: "monitor/mwait", M.MWAIT: "monitor/mwait",
}

# Control transfers the translator does not rewrite: a callout that ends the unit.
_TRANSFER = {
    M.IRET: "iret", M.IRETD: "iret", M.INT: "int", M.INT1: "int", M.INT3: "int", M.INTO: "int",
    M.SYSENTER: "sysenter/sysexit", M.SYSEXIT: "sysenter/sysexit",
    M.SYSCALL: "syscall", M.SYSRET: "syscall",
    M.RET: "ret", M.RETF: "far transfer",
    M.LOOP: "loop/jcxz", M.LOOPE: "loop/jcxz", M.LOOPNE: "loop/jcxz",
    M.JCXZ: "loop/jcxz", M.JECXZ: "loop/jcxz",
    M.UD0: "undefined", M.UD1: "undefined", M.UD2: "undefined", M.INVALID: "undefined",
}

SEGMENT_REGISTERS = frozenset({R.ES, R.CS, R.SS, R.DS, R.FS, R.GS})
# While translated code runs, CS is the monitor's execute-only code segment and GS
# its virtual-CPU data segment: a guest access through either must not run IDENT.
MONITOR_SEGMENTS = frozenset({R.CS, R.GS})
_MEMORY_KINDS = frozenset({
    iced.OpKind.MEMORY, iced.OpKind.MEMORY_SEG_SI, iced.OpKind.MEMORY_SEG_ESI,
    iced.OpKind.MEMORY_SEG_DI, iced.OpKind.MEMORY_SEG_EDI,
})


def _is_cr_dr(reg: int) -> bool:
    return R.CR0 <= reg <= R.CR15 or R.DR0 <= reg <= R.DR15 or R.TR0 <= reg <= R.TR7


def classify(ins) -> tuple[str, str, bool]:
    """(kind, reason, ends_unit) for one decoded guest instruction (32-bit code)."""
    mn = ins.mnemonic
    if ins.code == iced.Code.INVALID:
        return CALLOUT, "undefined", True
    reason = _TRANSFER.get(mn)
    if reason is not None:
        return CALLOUT, reason, True
    fc = ins.flow_control
    if fc in (FC.UNCONDITIONAL_BRANCH, FC.CONDITIONAL_BRANCH, FC.CALL):
        if ins.op0_kind != iced.OpKind.NEAR_BRANCH32:
            # Far direct transfers, and 16-bit operand size (EIP truncated to 16 bits).
            return CALLOUT, "far transfer" if ins.op0_kind == iced.OpKind.FAR_BRANCH32 or \
                ins.op0_kind == iced.OpKind.FAR_BRANCH16 else "16-bit branch", True
        if fc == FC.CONDITIONAL_BRANCH:
            return JCC, "", False
        if fc == FC.CALL:
            return CALL, "", False
        return JMP, "", True
    if fc in (FC.INDIRECT_BRANCH, FC.INDIRECT_CALL, FC.RETURN, FC.INTERRUPT, FC.EXCEPTION,
              FC.XBEGIN_XABORT_XEND):
        return CALLOUT, "indirect transfer" if fc in (FC.INDIRECT_BRANCH, FC.INDIRECT_CALL) \
            else "far transfer", True
    if mn == M.CLI:
        return CLI, "", False
    reason = _SENSITIVE.get(mn)
    if reason is not None:
        return CALLOUT, reason, False
    for i in range(ins.op_count):
        kind = ins.op_kind(i)
        if kind == iced.OpKind.REGISTER:
            reg = ins.op_register(i)
            if reg in SEGMENT_REGISTERS:
                # MOV to/from, PUSH/POP of a segment register: the selector's RPL shows
                # the host ring, a load checks privilege (Robin & Irvine).
                return CALLOUT, "segment register", mn == M.POP and reg == R.SS
            if _is_cr_dr(reg):
                return CALLOUT, "cr access" if R.CR0 <= reg <= R.CR15 else "dr access", False
        elif kind in _MEMORY_KINDS:
            if ins.memory_segment in MONITOR_SEGMENTS:
                return CALLOUT, "cs/gs access", False
    if ins.segment_prefix in MONITOR_SEGMENTS and ins.segment_prefix != R.NONE:
        return CALLOUT, "cs/gs access", False
    return IDENT, "", False
