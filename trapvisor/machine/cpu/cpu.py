"""The IA-32 processor: architectural state and run loop.

This module holds the CPU's state and the block-dispatch loop; the CPU's
other hot path, memory access (``memory_access.py``), and paging with the
TLB (``paging.py``) are mixins of :class:`CPU`.  The hot paths are written
densely on purpose (local aliases, no helper calls on the fast path);
everything else (instruction semantics, segment loads, interrupt delivery)
lives in the sibling modules and is written for reading.

Execution model: instructions are decoded once by iced-x86 and compiled into
Python closures (``translate.py``), grouped into basic blocks keyed by the
physical address of their first byte.  A block ends at a control transfer, at
an instruction that changes how later instructions must be translated or
checked (mode, segment, control-register writes), at a page boundary, or after
``MAX_BLOCK`` instructions.  Writes to a page that holds decoded code drop
that page's blocks (self-modifying code, code loaded at run time).  A later
tier can replace a block's list of closures by one generated function without
touching the dispatch loop.

Faults are Python exceptions (:class:`CpuFault`) raised from anywhere inside
an instruction; every instruction performs its stores before it updates
registers, so a faulting instruction leaves the state as it was (x86 faults
are restartable, SDM Vol. 3A §6.5).  The loop catches the fault, points EIP at
the faulting instruction and delivers it through the IDT
(``interrupts.py``).

The CPU knows nothing of virtual machine monitors.  A monitor drives it
through one explicit interface (docs/architecture.md):

* ``cpu.intercepts`` (``intercepts.py``): which events make the CPU exit
  instead of acting, shaped like a VMCS's execution controls;
* ``cpu.run(budget)`` returns a typed exit (``exits.py``) saying why it
  stopped; ``cpu.request_exit()`` makes it return at the next block boundary;
* ``cpu.hooks`` (:class:`CpuHooks`): callbacks for what a monitor must hear
  of but need not stop for (a store into decoded code, a TLB invalidation,
  a block about to run);
* ``cpu.io_bus``/``cpu.mmio_bus``/``cpu.intc`` for the platform.
"""

from __future__ import annotations

import os

from . import flags as F
from .exits import (
    BudgetExhausted, CodeFenceExit, GuestExit, InterruptWindowExit, MachineStopped, Preempted,
    PreemptionTimerExit,
)
from .constants import (
    AC, CR0_AM, CR0_ET, CS, EFLAGS_RESERVED_1, GP, IF, SS, TF, EXCEPTION_NAMES, SEG_NAMES,
    APIC_BASE_DEFAULT, APIC_BASE_BSP, APIC_BASE_ENABLE,
)

MAX_BLOCK = 64
# rlim/wlim/clim of a flat 4 GiB segment: every offset passes the limit check.
FLAT = 0xFFFFFFFF


_BLOCKGEN = None


def _blockgen():
    global _BLOCKGEN
    if _BLOCKGEN is None:
        from . import blockgen
        _BLOCKGEN = blockgen
    return _BLOCKGEN


class CpuFault(Exception):
    """An exception raised by an instruction: vector and optional error code."""

    __slots__ = ("vector", "error_code")

    def __init__(self, vector: int, error_code: int | None = None):
        self.vector = vector
        self.error_code = error_code

    def __str__(self):
        name = EXCEPTION_NAMES.get(self.vector, f"vector {self.vector}")
        return name if self.error_code is None else f"{name}({self.error_code:#x})"


class MachineStop(Exception):
    """The machine cannot go on: triple fault, unimplemented instruction, ..."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class ExitFault(CpuFault):
    """Raised inside an instruction that the intercept controls make exit: it
    unwinds the instruction as a fault does (its checks come before its stores),
    so the CPU is left at the instruction, and the run loop returns ``exit``.
    Never leaves the CPU: :meth:`CPU.run` turns it into its return value."""

    __slots__ = ("exit",)

    def __init__(self, exit):
        super().__init__(-1, None)
        self.exit = exit


class CodeModified(CpuFault):
    """Raised by generated code at the instruction boundary after a store into the
    page of the block it is running: the instructions before the boundary are
    retired and the dispatch loop decodes afresh from there (no delivery)."""

    __slots__ = ()

    def __init__(self):
        super().__init__(-1, None)


CODE_MODIFIED = CodeModified()


class CpuHooks:
    """What a monitor hears of without the CPU stopping (each None, or a callable).

    * ``code_written(page)``: a store hit a physical page holding decoded code
      (the CPU has dropped its own blocks of it);
    * ``tlb_invalidated(lin)``: INVLPG of a linear address (None: a full flush);
    * ``block_fetched(block)``: a block is about to run (tracing; while set,
      the CPU runs closures only, so that every block is seen).
    """

    __slots__ = ("code_written", "tlb_invalidated", "block_fetched")

    def __init__(self):
        self.code_written = self.tlb_invalidated = self.block_fetched = None


class Block:
    """A translated basic block.

    ``ops`` is a tuple of (eip, closure); ``fallthrough`` is the EIP after the
    block when its last instruction does not set EIP itself, else None.

    ``gen`` is the block-translation tier's function for the whole block
    (``blockgen.py``), made once the block has run ``blockgen.HOT`` times
    (``hits`` counts; negative: the block cannot have one).  ``gen(end)`` runs
    the block (or, for a loop back to itself, as many iterations as the
    dispatch loop would), updates EIP and the instruction count itself and
    returns True, or the next block when it can tell it cheaply (chaining);
    it returns False without doing anything when the CPU is not in the
    context it was generated for (paging, flat segments), and the block is
    then generated afresh for the new context (``regens`` counts).
    """

    __slots__ = ("eip", "cs32", "ops", "fallthrough", "n", "pages", "ilist", "gen", "hits",
                 "regens")

    def __init__(self, eip, cs32, ops, fallthrough, pages, ilist):
        self.eip, self.cs32, self.ops, self.fallthrough = eip, cs32, ops, fallthrough
        self.n = len(ops)
        self.pages = pages
        self.ilist = ilist   # decoded iced instructions, for traces and diagnostics
        self.gen = None
        self.hits = 0
        self.regens = 0


# The CPU's memory access and paging, as mixins.  Imported here, not at the top:
# they raise CpuFault, defined above.
from .memory_access import MemoryAccess  # noqa: E402
from .paging import Paging  # noqa: E402
from .stepping import Stepping  # noqa: E402


class CPU(MemoryAccess, Paging, Stepping):
    def __init__(self, memory, io_bus, mmio_bus=None, intc=None, clock=None, *, strict=False,
                 vmx=None):
        self.mem = memory
        self.ram = memory.ram
        self.ram_size = memory.size
        self.code_pages = memory.code_pages
        # Self-modifying code within a block (see invalidate_code_page).
        self.running_page = -1
        self.code_modified = False
        memory.on_code_write = self.invalidate_code_page
        self.io_bus = io_bus
        self.mmio_bus = mmio_bus
        self.intc = intc
        self.clock = clock
        if intc is not None and getattr(intc, "on_pending", False) is None:
            # A request raised inside a block (an NMI to self through the ICR) ends the budget
            # at the block's end, so it is taken at the next instruction boundary.
            intc.on_pending = self.deadline_moved
        # A device armed a timer earlier than the deadline the current budget runs to
        # (a PIT reprogrammed, a LAPIC one-shot): end the budget at the next block
        # boundary, so the interrupt comes when it is due, not when the budget ends.
        self.resched = False
        if clock is not None:
            clock.on_earlier_deadline = self.deadline_moved
        # A CPU variant in which every sensitive instruction traps at CPL > 0
        # (the hypothetical virtualizable x86 of the trap-and-emulate issue).
        self.strict = strict

        self.regs = [0] * 8            # EAX ECX EDX EBX ESP EBP ESI EDI
        self.eip = 0
        self.lf = (F.EAGER, 0, 0, 0, 0)  # lazy arithmetic flags
        self.eflags_rest = EFLAGS_RESERVED_1  # EFLAGS without the six arithmetic bits

        # Segment registers: visible selector and hidden descriptor cache.
        self.sel = [0] * 6
        self.base = [0] * 6
        self.limit = [0xFFFF] * 6
        self.attr = [0] * 6           # descriptor bits 40..55 (type, S, DPL, P, AVL, L, D/B, G)
        # Base-0 expand-up segments with any limit (flat ones, and the truncated
        # ones a monitor gives its guest): an access of up to 4 bytes at an offset
        # <= rlim/wlim passes every segment check, so the hot paths skip seg_lin.
        # FLAT for a flat segment, limit - 3 for a truncated one, -1 otherwise.
        self.rlim = [-1] * 6
        self.wlim = [-1] * 6
        self.clim = -1                # CS limit when CS is a 32-bit base-0 segment, else -1
        self.cpl = 0
        self.ac_on = False            # alignment checking active (update_ac)
        self.slow_data = False        # data segments take the checked path (update_ac)
        self.bp_exec = ()             # enabled instruction breakpoints: (n, linear address)
        self.bp_data = ()             # enabled data breakpoints: (n, first, last, write only)
        self.bp_hits = 0              # data breakpoints hit by the current instruction
        self.rep_break = False        # single_step: a REP string instruction does one iteration
        # The host debugger's watchpoints (intercepts.debug_watchpoints, mirrored by
        # debug_controls_changed), the first one the current instruction hit, and
        # "resume": the linear address of a breakpoint passed over once (as EFLAGS.RF does).
        self.dbg_watch = ()
        self.dbg_hit = None
        self.dbg_resume = None
        self.cs32 = True
        self.ss32 = True

        self.gdtr = (0, 0xFFFF)       # (base, limit)
        self.idtr = (0, 0x3FF)
        self.ldtr = 0                 # selector
        self.ldt_base, self.ldt_limit = 0, 0
        self.tr = 0
        self.tr_base, self.tr_limit, self.tr_attr = 0, 0, 0

        self.cr0 = CR0_ET
        self.cr2 = 0
        self.cr3 = 0
        self.cr4 = 0
        self.dr = [0] * 8
        self.dr[6], self.dr[7] = 0xFFFF0FF0, 0x400
        self.msr = {}
        self.apic_base = APIC_BASE_DEFAULT | APIC_BASE_BSP | APIC_BASE_ENABLE
        self.sysenter_cs = self.sysenter_esp = self.sysenter_eip = 0
        self.tsc_offset = 0

        self.paging = False
        self.ept = None               # vmx.ept.Ept in VMX non-root operation with EPT
        self._tlb = ({}, {}, {}, {})  # read-sup, write-sup, read-user, write-user
        self.tlb_r, self.tlb_w = self._tlb[0], self._tlb[1]
        self.tlb_global = set()

        self.cache: dict[int, Block] = {}
        self.page_blocks: dict[int, list[int]] = {}

        self.icount = 0               # instructions retired
        self.halted = False
        self.inhibit_irq = False      # one-instruction shadow after STI / MOV SS
        self.nmi_blocked = False      # an NMI handler runs: NMIs wait for the next IRET (SDM 3A §6.7.1)
        self.ss_shadow = False        # set by MOV SS / POP SS: #DB waits one instruction
        self.sw_int_delivered = False  # set when INT n/INT3/INTO entered a handler
        # Why the run loop must end: a MachineStop (the machine cannot go on), or an
        # exit the intercept controls asked for (exits.py), which run() returns and clears.
        self.stop = None
        self.exit_code: int | None = None
        # The monitor interface (module docstring): intercept controls and hooks.
        from .intercepts import InterceptControls
        self.intercepts = InterceptControls()
        self.hooks = CpuHooks()
        self.interrupts_delivered = 0  # external interrupts delivered through the IDT
        # Events delivered through the IDT (exceptions, INT n, interrupts; nested ones
        # too): with icount, the steps every budget counts (``steps``), so that a guest
        # that only ever faults still reaches its limit.
        self.deliveries = 0
        self.event_ip = None          # address of the INT n that raised a software event
        self.auditor = None           # audit.Auditor: records sensitive instructions (set before running)
        self.delivering = None        # vector being delivered (double-fault detection)
        self.exception_counts = {}

        # VMX (SDM Vol. 3C ch. 23-30, ``vmx/``): None -- the default -- is a CPU without
        # it; "early" or "late" names a capability profile (vmx/capabilities.py).
        self.vmx = None
        if vmx not in (None, "off"):
            from .vmx import Vmx
            self.vmx = Vmx(self, vmx)

        from .translate import Translator
        self.translator = Translator(self)

    # ------------------------------------------------------------------ flags
    def get_eflags(self) -> int:
        return self.eflags_rest | F.arith_flags(self.lf)

    def set_eflags(self, value: int) -> None:
        """Set EFLAGS with no privilege checks (callers apply POPF/IRET rules)."""
        from .constants import ARITH_FLAGS
        self.lf = (F.EAGER, value & ARITH_FLAGS, 0, 0, 0)
        self.eflags_rest = (value & ~ARITH_FLAGS & 0x3F7FFF) | EFLAGS_RESERVED_1
        self.update_ac()

    @property
    def iopl(self) -> int:
        return (self.eflags_rest >> 12) & 3

    # ------------------------------------------------------------ segments
    def set_segment_cache(self, s: int, sel: int, base: int, limit: int, attr: int) -> None:
        """Load a segment register's visible and hidden parts (no checks)."""
        self.sel[s], self.base[s], self.limit[s], self.attr[s] = sel, base, limit, attr
        present = attr & 0x80
        typ = attr & 0x1F  # S bit + type
        base0 = present and base == 0 and (sel & ~3 or s == CS) and (s == CS or not self.slow_data)
        flat = base0 and limit == 0xFFFFFFFF
        is_code = typ & 0x18 == 0x18
        is_data = typ & 0x18 == 0x10
        readable = is_data or (is_code and typ & 2)
        writable = is_data and typ & 2
        expand_down = is_data and typ & 4
        rok = base0 and readable and not expand_down
        wok = base0 and writable and not expand_down
        self.rlim[s] = FLAT if flat and rok else limit - 3 if rok and limit >= 3 else -1
        self.wlim[s] = FLAT if flat and wok else limit - 3 if wok and limit >= 3 else -1
        if s == CS:
            self.cs32 = bool(attr & 0x4000)
            self.clim = limit if present and base == 0 and self.cs32 else -1
        elif s == SS:
            self.ss32 = bool(attr & 0x4000)

    def set_cpl(self, cpl: int) -> None:
        self.cpl = cpl
        user = 2 if cpl == 3 else 0
        self.tlb_r, self.tlb_w = self._tlb[user], self._tlb[user + 1]
        self.update_ac()

    def update_ac(self) -> None:
        """Alignment checking is on at CPL 3 with CR0.AM and EFLAGS.AC (SDM Vol. 3A
        §6.15, #AC).  While it is on, the data segments take the slow path
        (``seg_lin``), which checks the alignment; call after any change of
        CR0, EFLAGS.AC or CPL."""
        on = bool(self.cr0 & CR0_AM and self.eflags_rest & AC and self.cpl == 3)
        self.ac_on = on
        # Data breakpoints (ops_sysregs.debug_update) need the slow path too.
        slow = on or bool(self.bp_data) or bool(self.dbg_watch)
        if slow != self.slow_data:
            self.slow_data = slow
            for s in range(6):
                if s != CS:
                    self.set_segment_cache(s, self.sel[s], self.base[s], self.limit[s], self.attr[s])

    # -------------------------------------------------------- decode cache
    def invalidate_code_page(self, page: int) -> None:
        """A page holding decoded code was written: drop its blocks.

        A store into the page of the block that is running ends that block after
        the storing instruction, so the next instruction is decoded from the new
        bytes: P6-family and later processors detect a write to an instruction
        already fetched or decoded and execute the new one (SDM Vol. 3A §8.1.3,
        "Handling Self- and Cross-Modifying Code").  The page is the granule, so a
        store to data beside the code ends the block early too: only the block
        boundaries change, never the result.
        """
        if page == self.running_page:
            self.code_modified = True
        self.code_pages[page] = 0
        for key in self.page_blocks.pop(page, ()):
            self.cache.pop(key, None)
        hook = self.hooks.code_written
        if hook is not None:
            hook(page)

    def set_sensitive_exiting(self, classes) -> None:
        """Set ``intercepts.sensitive_exiting`` (names of audit.SENSITIVE classes).  It
        takes effect when an instruction is translated, so the decoded blocks go."""
        classes = frozenset(classes)
        if classes != self.intercepts.sensitive_exiting:
            self.intercepts.sensitive_exiting = classes
            self.flush_code_cache()

    def flush_code_cache(self) -> None:
        for page in list(self.page_blocks):
            self.invalidate_code_page(page)

    # -------------------------------------------------------------- running
    def fetch_block(self) -> Block:
        eip = self.eip
        # Code segment limit check on the first byte (SDM Vol. 3A §5.3).
        if eip > self.limit[CS]:
            raise CpuFault(GP, 0)
        base = self.base[CS]
        lin = (base + eip) & 0xFFFFFFFF if base else eip
        if self.paging:
            f = self.tlb_r.get(lin >> 12)
            if f is None:
                f = self.page_walk(lin, False, self.cpl == 3)
            pa = f | (lin & 0xFFF)
        else:
            pa = lin
        blk = self.cache.get(pa)
        if blk is None or blk.eip != eip or blk.cs32 != self.cs32:
            fence = self.intercepts.code_fence
            if fence is not None and self.cpl < 3 and not fence[0] <= lin < fence[1]:
                raise ExitFault(CodeFenceExit(eip))
            blk = self.translator.translate(eip, lin, pa)
        return blk

    def run(self, max_instructions: int | None = None):
        """Run until an exit (``exits.py``): the budget spent, the guest's exit code,
        a machine stop, an exit the intercept controls ask for, or a requested one.

        A machine stop stays in ``self.stop`` (the machine cannot go on: running
        again returns it again); any other exit is cleared as it is returned.

        In VMX non-root operation an exit the VMCS asks for is a VM exit
        (``vmx/exit.py``): the guest state is saved, the host state loaded, and
        the VM exit returned (or, with host code to run, the run goes on there).
        """
        if self.vmx is None:
            return self._run(max_instructions)
        return self.vmx.run(max_instructions)

    def _run(self, max_instructions: int | None = None):
        limit = self.steps() + max_instructions if max_instructions is not None else 1 << 62
        clock = self.clock
        ic = self.intercepts
        timer = ic.preemption_deadline
        if timer is not None and timer < limit:
            limit = timer
        while self.stop is None and self.exit_code is None and self.icount + self.deliveries < limit:
            if self.halted:
                if not self.idle():
                    break
                continue
            if self.intc is not None and not self.nmi_blocked and self._nmi_latched():
                self.deliver_nmi()
                if self.stop is not None:
                    break
            if self.intc is not None and self.eflags_rest & IF and not self.inhibit_irq \
                    and not self.intercepts.debug_single_step and self.intc.interrupt_pending():
                self.deliver_external_interrupt()
                if self.stop is not None:
                    break
            if ic.interrupt_window_exiting and self.eflags_rest & IF and not self.inhibit_irq:
                self.stop = InterruptWindowExit()
                break
            budget = limit - self.icount - self.deliveries
            if self.resched:
                self.resched = False
                if clock is None:        # no clock of its own: a monitor asked (request_exit)
                    return Preempted()
            if clock is not None:
                deadline = clock.next_deadline()
                if deadline < clock.NEVER:
                    budget = min(budget, clock.instructions_until(deadline))
            self.execute(budget)
            if clock is not None:
                clock.run_due()
        if timer is not None and self.stop is None and self.exit_code is None and self.steps() >= timer:
            return PreemptionTimerExit()
        return self.take_exit()

    def steps(self) -> int:
        """What every budget counts: instructions retired plus events delivered."""
        return self.icount + self.deliveries

    def take_exit(self):
        """The exit that ended the run loop (and clear it, unless the machine is stopped)."""
        stop = self.stop
        if stop is None:
            if self.exit_code is not None:
                return GuestExit(self.exit_code)
            if self.resched and self.clock is None:
                self.resched = False
                return Preempted()
            return BudgetExhausted()
        if stop.__class__ is MachineStop:
            return MachineStopped(stop)
        self.stop = None
        return stop

    def request_exit(self) -> None:
        """Make ``run`` return :class:`Preempted` at the next block boundary (a
        monitor's timer rearmed, a time slice over).  On a CPU with a clock of its
        own this only ends the current budget early (``deadline_moved``)."""
        self.resched = True

    # The block-translation tier (blockgen.py): on unless TRAPVISOR_NO_BLOCKGEN=1;
    # tests flip it per CPU to run both tiers.
    block_tier = os.environ.get("TRAPVISOR_NO_BLOCKGEN", "") in ("", "0")
    fault_index = 0    # set by a generated block function on a fault: the faulting instruction
    # The count the running ``execute`` stops at (0 outside it): a REP string instruction
    # runs its next chunk at once when the dispatch loop would (ops_string.go_on_at).
    rep_end = 0

    def execute(self, budget: int) -> None:
        """The dispatch loop: run blocks until ``budget`` instructions have retired.

        The interrupt check happens between blocks, so an interrupt that
        becomes pending waits at most one block (a few instructions).  A block
        with a generated function (block tier) runs it; the others run their
        closures and count towards getting one.
        """
        end = self.rep_end = self.icount + budget
        # A block observer (--trace) must see every block: closures only then.
        observe = self.hooks.block_fetched
        ic = self.intercepts
        debug = ic.debugging()
        # Generated code runs several blocks in one go (chaining): not while a debugger
        # must see each block's instructions.
        tier = self.block_tier and observe is None and not debug
        every = debug and ic.debug_single_step
        watch = debug and bool(self.dbg_watch)
        quiet = False     # known: no interrupt pending with IF=1 (the check after a block passed)
        while self.icount < end:
            if debug and (every or self.breakpoint_ahead()):
                self.debug_step()
                if self.stop is not None or self.halted or self.exit_code is not None or self.inhibit_irq:
                    return
                if self.eflags_rest & IF and self.intc is not None and self.intc.interrupt_pending():
                    return
                continue
            if self.eflags_rest & TF or self.bp_exec or self.bp_data:
                self.single_step()
                if self.stop is not None or self.halted or self.exit_code is not None:
                    return
                quiet = False
                continue
            if self.inhibit_irq:
                self.inhibit_irq = False
                if self.eflags_rest & IF and self.intc is not None and self.intc.interrupt_pending():
                    # The instruction in the STI/MOV SS shadow runs alone: the pending interrupt
                    # is taken right after it (SDM Vol. 2 STI), before a CLI that may follow.
                    end = min(end, self.icount + 1)
            blk = ip = gen = None
            # Generated code may run several blocks in one go (self-loops, chaining); the
            # closure path would return after one block if an interrupt is deliverable.
            lim = end if quiet or not (self.eflags_rest & IF and (
                ic.interrupt_window_exiting or self.intc is not None and self.intc.interrupt_pending())) \
                else self.icount + 1
            try:
                blk = self.fetch_block()
                # The budget is exact: a block it ends inside runs only as far as it allows
                # (closures), and generated code is given an end it cannot pass.
                room = end - self.icount
                gen = blk.gen if tier and blk.n <= room else None
                if gen is None and tier and blk.hits >= 0 and blk.n <= room:
                    blk.hits += 1
                    if blk.hits >= _blockgen().HOT:
                        gen = self._compile_block(blk)
                if gen is not None:
                    self.running_page = blk.pages[0]
                    nxt = gen(min(lim, end - blk.n + 1))
                    # A generated block may return its successor (chaining, see blockgen):
                    # run it directly while the budget lasts.
                    while nxt.__class__ is Block and self.icount < lim and nxt.gen is not None \
                            and self.icount + nxt.n <= end:
                        blk = nxt
                        gen = blk.gen
                        self.running_page = blk.pages[0]
                        nxt = gen(min(lim, end - blk.n + 1))
                    self.running_page = -1
                    if nxt is False:         # not in the context it was generated for
                        gen = blk.gen = None
                        blk.regens += 1
                        blk.hits = 0 if blk.regens < 4 else -1
                if gen is None:
                    if observe is not None:
                        observe(blk)
                    # One at a time, so that an instruction that reads the clock (IN, OUT,
                    # RDTSC, MMIO) sees exactly the instructions retired before it.
                    # A store into this block's page ends it after the storing instruction
                    # (self-modifying code, see invalidate_code_page).
                    self.running_page = blk.pages[0]
                    ops = blk.ops
                    if watch:
                        if self.run_watched(blk, room):
                            self.running_page = -1
                            return
                    elif blk.n <= room:
                        for k, (ip, fn) in enumerate(ops):
                            fn()
                            self.icount += 1
                            if self.code_modified:
                                self.code_modified = False
                                if k + 1 < blk.n:
                                    self.eip = ops[k + 1][0]
                                    break
                        else:
                            if blk.fallthrough is not None:
                                self.eip = blk.fallthrough
                    else:
                        # Only the first ``room`` instructions: none of them is the block's
                        # control transfer (that is always its last), so EIP is the next one's.
                        for k in range(room):
                            ip, fn = ops[k]
                            fn()
                            self.icount += 1
                            if self.code_modified:
                                self.code_modified = False
                                room = k + 1
                                break
                        self.eip = ops[room][0]
                    self.running_page = -1
            except CpuFault as fault:
                self.running_page = -1
                self.code_modified = False
                if gen is not None:
                    # The generated function stored the state of the faulting instruction.
                    idx = self.fault_index
                    self.icount += idx
                    self.eip = blk.ops[idx][0]
                    if fault is CODE_MODIFIED:     # not a fault: decode afresh from idx
                        quiet = False
                        continue
                elif ip is not None:
                    # The instructions before the faulting one are retired (and counted);
                    # restart it.
                    self.eip = ip
                if fault.__class__ is ExitFault:
                    self.stop = fault.exit       # an intercepted instruction: not executed
                    return
                self.raise_exception(fault.vector, fault.error_code)
                end -= 1        # a delivery is a step of the budget (a fault loop ends too)
                self.rep_end = end
                if self.stop is not None or self.exit_code is not None:
                    return
                quiet = False
                continue
            if self.halted or self.exit_code is not None or self.stop is not None or self.inhibit_irq \
                    or self.resched:
                return
            if self.eflags_rest & IF and (self.intc is not None and self.intc.interrupt_pending()
                                          or ic.interrupt_window_exiting):
                return
            quiet = True

    def deadline_moved(self) -> None:
        self.resched = True

    def _compile_block(self, blk: Block):
        try:
            blk.gen = _blockgen().compile_block(self, blk)
        except Exception as e:  # a generator bug must not take the machine down: keep the closures
            if _blockgen().STRICT:
                raise
            import warnings
            warnings.warn(f"blockgen: block at {blk.eip:#x} not compiled: {e!r}")
            blk.gen = None
        if blk.gen is None:
            blk.hits = -1
        return blk.gen

    def write_control_register(self, n: int, value: int) -> None:
        """MOV to CRn as the instruction performs it, with its checks (for a monitor
        that emulates an intercepted write: SDM Vol. 3A §2.5)."""
        from .ops_sysregs import write_cr
        write_cr(self, n, value)

    # HLT with IF=1 whose wake-up sources are all masked: the timers keep expiring
    # and nothing is ever delivered.  After this many expiries in a row without a
    # deliverable interrupt the CPU is declared halted for good (a real machine
    # would sleep forever; trapvisor stops with a diagnostic instead of hanging).
    IDLE_EXPIRIES_LIMIT = 100_000

    def idle(self) -> bool:
        """HLT: wait for an interrupt.  Returns False if none can ever come.

        With IF=0 only NMI, SMI, INIT or reset could wake the processor
        (SDM Vol. 2 HLT); none of those is modelled, so the machine stops.
        """
        clock = self.clock
        if self.intc is not None and not self.nmi_blocked and self._nmi_latched():
            self.halted = False           # an NMI wakes a halted processor whatever IF says
            self.deliver_nmi()
            return True
        if not self.eflags_rest & IF:
            self.stop = MachineStop("halted forever", "HLT with interrupts disabled (IF=0)")
            return False
        for _ in range(self.IDLE_EXPIRIES_LIMIT):
            if self.intc is not None and self.intc.interrupt_pending():
                self.halted = False
                self.deliver_external_interrupt()
                return True
            if clock is None or not clock.skip_to_next_deadline():
                self.stop = MachineStop(
                    "halted forever", "HLT with no interrupt that could wake the CPU (no timer armed)")
                return False
            clock.run_due()
        self.stop = MachineStop(
            "halted forever", f"HLT: {self.IDLE_EXPIRIES_LIMIT} timer expiries woke nothing "
            "(every interrupt line the timers raise is masked)")
        return False

    def deliver_external_interrupt(self) -> None:
        vector = self.intc.acknowledge()
        if vector is None:
            return
        self.interrupts_delivered += 1
        from .interrupts import deliver_event, raise_exception
        try:
            deliver_event(self, vector, None, kind="external")
        except ExitFault as f:
            self.stop = f.exit
        except CpuFault as f:
            raise_exception(self, f.vector, f.error_code)

    def _nmi_latched(self) -> bool:
        pending = getattr(self.intc, "nmi_pending", None)
        return pending is not None and pending()

    def deliver_nmi(self) -> None:
        """Take the latched NMI: through IDT vector 2 whatever EFLAGS.IF is, then block NMIs
        until the next IRET (SDM Vol. 3A §6.7.1, "Handling Multiple NMIs")."""
        self.intc.acknowledge_nmi()
        self.nmi_blocked = True
        from .constants import NMI
        from .interrupts import deliver_event, raise_exception
        try:
            deliver_event(self, NMI, None, kind="exception")
        except CpuFault as f:
            raise_exception(self, f.vector, f.error_code)

    def raise_exception(self, vector: int, error_code) -> None:
        from .interrupts import raise_exception
        raise_exception(self, vector, error_code)

    # --------------------------------------------------------- diagnostics
    def state_dump(self) -> str:
        r = self.regs
        names = ("EAX", "ECX", "EDX", "EBX", "ESP", "EBP", "ESI", "EDI")
        lines = ["  ".join(f"{n}={v:08x}" for n, v in zip(names[:4], r[:4])),
                 "  ".join(f"{n}={v:08x}" for n, v in zip(names[4:], r[4:])),
                 f"EIP={self.eip:08x}  EFLAGS={self.get_eflags():08x}  CPL={self.cpl}",
                 "  ".join(f"{SEG_NAMES[i]}={self.sel[i]:04x}" for i in range(6)),
                 f"CR0={self.cr0:08x}  CR2={self.cr2:08x}  CR3={self.cr3:08x}  CR4={self.cr4:08x}",
                 f"GDTR={self.gdtr[0]:08x}/{self.gdtr[1]:04x}  IDTR={self.idtr[0]:08x}/{self.idtr[1]:04x}"
                 f"  LDTR={self.ldtr:04x}  TR={self.tr:04x}",
                 f"instructions={self.icount}"]
        return "\n".join(lines)
