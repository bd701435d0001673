"""Instruction-at-a-time execution: the guest's single-step and debug-register
traps, a host debugger's breakpoints, watchpoints and steps, and the one-step
primitive of a monitor's interpreter routines.

A mixin of ``CPU`` (``cpu.py``), as ``memory_access.py`` and ``paging.py``
are: the dispatch loop (``CPU.execute``) runs blocks, and falls back to these
when it must see every instruction.  Rules: SDM Vol. 3A §17.2 (debug
registers: an instruction breakpoint is a fault before the instruction
unless EFLAGS.RF, a data breakpoint a trap after it), §17.3.1.4 (the
single-step trap), §6.8.3 (MOV SS and POP SS hold it for one instruction).
A host debugger's controls (``intercepts.debug_*``, trapvisor/debug) are
invisible to the guest: they end the run with a ``DebugExit`` instead.
"""

from __future__ import annotations

from .constants import CS, TF
from .cpu import Block, CpuFault, ExitFault, MachineStop
from .exits import DebugExit


class Stepping:
    # ----------------------------------------------------- the host debugger
    def debug_controls_changed(self) -> None:
        """Call after setting ``intercepts.debug_*`` (trapvisor/debug): data accesses take
        the checked path (``seg_lin``) while watchpoints are set."""
        self.dbg_watch = tuple(self.intercepts.debug_watchpoints)
        self.update_ac()

    def breakpoint_ahead(self) -> bool:
        """Does the block at EIP hold a debugger breakpoint?  (Its instructions are
        contiguous, so a range check does.)  A block that cannot be fetched is
        stepped, so that its fault is taken there."""
        try:
            blk = self.fetch_block()
        except CpuFault:
            return True
        base = self.base[CS]
        first = (base + blk.ops[0][0]) & 0xFFFFFFFF
        last = (base + blk.ops[-1][0]) & 0xFFFFFFFF
        return any(first <= a <= last for a in self.intercepts.debug_breakpoints)

    def run_watched(self, blk: Block, room: int) -> bool:
        """Run a block's closures (at most ``room``) under the debugger's watchpoints;
        True when one was hit (``self.stop`` is then its DebugExit, EIP after the
        instruction that made the access).  A fault propagates as from the dispatch
        loop, with ``self.eip`` at the faulting instruction."""
        self.dbg_hit = None
        ops = blk.ops
        n = min(blk.n, room)
        for i in range(n):
            ip, fn = ops[i]
            try:
                fn()
            except CpuFault:
                self.eip = ip
                raise
            self.icount += 1
            if self.dbg_hit is not None:
                if i + 1 < blk.n:
                    self.eip = ops[i + 1][0]
                elif blk.fallthrough is not None:
                    self.eip = blk.fallthrough
                self.stop = DebugExit("watchpoint", self.dbg_hit[0], self.dbg_hit[1])
                return True
            if self.code_modified and i + 1 < blk.n:     # self-modifying code: decode afresh
                self.code_modified = False
                self.eip = ops[i + 1][0]
                return False
        if n < blk.n:
            self.eip = ops[n][0]
        elif blk.fallthrough is not None:
            self.eip = blk.fallthrough
        return False

    def debug_step(self) -> None:
        """One instruction under the host debugger's controls: a breakpoint at EIP exits
        before it (unless ``dbg_resume`` names it: passed over once); a watchpoint it hit, or
        single-stepping, exits after it (``self.stop`` = :class:`DebugExit`).  The
        instruction itself runs as ``single_step`` runs it, with the guest's own TF
        and DR0-DR7 semantics, so the guest sees no difference."""
        ic = self.intercepts
        lin = (self.base[CS] + self.eip) & 0xFFFFFFFF
        if lin != self.dbg_resume:
            self.dbg_resume = None
        if lin in ic.debug_breakpoints and lin != self.dbg_resume:
            self.stop = DebugExit("breakpoint", lin)
            return
        self.dbg_hit = None
        self.inhibit_irq = False
        before = self.icount + self.deliveries
        self.single_step()
        if self.icount + self.deliveries != before:
            # Passed over for good once it has run.  An instruction that exited instead (a
            # monitor's hidden page fault) is fetched again and passed over again.
            self.dbg_resume = None
        if self.stop is not None:
            return
        if self.dbg_hit is not None:
            self.stop = DebugExit("watchpoint", self.dbg_hit[0], self.dbg_hit[1])
        elif ic.debug_single_step:
            self.stop = DebugExit("step", (self.base[CS] + self.eip) & 0xFFFFFFFF)


    def single_step(self) -> None:
        """Execute one instruction with debug checks: EFLAGS.TF set (a #DB trap
        after it, SDM Vol. 3A §17.3.1.4) or debug-register breakpoints enabled
        (§17.2: an instruction breakpoint is a #DB fault before the instruction
        unless EFLAGS.RF is set; data breakpoints hit by the instruction give a
        #DB trap after it).  DR6 gets BS and the B0-B3 bits of the hits.

        No single-step trap follows an INT n/INT3/INTO that entered its handler
        (the gate cleared TF on the way in).  After MOV SS or POP SS the trap is
        held for one more instruction (§6.8.3): the next one is stepped with the
        trap still pending, and one #DB follows both.
        """
        from .constants import DB, RF
        if self.bp_exec and not self.eflags_rest & RF:
            lin = (self.base[CS] + self.eip) & 0xFFFFFFFF
            hits = 0
            for n, addr in self.bp_exec:
                if addr == lin:
                    hits |= 1 << n
            if hits:
                self.dr[6] |= hits
                self.raise_exception(DB, None)      # a fault: EIP stays at the instruction
                return
        tf = self.eflags_rest & TF
        rf = self.eflags_rest & RF
        blk = None
        self.ss_shadow = self.sw_int_delivered = False
        self.bp_hits = 0
        self.rep_break = True       # TF and data breakpoints act after each iteration (§17.3.1.4)
        try:
            blk = self.fetch_block()
            ip, fn = blk.ops[0]
            fn()
            self.icount += 1
            if blk.n == 1 and blk.fallthrough is not None:
                self.eip = blk.fallthrough
            elif blk.n > 1:
                self.eip = blk.ops[1][0]
        except CpuFault as fault:
            self.rep_break = False
            if blk is not None:
                self.eip = blk.ops[0][0]
            if fault.__class__ is ExitFault:
                self.stop = fault.exit
                return
            self.raise_exception(fault.vector, fault.error_code)
            return
        self.rep_break = False
        if rf:
            self.eflags_rest &= ~RF        # it suppressed this instruction's breakpoint: spent
        hits = self.bp_hits
        if (self.sw_int_delivered or self.ss_shadow) and not hits:
            return
        if not (tf or hits):
            return
        if self.bp_exec and not self.eflags_rest & RF:
            # An instruction breakpoint at the next instruction is reported in
            # the same #DB (as Bochs and QEMU do); the handler returns with RF.
            lin = (self.base[CS] + self.eip) & 0xFFFFFFFF
            for n, addr in self.bp_exec:
                if addr == lin:
                    hits |= 1 << n
        self.dr[6] |= hits | (0x4000 if tf else 0)   # B0-B3, BS
        self.raise_exception(DB, None)

    def step(self):
        """Execute exactly one instruction, decoded afresh, delivering any fault it raises.

        This is the primitive of a VMM's interpreter routines: the virtual CPU
        performs one guest instruction with the guest's privileges.  Returns the
        exit the intercept controls asked for (and clears it), else None.
        """
        from .registry import JUMP
        from .translate import _raise_ud
        eip = self.eip
        self.rep_end = 0            # one instruction: a REP does one chunk
        try:
            ins = self.translator.decode_one(eip)
            if ins.code == 0:   # iced Code.INVALID
                _raise_ud()
            fn, kind = self.translator.compile(ins)
            fn()
            self.icount += 1
            if kind != JUMP:
                self.eip = ins.next_ip & (0xFFFFFFFF if self.cs32 else 0xFFFF)
        except CpuFault as fault:
            self.eip = eip
            if fault.__class__ is ExitFault:
                return fault.exit
            self.raise_exception(fault.vector, fault.error_code)
        stop = self.stop
        if stop is not None and stop.__class__ is not MachineStop:
            self.stop = None
            return stop
        return None

