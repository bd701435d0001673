"""``bt``: binary translation of the guest kernel, VMware's technique on the standard x86.

Adams and Agesen (ASPLOS 2006, §3) describe how VMware ran unmodified guests
on an x86 that Popek and Goldberg's condition does not hold for: guest user
code runs directly, and guest kernel code runs from a *translation cache*,
where every sensitive instruction has been replaced by code that does the
right thing on the virtual CPU.  This technique is that monitor:

* the machinery of ``trap-emulate`` stays -- ring compression (the guest
  kernel at host ring 1), shadow page tables with tracing, the shadow GDT,
  interpreter routines on the virtual CPU, the VM's own devices;
* guest code at virtual CPL 0 never runs directly: the CPU's code fence
  (``intercepts.code_fence``) lets the host fetch at CPL < 3 only inside the
  translation cache, and the monitor enters the cache at the translation of
  the guest's EIP (``translator.py`` translates a unit on first use);
* while translated code runs, CS is the monitor's execute-only code segment
  and GS its virtual-CPU data segment (``tcache.py``); the guest's CS and GS
  are kept on the side and put back whenever the monitor takes over;
* callouts (``callouts.py``) run the sensitive instructions on the virtual
  CPU; a fault inside the cache is mapped back to the guest EIP of the
  instruction that took it, so that the guest sees exactly its own state
  (precise exceptions, §3.1);
* stores into guest frames that hold translated code are traced by the
  shadow page tables, and drop the units translated from them (coherence);
* an instruction that keeps taking tracing faults (page-table stores) is
  retranslated as a callout that does the store and updates the shadow
  without a fault: adaptive binary translation (§3.2).
"""

from __future__ import annotations

from collections import Counter

import iced_x86 as iced

from ....events import TRAP
from ....machine.cpu import MachineStop
from ....machine.cpu.constants import CR0_PG, CS, IF, PF_VEC, PDE_PS, CR4_PSE
from ....machine.cpu.cpu import CpuFault
from ....machine.cpu.exits import CodeFenceExit, ExceptionExit
from ...interpreter import SystemState, interpret, pull, push
from ...monitor import Host, RunOptions, register
from ...shadow_descriptors import guest_cpl
from ...shadow_paging import CODE_TAG, FILLED, REFLECTED
from ..trap_emulate import TrapEmulate
from . import callouts
from .tcache import (
    DEFAULT_TCACHE_SIZE, TC_CS_ATTR, TC_CS_SELECTOR, VCPU_GS_ATTR, VCPU_GS_SELECTOR,
    TranslationCache,
)
from .translator import Translator, Untranslatable

GS = 5
_R = iced.Register
_GPR32 = {_R.EAX: 0, _R.ECX: 1, _R.EDX: 2, _R.EBX: 3, _R.ESP: 4, _R.EBP: 5, _R.ESI: 6, _R.EDI: 7}
_SEGS = {_R.ES: 0, _R.CS: 1, _R.SS: 2, _R.DS: 3, _R.FS: 4, _R.GS: 5}
UD_VEC = 6
# Tracing faults one instruction of translated code takes before it is retranslated
# as a callout (adaptive BT).  A&A 2006 §3.2 adapt after a few faults; 4 here.
ADAPT_AFTER = 4


@register
class BinaryTranslation(TrapEmulate):
    name = "bt"
    summary = ("binary translation: guest kernel code runs from a translation cache at ring 1, "
               "sensitive instructions rewritten; user code direct (VMware's technique)")
    honours = frozenset({"shadow_cache", "trace_file", "audit", "disk", "modules"})
    time_sliced = False
    tcache_size = DEFAULT_TCACHE_SIZE
    max_unit = None

    def __init__(self, options: RunOptions, host: Host | None = None):
        self.tc = None
        self.tview = False           # the host CPU runs translated code
        super().__init__(options, host)
        vm, vcpu, host = self.vm, self.vm.vcpu, self.host
        self.tc = TranslationCache(self.alloc, self.tcache_size)
        kwargs = {} if self.max_unit is None else {"max_unit": self.max_unit}
        self.translator = Translator(vcpu, vm.partition.size, self.tc, **kwargs)
        self.base_page = vm.partition.base >> 12
        self.saved = None            # the guest's CS and GS caches while translated code runs
        self.stale = False           # units dropped while the host ran in the cache
        self.callout_counts: Counter = Counter()
        self.lookups = self.lookup_hits = 0
        self.chains = 0
        self.adapt_faults: Counter = Counter()
        self.adaptations = 0
        self.code_stores = 0
        self.kernel_direct = 0        # guest instructions run in the translation cache
        self.user_direct = 0          # ... run directly, untranslated (guest CPL 3)
        host.hooks.code_written = self._code_written
        self.set_intercepts()
        self.dispatcher.arms[CodeFenceExit] = self._fenced

    def set_intercepts(self) -> None:
        super().set_intercepts()
        if self.tc is not None:
            # No guest code runs at CPL < 3 outside the translation cache.
            self.host.intercepts.code_fence = (self.tc.lo, self.tc.hi)

    # -- entering and leaving the translation cache ---------------------------------
    def _entry(self, eip: int):
        """(unit, tcache address) of the translation of guest ``eip``, translated now
        if there is none (may raise the guest's fetch fault, or Untranslatable)."""
        self.lookups += 1
        found = self.tc.lookup(eip)
        if found is not None:
            self.lookup_hits += 1
            return found
        unit = self.translator.translate(eip)
        self._trace_frames(unit)
        self.charge(TRAP, "translate unit", self.costs.bt_translate_instruction * unit.guest_count,
                    eip, log=False)
        return unit, unit.host

    def _trace_frames(self, unit) -> None:
        """Write-protect the guest frames a unit came from (coherence), and mark them so
        that a store by the virtual CPU or a device reaches ``_code_written`` too."""
        cp = self.host.code_pages
        for frame in unit.frames:
            self.shadow.trace(frame << 12, CODE_TAG)
            cp[self.base_page + frame] = 1

    def _translatable(self) -> bool:
        vcpu = self.vm.vcpu
        return vcpu.cpl == 0 and vcpu.base[CS] == 0 and vcpu.cs32 and bool(self.host.attr[CS] & 0x80)

    def _enter_cache(self) -> bool:
        """Guest view -> the host runs the translation of the guest's EIP.  False if the
        instruction there cannot be translated (the caller interprets it)."""
        host, vcpu, tc = self.host, self.vm.vcpu, self.tc
        try:
            at = self._entry(vcpu.eip)[1]
        except (CpuFault, Untranslatable):
            return False
        self.saved = (host.sel[CS], host.base[CS], host.limit[CS], host.attr[CS],
                      host.sel[GS], host.base[GS], host.limit[GS], host.attr[GS])
        host.set_segment_cache(CS, TC_CS_SELECTOR, 0, 0xFFFFFFFF, TC_CS_ATTR)
        host.set_segment_cache(GS, VCPU_GS_SELECTOR, tc.vcpu_lin, 0xFFF, VCPU_GS_ATTR)
        host.eip = at
        tc.write_vif(vcpu.eflags_rest & IF)
        self.tview = True
        self.stale = False
        return True

    def _sync_vif(self) -> None:
        vcpu = self.vm.vcpu
        vcpu.eflags_rest = (vcpu.eflags_rest & ~IF) | (self.tc.read_vif() & IF)

    def _leave_cache(self, guest: int | None = None) -> None:
        """The host's state back in the guest's terms: the guest EIP of the instruction
        the host stopped at, the guest's CS and GS, the virtual IF from memory."""
        if not self.tview:
            return
        host = self.host
        if guest is None:
            guest = self.tc.guest_at.get(host.eip)
            if guest is None:
                raise MachineStop("monitor error", f"host EIP {host.eip:#x} maps to no guest instruction")
        s = self.saved
        host.set_segment_cache(CS, s[0], s[1], s[2], s[3])
        host.set_segment_cache(GS, s[4], s[5], s[6], s[7])
        host.eip = guest
        self._sync_vif()
        self.tview = False

    def pull_guest(self) -> None:
        self._leave_cache()
        pull(self.host, self.vm.vcpu)

    def guest_eip(self) -> int:
        """The guest's EIP now, whichever view the host is in (never a tcache address)."""
        if self.tview:
            return self.tc.guest_at.get(self.host.eip, self.host.eip)
        return self.host.eip

    def leave(self) -> None:
        self._leave_cache()
        super().leave()

    # -- coherence --------------------------------------------------------------------
    def _code_written(self, host_page: int) -> None:
        """A store by the virtual CPU or a device into a frame holding translated code."""
        frame = host_page - self.base_page
        if frame in self.tc.by_frame:
            self.code_stores += 1
            self.tc.invalidate_frame(frame)
            if self.tview:
                self.stale = True

    def _code_store(self, frame: int) -> None:
        """A traced store into translated code (host #PF): drop its units, stop tracing."""
        self.code_stores += 1
        self.tc.invalidate_frame(frame >> 12)
        self.shadow.untrace(frame, CODE_TAG)

    def _peek_frame(self, lin: int):
        """The guest frame ``lin`` maps to now (no A/D bits set, no fault), or None."""
        vcpu = self.vm.vcpu
        if not vcpu.cr0 & CR0_PG:
            return lin >> 12
        pde = vcpu.phys_read32((vcpu.cr3 & 0xFFFFF000) + 4 * (lin >> 22))
        if not pde & 1:
            return None
        if pde & PDE_PS and vcpu.cr4 & CR4_PSE:
            return ((pde & 0xFFC00000) | (lin & 0x3FF000)) >> 12
        pte = vcpu.phys_read32((pde & 0xFFFFF000) + 4 * ((lin >> 12) & 0x3FF))
        return pte >> 12 if pte & 1 else None

    def _remapped(self) -> None:
        """The guest's mappings may have changed (CR3 load, paging mode, INVLPG, a
        page-table store): drop units whose code pages no longer map the frames they
        were translated from (translations are keyed by linear address)."""
        for page, (frame, units) in list(self.tc.by_page.items()):
            try:
                now = self._peek_frame(page << 12)
            except CpuFault:
                now = None
            if now != frame:
                for unit in list(units):
                    self.tc.invalidate(unit)

    def _guest_invlpg(self, lin) -> None:
        super()._guest_invlpg(lin)
        self._remapped()

    def after_interpret(self, before) -> None:
        super().after_interpret(before)
        vcpu = self.vm.vcpu
        if vcpu.cr3 != before.cr3 or vcpu.cr0 != before.cr0 or vcpu.cr4 != before.cr4:
            self._remapped()

    # -- the dispatcher's arms ----------------------------------------------------------
    def _fenced(self, exit: CodeFenceExit):
        if self.tview:
            return MachineStop("monitor error", f"translated code left the translation cache "
                                                f"for {exit.eip:#x}")
        return None        # guest view at CPL < 3: the run loop enters the cache

    def on_exception(self, exit: ExceptionExit):
        host, vcpu = self.host, self.vm.vcpu
        if self.tview and exit.kind == "exception" and exit.vector == UD_VEC:
            c = self.tc.callouts.get(host.eip)
            if c is not None:
                return callouts.handle(self, c)
        if exit.kind == "exception" and exit.vector == PF_VEC:
            return self._page_fault(exit)
        self._leave_cache()
        return super().on_exception(exit)

    def _page_fault(self, exit: ExceptionExit):
        host, vcpu, costs, shadow = self.host, self.vm.vcpu, self.costs, self.shadow
        vcpu.set_cpl(guest_cpl(host.cpl, vcpu.cpl))
        lin = host.cr2
        write = bool(exit.error_code & 2)
        outcome = shadow.handle_fault(lin, write)
        if outcome == FILLED:
            self.charge(TRAP, "#PF hidden (shadow fill)", costs.trap_roundtrip + costs.shadow_fill,
                        self.guest_eip(), detail={"address": lin})
            return None
        in_cache = self.tview
        self.pull_guest()
        if outcome == REFLECTED:
            vcpu.cr2 = lin
            vcpu.raise_exception(PF_VEC, shadow.guest_error)
            self.charge(TRAP, "#PF reflected to guest", costs.trap_roundtrip + costs.interpreter_routine,
                        vcpu.eip, detail={"address": lin})
        else:
            gpa = shadow.last_gpa
            tags = shadow.traced.get(gpa & ~0xFFF, ()) if write and gpa is not None else ()
            code = CODE_TAG in tags
            tables = any(t != CODE_TAG for t in tags)
            if code:
                self._code_store(gpa & ~0xFFF)
            if tables and in_cache:
                self._count_tracing_fault(vcpu.eip)
            self.interpret("#PF " + ("store into translated code" if code and not tables else
                                     "traced store" if tables else "MMIO/emulated access"))
            if tables:
                shadow.traced_write(gpa)
                self.extra_cycles += costs.shadow_update
                self._remapped()
        self.inject_pending()
        push(vcpu, host)
        if vcpu.inhibit_irq:
            self.shadow_at = host.icount
        return None

    def _count_tracing_fault(self, eip: int) -> None:
        """Adaptive BT: an instruction of translated code that keeps storing into traced
        page tables is retranslated as a callout (A&A 2006 §3.2)."""
        self.adapt_faults[eip] += 1
        if self.adapt_faults[eip] == ADAPT_AFTER and eip not in self.translator.adapted:
            self.translator.adapted.add(eip)
            self.adaptations += 1
            have = self.tc.by_page.get(eip >> 12)
            for unit in list(have[1]) if have else ():
                if any(row.guest == eip for row in unit.rows):
                    self.tc.invalidate(unit)

    # -- callouts -----------------------------------------------------------------------
    def interpret_callout(self, c) -> None:
        """Execute the guest instruction a callout stands for on the virtual CPU."""
        vcpu = self.vm.vcpu
        before = SystemState(vcpu)
        eip, icount = vcpu.eip, vcpu.icount
        stores = self._store_targets() if eip in self.translator.adapted else ()
        ins, mnemonic = interpret(vcpu)
        self.interpreted_count += vcpu.icount - icount
        self.charge(TRAP, f"bt callout: {c.reason}: {mnemonic}", self.costs.bt_callout, eip, ins)
        self.after_interpret(before)
        # An adapted store: what the tracing fault would have propagated, without the fault.
        for gpa in stores:
            tags = self.shadow.traced.get(gpa & ~0xFFF, ())
            if any(t != CODE_TAG for t in tags):
                self.shadow.traced_write(gpa)
                self.extra_cycles += self.costs.shadow_update
                self._remapped()

    def _store_targets(self) -> set:
        """Guest-physical addresses (first and last byte) of the memory operand of the
        instruction at the virtual EIP, as it is about to execute."""
        vcpu = self.vm.vcpu
        try:
            ins = vcpu.translator.decode_one(vcpu.eip)
        except CpuFault:
            return set()
        out = set()
        for i in range(ins.op_count):
            if ins.op_kind(i) != iced.OpKind.MEMORY:
                continue
            ea = ins.memory_displacement
            if ins.memory_base != iced.Register.NONE:
                ea += vcpu.regs[_GPR32[ins.memory_base]]
            if ins.memory_index != iced.Register.NONE:
                ea += vcpu.regs[_GPR32[ins.memory_index]] * ins.memory_index_scale
            lin0 = (vcpu.base[_SEGS[ins.memory_segment]] + ea) & 0xFFFFFFFF
            for lin in (lin0, (lin0 + 3) & 0xFFFFFFFF):
                frame = self._peek_frame(lin)
                if frame is not None:
                    out.add((frame << 12) | (lin & 0xFFF))
        return out

    # -- the run loop -------------------------------------------------------------------
    def _interpret_step(self, why: str) -> None:
        """One guest instruction at CPL < 3 that cannot run from the cache, interpreted."""
        self.interpret(why)
        self.inject_pending()
        push(self.vm.vcpu, self.host)
        self.vm.clock.run_due()

    def in_cache(self) -> bool:
        return self.tview

    def before_host_run(self) -> bool:
        """Called by the run loop right before the host CPU runs (the guest is at an
        instruction boundary).  Returns False if it interpreted an instruction instead
        (the loop goes round again)."""
        vcpu = self.vm.vcpu
        if self.tview:
            if not self.stale:
                self.tc.write_vif(vcpu.eflags_rest & IF)
                return True
            self.pull_guest()
        if vcpu.cpl == 3:
            return True
        if self._translatable() and self._enter_cache():
            return True
        self._interpret_step("kernel code not translatable")
        return False

    def after_host_run(self, ran: int, was_tview: bool) -> None:
        if was_tview:
            self.kernel_direct += ran
            if self.tview:
                self._sync_vif()
        else:
            self.user_direct += ran

    # -- report -------------------------------------------------------------------------
    def statistics(self) -> dict:
        tc, tr = self.tc, self.translator
        emulated = self.vm.vcpu.icount
        total = self.kernel_direct + self.user_direct + emulated
        return {
            "units translated": tc.units_translated,
            "guest instructions translated": tr.guest_instructions,
            "of which IDENT": tr.ident_instructions,
            "tcache bytes": tc.used(), "tcache size": tc.size, "tcache bytes emitted": tc.bytes_emitted,
            "tcache flushes": tc.flushes,
            "lookups": self.lookups, "lookup hits": self.lookup_hits,
            "hit rate": self.lookup_hits / self.lookups if self.lookups else 0.0,
            "chains patched": self.chains,
            "invalidations": tc.invalidations, "stores into translated code": self.code_stores,
            "adaptations": self.adaptations,
            "callouts": dict(self.callout_counts.most_common()),
            "executed in tcache": self.kernel_direct, "executed direct (user)": self.user_direct,
            "emulated": emulated,
            "share tcache": self.kernel_direct / total if total else 0.0,
            "share direct": self.user_direct / total if total else 0.0,
            "share emulated": emulated / total if total else 0.0,
        }

    def result(self):
        result = super().result()
        s = self.statistics()
        calls = ", ".join(f"{k} {v:,}" for k, v in s["callouts"].items()) or "none"
        result.notes.append(
            f"binary translation: {s['units translated']:,} units translated "
            f"({s['guest instructions translated']:,} guest instructions, "
            f"{s['of which IDENT'] / max(1, s['guest instructions translated']):.0%} IDENT); "
            f"tcache {s['tcache bytes']:,} of {s['tcache size']:,} bytes, {s['tcache flushes']} flushes; "
            f"hit rate {s['hit rate']:.1%} of {s['lookups']:,} lookups; {s['chains patched']:,} chains patched; "
            f"{s['invalidations']:,} invalidations ({s['stores into translated code']:,} stores into "
            f"translated code); {s['adaptations']} adaptations")
        result.notes.append(f"bt callouts by reason: {calls}")
        result.notes.append(
            f"guest instructions: {s['share tcache']:.1%} translated (run in the tcache), "
            f"{s['share direct']:.1%} direct (user, untranslated), {s['share emulated']:.1%} emulated")
        result.bt = s
        return result
