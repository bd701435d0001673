"""Which instructions are privileged or sensitive, and the two checks they share.

Privileged instructions (#GP(0) at CPL > 0, SDM Vol. 3A §5.9): LGDT LIDT LLDT
LTR (``ops_tables.py``), LMSW CLTS MOV CRn/DRn INVLPG INVD WBINVD HLT
(``ops_sysregs.py``), RDMSR WRMSR (``ops_msr.py``).  IOPL-sensitive ones (SDM
Vol. 1 §18.2.1, Vol. 2 CLI/STI/IN/OUT): CLI STI (``ops_eflags.py``), IN OUT
(``ops_io.py``), INS OUTS (``ops_string.py``), the last four also consulting
the TSS I/O permission bitmap (SDM Vol. 1 §18.5.2).  The 17
sensitive-but-unprivileged instructions of Robin and Irvine (2000)
(USENIX Security 2000): SGDT SIDT SLDT STR LAR LSL VERR
VERW (``ops_tables.py``), SMSW (``ops_sysregs.py``), PUSHF POPF
(``ops_eflags.py``), PUSH/POP Sreg, MOV Sreg, far CALL/JMP/RET, INT n
(``ops_far.py``) - they run at any CPL and behave exactly as on a real Intel
CPU, including the silent POPF rule.  With ``cpu.strict`` (the hypothetical
virtualizable x86 of Popek and Goldberg's Theorem 1) each of them raises
#GP(0) when CPL > 0.
"""

from __future__ import annotations

from .constants import GP
from .cpu import CpuFault


def require_cpl0(cpu) -> None:
    if cpu.cpl != 0:
        raise CpuFault(GP, 0)


def strict_trap(cpu) -> None:
    """On the strict (virtualizable) CPU, a sensitive instruction traps outside ring 0."""
    if cpu.strict and cpu.cpl > 0:
        raise CpuFault(GP, 0)
