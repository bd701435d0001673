"""The intercept controls: what makes the CPU exit to a monitor instead of acting.

A monitor does not change the CPU's code; it sets these controls, and
``CPU.run`` returns a typed exit (``exits.py``) when one of them fires.  They
are shaped like the VMCS's VM-execution controls (SDM Vol. 3C §24.6): an
exception bitmap (§24.6.3), I/O bitmaps (§24.6.4), CR0/CR4 guest/host masks
with read shadows (§24.6.6), CR3-load/store exiting, HLT, INVLPG, RDTSC and
descriptor-table exiting (§24.6.2), CPUID exiting (unconditional in VMX
non-root operation, §25.1.2), MOV-DR exiting, RDMSR/WRMSR exiting with MSR
bitmaps (§24.6.9), interrupt-window exiting, the preemption timer (§25.5.1)
and TSC offsetting (§24.6.5), so that simulated VT-x (``vmx/``) maps its
VMCS straight onto them.  Two controls have no VMX counterpart because VT-x did
not need them: software-interrupt exiting (trap-and-emulate takes INT n
before the host's IDT is used) and the code fence (a binary translator lets
no untranslated guest kernel code run directly).  Exiting on classes of
sensitive instructions (the x86 holes of Robin and Irvine, USENIX Security
2000) comes with the technique that needs it (binary translation): a control
is listed here only once the CPU honours it.

With every control clear -- the default -- the CPU is the bare machine.
"""

from __future__ import annotations

# (name, meaning, VMX counterpart) -- docs/architecture.md prints this table.
CONTROLS = (
    ("exception_bitmap", "bit v set: exception v exits instead of being delivered",
     "exception bitmap (§24.6.3)"),
    ("software_interrupt_exiting", "INT n, INT3, INTO exit before the IDT is read", "none"),
    ("external_interrupt_exiting", "an external interrupt exits instead of being delivered",
     "external-interrupt exiting, pin-based bit 0 (§24.6.1)"),
    ("io_exiting", "None: no I/O exits; True: every IN/OUT/INS/OUTS exits; a set: those ports",
     "unconditional I/O exiting / I/O bitmaps (§24.6.4)"),
    ("cr_read_exiting", "bit n set: MOV from CRn exits", "CR3-store exiting (§24.6.2)"),
    ("cr_write_exiting", "bit n set: MOV to CRn (CLTS, LMSW for CR0) exits", "CR3-load exiting (§24.6.2)"),
    ("cr0_guest_host_mask", "CR0 bits the monitor owns: a write changing one from the read "
     "shadow exits, reads return the shadow's value of it", "CR0 guest/host mask (§24.6.6)"),
    ("cr4_guest_host_mask", "the same for CR4", "CR4 guest/host mask (§24.6.6)"),
    ("keep_owned_bits", "a CR0/CR4 write that does not exit leaves the owned bits as they are "
     "(else it writes them too)", "MOV to CR0/CR4 in non-root operation (§25.3)"),
    ("descriptor_table_exiting", "LGDT LIDT LLDT LTR SGDT SIDT SLDT STR exit",
     "descriptor-table exiting, secondary bit 2 (§24.6.2)"),
    ("hlt_exiting", "HLT exits", "HLT exiting (§24.6.2)"),
    ("invlpg_exiting", "INVLPG exits", "INVLPG exiting (§24.6.2)"),
    ("code_fence", "None, or (lo, hi): a block fetched at CPL < 3 outside [lo, hi) exits", "none"),
    ("rdtsc_exiting", "RDTSC exits", "RDTSC exiting (§24.6.2)"),
    ("tsc_offset", "added to what RDTSC and RDMSR of the TSC return", "TSC offsetting (§24.6.5)"),
    ("cpuid_exiting", "CPUID exits", "unconditional in non-root operation (§25.1.2)"),
    ("mov_dr_exiting", "MOV to/from DRn exits", "MOV-DR exiting (§24.6.2)"),
    ("msr_exiting", "None: nothing; True: every RDMSR/WRMSR; (reads, writes): those MSRs",
     "RDMSR/WRMSR exiting, MSR bitmaps (§24.6.9)"),
    ("interrupt_window_exiting", "exit at an instruction boundary with IF=1 and no STI/MOV SS "
     "blocking", "interrupt-window exiting (§24.6.2)"),
    ("preemption_deadline", "None, or the step count (CPU.steps) at which the CPU exits",
     "VMX-preemption timer (§24.6.1, §25.5.1)"),
    ("vmx_instruction_exiting", "the VMX instructions exit", "unconditional in non-root "
     "operation (§25.1.2)"),
    ("task_switch_exiting", "a task switch (CALL/JMP to a TSS or task gate, IRET with NT, an "
     "event through a task gate) exits", "unconditional in non-root operation (§25.1.2)"),
    ("mmio_exiting", "an access to a physical address beyond RAM exits (MmioExit) instead of "
     "reaching the MMIO bus", "EPT violation on an unbacked page (§28.2.3.2); KVM_EXIT_MMIO"),
    ("sensitive_exiting", "names of classes of the sensitive instructions of Robin and Irvine "
     "(audit.SENSITIVE: 'PUSHF', 'SGDT', 'MOV' of a segment register...): one of them exits "
     "(SensitiveExit) before it executes; set through CPU.set_sensitive_exiting",
     "none (the x86 holes that VT-x closed by adding non-root operation)"),
    # A host debugger's controls (trapvisor/debug): invisible to the guest, unlike DR0-DR7.
    ("debug_breakpoints", "linear addresses: an instruction starting at one exits (DebugExit) "
     "before it runs", "none (KVM_GUESTDBG_USE_SW_BP, api.rst 4.61)"),
    ("debug_watchpoints", "(first, last, 'write'|'read'|'access'): a data access touching "
     "[first, last] exits (DebugExit) after its instruction", "none (KVM_GUESTDBG_USE_HW_BP)"),
    ("debug_single_step", "every instruction exits (DebugExit) after it retires; external "
     "interrupts are held while it is set", "monitor trap flag (§25.5.2)"),
)


class InterceptControls:
    """One CPU's intercept controls (see the module docstring and ``CONTROLS``)."""

    __slots__ = tuple(name for name, _, _ in CONTROLS) + ("cr0_read_shadow", "cr4_read_shadow")

    def __init__(self):
        self.clear()

    def clear(self) -> None:
        """The bare machine: nothing exits."""
        self.exception_bitmap = 0
        self.software_interrupt_exiting = False
        self.external_interrupt_exiting = False
        self.io_exiting = None
        self.cr_read_exiting = 0
        self.cr_write_exiting = 0
        self.cr0_guest_host_mask = 0
        self.cr0_read_shadow = 0
        self.cr4_guest_host_mask = 0
        self.cr4_read_shadow = 0
        self.keep_owned_bits = False
        self.descriptor_table_exiting = False
        self.hlt_exiting = False
        self.invlpg_exiting = False
        self.code_fence = None
        self.rdtsc_exiting = False
        self.tsc_offset = 0
        self.cpuid_exiting = False
        self.mov_dr_exiting = False
        self.msr_exiting = None
        self.interrupt_window_exiting = False
        self.preemption_deadline = None
        self.vmx_instruction_exiting = False
        self.task_switch_exiting = False
        self.mmio_exiting = False
        self.sensitive_exiting = frozenset()
        self.debug_breakpoints = frozenset()
        self.debug_watchpoints = ()
        self.debug_single_step = False

    def debugging(self) -> bool:
        """Is any host-debugger control set?  (The CPU then runs instruction by
        instruction where it must: ``CPU.debug_step``.)"""
        return bool(self.debug_breakpoints or self.debug_watchpoints or self.debug_single_step)

    def exits_on_event(self, vector: int, kind: str) -> bool:
        """Does delivering this event exit?"""
        if kind == "exception":
            return bool(self.exception_bitmap >> vector & 1)
        if kind == "software":
            return self.software_interrupt_exiting
        return self.external_interrupt_exiting

    def exits_on_port(self, port: int) -> bool:
        io = self.io_exiting
        return io is not None and (io is True or port in io)

    def exits_on_msr(self, msr: int, write: bool) -> bool:
        m = self.msr_exiting
        return m is not None and (m is True or msr in m[1 if write else 0])

    def exits_on_cr_write(self, cr: int, old: int, new: int) -> bool:
        """MOV to CRn (or CLTS/LMSW on CR0) exits: by CRn exiting, or by changing
        a bit the guest/host mask gives the monitor away from its read shadow."""
        if self.cr_write_exiting >> cr & 1:
            return True
        if cr == 0:
            return bool((new ^ self.cr0_read_shadow) & self.cr0_guest_host_mask)
        if cr == 4:
            return bool((new ^ self.cr4_read_shadow) & self.cr4_guest_host_mask)
        return False

    def owned_bits_kept(self, cr: int, old: int, new: int) -> int:
        """With ``keep_owned_bits``, a write that does not exit leaves the bits the
        monitor owns as they are (SDM Vol. 3C §25.3, MOV to CR0/CR4, CLTS, LMSW)."""
        if not self.keep_owned_bits:
            return new
        m = self.cr0_guest_host_mask if cr == 0 else self.cr4_guest_host_mask if cr == 4 else 0
        return new if not m else (new & ~m) | (old & m)

    def cr_read_value(self, cr: int, real: int) -> int:
        """What MOV from CR0/CR4 (and SMSW) returns: the read shadow in the owned bits."""
        if cr == 0 and self.cr0_guest_host_mask:
            m = self.cr0_guest_host_mask
            return (real & ~m) | (self.cr0_read_shadow & m)
        if cr == 4 and self.cr4_guest_host_mask:
            m = self.cr4_guest_host_mask
            return (real & ~m) | (self.cr4_read_shadow & m)
        return real

    def describe(self) -> dict:
        """The controls that are set, for reports and tests."""
        out = {}
        for name in self.__slots__:
            v = getattr(self, name)
            if v not in (0, False, None, frozenset(), ()):
                out[name] = sorted(v) if isinstance(v, (set, frozenset)) else v
        return out
