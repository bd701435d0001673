"""Architectural constants of IA-32, named as the Intel SDM names them.

Sources: Intel 64 and IA-32 Architectures Software Developer's Manual (SDM),
Vol. 1 §3.4.3 (EFLAGS), Vol. 3A §2.5 (control registers), §3.4.5 (segment
descriptors), §4.3 (32-bit paging), §6.3/Table 6-1 (exceptions), §6.11
(IDT gate descriptors), §7.2.1 (TSS).
"""

# -- EFLAGS (SDM Vol. 1 §3.4.3, Figure 3-8) -----------------------------------
CF = 1 << 0
PF = 1 << 2
AF = 1 << 4
ZF = 1 << 6
SF = 1 << 7
TF = 1 << 8
IF = 1 << 9
DF = 1 << 10
OF = 1 << 11
IOPL_SHIFT = 12
IOPL = 3 << IOPL_SHIFT
NT = 1 << 14
RF = 1 << 16
VM = 1 << 17
AC = 1 << 18
VIF = 1 << 19
VIP = 1 << 20
ID = 1 << 21
EFLAGS_RESERVED_1 = 1 << 1          # bit 1 always reads as 1
ARITH_FLAGS = CF | PF | AF | ZF | SF | OF
# Bits software can ever change on a 486+ without VME (AC and ID included).
EFLAGS_WRITABLE = ARITH_FLAGS | TF | IF | DF | IOPL | NT | RF | VM | AC | VIF | VIP | ID

# -- Control registers (SDM Vol. 3A §2.5) --------------------------------------
CR0_PE = 1 << 0
CR0_MP = 1 << 1
CR0_EM = 1 << 2
CR0_TS = 1 << 3
CR0_ET = 1 << 4
CR0_NE = 1 << 5
CR0_WP = 1 << 16
CR0_AM = 1 << 18
CR0_NW = 1 << 29
CR0_CD = 1 << 30
CR0_PG = 1 << 31

CR4_VME = 1 << 0
CR4_PVI = 1 << 1
CR4_TSD = 1 << 2
CR4_DE = 1 << 3
CR4_PSE = 1 << 4
CR4_PAE = 1 << 5
CR4_MCE = 1 << 6
CR4_PGE = 1 << 7
CR4_PCE = 1 << 8
CR4_OSFXSR = 1 << 9
CR4_OSXMMEXCPT = 1 << 10
# The CR4 bits this CPU implements; setting any other bit is #GP(0) (SDM Vol. 3A §2.5).
CR4_SUPPORTED = CR4_VME | CR4_PVI | CR4_TSD | CR4_DE | CR4_PSE | CR4_PGE | CR4_PCE | CR4_MCE | CR4_OSFXSR | CR4_OSXMMEXCPT

# -- Page-table entries, 32-bit paging (SDM Vol. 3A §4.3, Tables 4-4..4-6) -----
PTE_P = 1 << 0
PTE_RW = 1 << 1
PTE_US = 1 << 2
PTE_PWT = 1 << 3
PTE_PCD = 1 << 4
PTE_A = 1 << 5
PTE_D = 1 << 6
PDE_PS = 1 << 7
PTE_G = 1 << 8

# #PF error code bits (SDM Vol. 3A §4.7, Figure 4-12).
PF_P = 1 << 0      # 0: not-present page; 1: protection violation
PF_W = 1 << 1      # access was a write
PF_U = 1 << 2      # access was made at CPL 3
PF_RSVD = 1 << 3
PF_I = 1 << 4      # instruction fetch (only with NX, which IA-32 paging lacks)

# -- Exceptions (SDM Vol. 3A §6.3, Table 6-1) ----------------------------------
DE, DB, NMI, BP, OF_VEC, BR, UD, NM, DF_VEC, TS, NP, SS_VEC, GP, PF_VEC, MF, AC_VEC, MC = (
    0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 16, 17, 18)
EXCEPTION_NAMES = {
    0: "#DE", 1: "#DB", 2: "NMI", 3: "#BP", 4: "#OF", 5: "#BR", 6: "#UD", 7: "#NM",
    8: "#DF", 9: "CSO", 10: "#TS", 11: "#NP", 12: "#SS", 13: "#GP", 14: "#PF",
    16: "#MF", 17: "#AC", 18: "#MC", 19: "#XM",
}
# Exceptions that push an error code (SDM Vol. 3A §6.13, Table 6-1).
ERROR_CODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17})
# Double-fault classes (SDM Vol. 3A §6.15, Table 6-4/6-5).
CONTRIBUTORY = frozenset({0, 10, 11, 12, 13})
PAGE_FAULT_CLASS = frozenset({14})

# -- Segment descriptors (SDM Vol. 3A §3.4.5, §3.5) ----------------------------
# Access byte (descriptor bits 40..47) and flags.
DESC_TYPE_ACCESSED = 1 << 0
DESC_S = 1 << 4            # 1: code/data, 0: system
DESC_P = 1 << 7
# Code/data type bits (when S=1).
SEG_CODE = 1 << 3
SEG_CONFORMING = 1 << 2    # code
SEG_READABLE = 1 << 1      # code
SEG_EXPAND_DOWN = 1 << 2   # data
SEG_WRITABLE = 1 << 1      # data
# System descriptor types (S=0), SDM Vol. 3A Table 3-2.
SYS_TSS16_AVAIL = 1
SYS_LDT = 2
SYS_TSS16_BUSY = 3
SYS_CALL_GATE16 = 4
SYS_TASK_GATE = 5
SYS_INT_GATE16 = 6
SYS_TRAP_GATE16 = 7
SYS_TSS32_AVAIL = 9
SYS_TSS32_BUSY = 11
SYS_CALL_GATE32 = 12
SYS_INT_GATE32 = 14
SYS_TRAP_GATE32 = 15

# Segment register numbers, in ModRM/encoding order (SDM Vol. 2 Table 3-6).
ES, CS, SS, DS, FS, GS = range(6)
SEG_NAMES = ("ES", "CS", "SS", "DS", "FS", "GS")
# Pseudo-segments for descriptor-table-relative accesses (linear addresses).
LINEAR = 6

# -- MSRs (SDM Vol. 4, Table 2-2) ------------------------------------------------
MSR_IA32_TSC = 0x10
MSR_IA32_APIC_BASE = 0x1B
MSR_IA32_SYSENTER_CS = 0x174
MSR_IA32_SYSENTER_ESP = 0x175
MSR_IA32_SYSENTER_EIP = 0x176
MSR_IA32_MISC_ENABLE = 0x1A0
MSR_IA32_PAT = 0x277
APIC_BASE_DEFAULT = 0xFEE00000
APIC_BASE_BSP = 1 << 8
APIC_BASE_ENABLE = 1 << 11
