"""VMX capability MSRs and the two processor profiles (SDM Vol. 3C Appendix A).

Software learns what a VMX implementation supports from the IA32_VMX_* MSRs
(Appendix A): IA32_VMX_BASIC (A.1: revision identifier, VMCS region size,
memory type, TRUE-controls support), the control MSRs with their allowed-0
settings in bits 31:0 (a 1 there: the control must be 1) and allowed-1
settings in bits 63:32 (a 0 there: the control must be 0) (A.3-A.5), MISC
(A.6), the CR0/CR4 fixed bits (A.7, A.8), VMCS_ENUM (A.9), the secondary
controls (A.3.3) and EPT/VPID capabilities (A.10).  CPUID.1:ECX.VMX[bit 5]
says VMX exists (§23.6) and IA32_FEATURE_CONTROL (MSR 3AH) must have its lock
bit and its enable-VMX-outside-SMX bit set for VMXON (§23.7).

Two profiles, each advertising only what this model implements:

* ``early``, as the first VT-x parts (Core Duo T2400 "Yonah", 2006; the
  processor Adams and Agesen measured VT-x on): pin-based, primary
  processor-based, exit and entry controls only -- no secondary controls, so
  no EPT, no VPID, no unrestricted guest; the default-1 controls of
  Appendix A.2 (CR3-load and CR3-store exiting among them) must be 1, and
  there are no IA32_VMX_TRUE_* MSRs.
* ``late``, as Sandy Bridge (2011): secondary controls with EPT (4-level,
  write-back and uncached, 2 MiB and 1 GiB pages, accessed/dirty flags,
  INVEPT single- and all-context), VPID (INVVPID individual-address, single-,
  all-context), unrestricted guest and descriptor-table exiting; the
  preemption timer; IA32_VMX_BASIC bit 55 and the TRUE MSRs, through which
  CR3-load/store exiting may be 0.

Control bit numbers are the SDM's (Tables 24-5 to 24-7, 24-13, 24-15).
"""

from __future__ import annotations

from dataclasses import dataclass

# -- MSR numbers (SDM Vol. 4 Table 2-2) ------------------------------------------
IA32_FEATURE_CONTROL = 0x3A
IA32_VMX_BASIC = 0x480
IA32_VMX_PINBASED_CTLS = 0x481
IA32_VMX_PROCBASED_CTLS = 0x482
IA32_VMX_EXIT_CTLS = 0x483
IA32_VMX_ENTRY_CTLS = 0x484
IA32_VMX_MISC = 0x485
IA32_VMX_CR0_FIXED0 = 0x486
IA32_VMX_CR0_FIXED1 = 0x487
IA32_VMX_CR4_FIXED0 = 0x488
IA32_VMX_CR4_FIXED1 = 0x489
IA32_VMX_VMCS_ENUM = 0x48A
IA32_VMX_PROCBASED_CTLS2 = 0x48B
IA32_VMX_EPT_VPID_CAP = 0x48C
IA32_VMX_TRUE_PINBASED_CTLS = 0x48D
IA32_VMX_TRUE_PROCBASED_CTLS = 0x48E
IA32_VMX_TRUE_EXIT_CTLS = 0x48F
IA32_VMX_TRUE_ENTRY_CTLS = 0x490

FEATURE_CONTROL_LOCK = 1 << 0
FEATURE_CONTROL_VMX_OUTSIDE_SMX = 1 << 2

# -- pin-based controls (Table 24-5) --------------------------------------------
PIN_EXTERNAL_INTERRUPT_EXITING = 1 << 0
PIN_NMI_EXITING = 1 << 3
PIN_VIRTUAL_NMIS = 1 << 5
PIN_PREEMPTION_TIMER = 1 << 6
# -- primary processor-based controls (Table 24-6) -----------------------------
CPU_INTERRUPT_WINDOW_EXITING = 1 << 2
CPU_USE_TSC_OFFSETTING = 1 << 3
CPU_HLT_EXITING = 1 << 7
CPU_INVLPG_EXITING = 1 << 9
CPU_RDTSC_EXITING = 1 << 12
CPU_CR3_LOAD_EXITING = 1 << 15
CPU_CR3_STORE_EXITING = 1 << 16
CPU_MOV_DR_EXITING = 1 << 23
CPU_UNCONDITIONAL_IO_EXITING = 1 << 24
CPU_USE_IO_BITMAPS = 1 << 25
CPU_USE_MSR_BITMAPS = 1 << 28
CPU_ACTIVATE_SECONDARY = 1 << 31
# -- secondary processor-based controls (Table 24-7) ---------------------------
SEC_ENABLE_EPT = 1 << 1
SEC_DESCRIPTOR_TABLE_EXITING = 1 << 2
SEC_ENABLE_VPID = 1 << 5
SEC_WBINVD_EXITING = 1 << 6
SEC_UNRESTRICTED_GUEST = 1 << 7
# -- VM-exit controls (Table 24-13) --------------------------------------------
EXIT_SAVE_DEBUG_CONTROLS = 1 << 2
EXIT_HOST_ADDRESS_SPACE_SIZE = 1 << 9
EXIT_ACK_INTERRUPT_ON_EXIT = 1 << 15
EXIT_SAVE_PREEMPTION_TIMER = 1 << 22
# -- VM-entry controls (Table 24-15) -------------------------------------------
ENTRY_LOAD_DEBUG_CONTROLS = 1 << 2
ENTRY_IA32E_MODE_GUEST = 1 << 9

# Default-1 classes (Appendix A.2): reserved controls reported as must-be-1.
PIN_DEFAULT1 = 0x00000016
PROC_DEFAULT1 = 0x0401E172
EXIT_DEFAULT1 = 0x00036DFF
ENTRY_DEFAULT1 = 0x000011FF

CR0_PE, CR0_NE, CR0_PG = 1 << 0, 1 << 5, 1 << 31
CR4_VMXE = 1 << 13

VMCS_REVISION = {"early": 0x0000000D, "late": 0x00000010}


@dataclass(frozen=True)
class Profile:
    """One VMX implementation: the settings its capability MSRs report."""

    name: str
    revision: int
    pin_allowed1: int
    proc_allowed1: int
    proc2_allowed1: int          # 0: no secondary controls (PROCBASED_CTLS bit 63 clear)
    exit_allowed1: int
    entry_allowed1: int
    true_controls: bool
    ept_vpid_cap: int
    preemption_rate: int = 0     # IA32_VMX_MISC 4:0: the timer counts every 2^rate TSC ticks

    @property
    def has_ept(self) -> bool:
        return bool(self.proc2_allowed1 & SEC_ENABLE_EPT)

    @property
    def has_vpid(self) -> bool:
        return bool(self.proc2_allowed1 & SEC_ENABLE_VPID)

    @property
    def unrestricted_guest(self) -> bool:
        return bool(self.proc2_allowed1 & SEC_UNRESTRICTED_GUEST)

    def allowed(self, kind: str, true: bool = True) -> tuple[int, int]:
        """(allowed-0 must-be-1 bits, allowed-1 may-be-1 bits) of a control word."""
        if kind == "pin":
            return PIN_DEFAULT1, self.pin_allowed1 | PIN_DEFAULT1
        if kind == "proc":
            low = PROC_DEFAULT1
            if true and self.true_controls:
                low &= ~(CPU_CR3_LOAD_EXITING | CPU_CR3_STORE_EXITING)
            return low, self.proc_allowed1 | PROC_DEFAULT1
        if kind == "proc2":
            return 0, self.proc2_allowed1
        if kind == "exit":
            low = EXIT_DEFAULT1
            if true and self.true_controls:
                low &= ~EXIT_SAVE_DEBUG_CONTROLS
            return low, self.exit_allowed1 | EXIT_DEFAULT1
        if kind == "entry":
            low = ENTRY_DEFAULT1
            if true and self.true_controls:
                low &= ~ENTRY_LOAD_DEBUG_CONTROLS
            return low, self.entry_allowed1 | ENTRY_DEFAULT1
        raise KeyError(kind)

    def cr0_fixed0(self, unrestricted: bool = False) -> int:
        """CR0 bits that must be 1 in VMX operation (A.7); PE and PG may be 0 in a
        guest with "unrestricted guest" (§26.3.1.1)."""
        return CR0_NE if unrestricted else CR0_PE | CR0_NE | CR0_PG


_PROC_COMMON = (CPU_INTERRUPT_WINDOW_EXITING | CPU_USE_TSC_OFFSETTING | CPU_HLT_EXITING
                | CPU_INVLPG_EXITING | CPU_RDTSC_EXITING | CPU_CR3_LOAD_EXITING
                | CPU_CR3_STORE_EXITING | CPU_MOV_DR_EXITING | CPU_UNCONDITIONAL_IO_EXITING
                | CPU_USE_IO_BITMAPS | CPU_USE_MSR_BITMAPS)

# EPT/VPID capabilities (A.10): execute-only 0, walk length 4 bit 6, UC 8, WB 14,
# 2 MiB 16, 1 GiB 17, INVEPT 20, A/D 21, single 25, all 26; INVVPID 32,
# individual 40, single 41, all 42, single-retaining-globals 43.
EPT_CAP_WALK4 = 1 << 6
EPT_CAP_UC, EPT_CAP_WB = 1 << 8, 1 << 14
EPT_CAP_2M, EPT_CAP_1G = 1 << 16, 1 << 17
EPT_CAP_INVEPT, EPT_CAP_AD = 1 << 20, 1 << 21
EPT_CAP_INVEPT_SINGLE, EPT_CAP_INVEPT_ALL = 1 << 25, 1 << 26
VPID_CAP_INVVPID = 1 << 32
VPID_CAP_INDIVIDUAL, VPID_CAP_SINGLE, VPID_CAP_ALL, VPID_CAP_SINGLE_GLOBALS = (
    1 << 40, 1 << 41, 1 << 42, 1 << 43)

PROFILES = {
    "early": Profile(
        "early", VMCS_REVISION["early"],
        pin_allowed1=PIN_EXTERNAL_INTERRUPT_EXITING | PIN_NMI_EXITING,
        proc_allowed1=_PROC_COMMON,
        proc2_allowed1=0,
        exit_allowed1=EXIT_ACK_INTERRUPT_ON_EXIT,
        entry_allowed1=0,
        true_controls=False,
        ept_vpid_cap=0),
    "late": Profile(
        "late", VMCS_REVISION["late"],
        pin_allowed1=PIN_EXTERNAL_INTERRUPT_EXITING | PIN_NMI_EXITING | PIN_PREEMPTION_TIMER,
        proc_allowed1=_PROC_COMMON | CPU_ACTIVATE_SECONDARY,
        proc2_allowed1=(SEC_ENABLE_EPT | SEC_DESCRIPTOR_TABLE_EXITING | SEC_ENABLE_VPID
                        | SEC_UNRESTRICTED_GUEST),
        exit_allowed1=EXIT_ACK_INTERRUPT_ON_EXIT | EXIT_SAVE_PREEMPTION_TIMER,
        entry_allowed1=0,
        true_controls=True,
        ept_vpid_cap=(EPT_CAP_WALK4 | EPT_CAP_UC | EPT_CAP_WB | EPT_CAP_2M | EPT_CAP_1G
                      | EPT_CAP_INVEPT | EPT_CAP_AD | EPT_CAP_INVEPT_SINGLE | EPT_CAP_INVEPT_ALL
                      | VPID_CAP_INVVPID | VPID_CAP_INDIVIDUAL | VPID_CAP_SINGLE | VPID_CAP_ALL
                      | VPID_CAP_SINGLE_GLOBALS)),
}


def profile(name: str | None) -> Profile | None:
    if name in (None, "off"):
        return None
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown VMX profile {name!r}; known: off, {', '.join(PROFILES)}") from None


def _ctl_msr(low: int, high: int) -> int:
    return (high << 32) | low


def read_capability_msr(p: Profile, n: int, cr4_supported: int) -> int | None:
    """The value of VMX capability MSR ``n`` for profile ``p``, or None if ``n`` is
    not one this profile has (RDMSR of it is #GP(0))."""
    from .vmcs import FIELD_LIST, REGION_SIZE
    if n == IA32_VMX_BASIC:
        # 30:0 revision; 44:32 region size; 48: addresses limited to 32 bits (no
        # IA-32e); 53:50 memory type 6 (write-back); 54 INS/OUTS information; 55 TRUE MSRs.
        return (p.revision | REGION_SIZE << 32 | 1 << 48 | 6 << 50 | 1 << 54
                | (1 << 55 if p.true_controls else 0))
    kinds = {IA32_VMX_PINBASED_CTLS: ("pin", False), IA32_VMX_PROCBASED_CTLS: ("proc", False),
             IA32_VMX_EXIT_CTLS: ("exit", False), IA32_VMX_ENTRY_CTLS: ("entry", False)}
    if p.true_controls:
        kinds.update({IA32_VMX_TRUE_PINBASED_CTLS: ("pin", True),
                      IA32_VMX_TRUE_PROCBASED_CTLS: ("proc", True),
                      IA32_VMX_TRUE_EXIT_CTLS: ("exit", True), IA32_VMX_TRUE_ENTRY_CTLS: ("entry", True)})
    if n in kinds:
        return _ctl_msr(*p.allowed(*kinds[n]))
    if n == IA32_VMX_MISC:
        # 4:0 preemption-timer rate; 8:6 activity states: HLT (bit 6); 24:16 CR3-target
        # count 4; 27:25 MSR-list size 512 * (0 + 1).
        return p.preemption_rate | 1 << 6 | 4 << 16
    if n == IA32_VMX_CR0_FIXED0:
        return CR0_PE | CR0_NE | CR0_PG
    if n == IA32_VMX_CR0_FIXED1:
        return 0xFFFFFFFF
    if n == IA32_VMX_CR4_FIXED0:
        return CR4_VMXE
    if n == IA32_VMX_CR4_FIXED1:
        return cr4_supported | CR4_VMXE
    if n == IA32_VMX_VMCS_ENUM:
        return max((enc >> 1) & 0x1FF for _, enc in FIELD_LIST) << 1
    if n == IA32_VMX_PROCBASED_CTLS2 and p.proc2_allowed1:
        return _ctl_msr(*p.allowed("proc2"))
    if n == IA32_VMX_EPT_VPID_CAP and p.proc2_allowed1 & (SEC_ENABLE_EPT | SEC_ENABLE_VPID):
        return p.ept_vpid_cap
    return None
