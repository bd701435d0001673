"""The bridge to x86: Popek & Goldberg's classifier run on the simulated IA-32 CPU.

``trapvisor theory classify --isa x86`` runs the *same* definitions that
classify the formal machine's ISAs (``trapvisor/theory/definitions.py``,
through ``classifier.py``) on the CPU of the simulated PC
(``trapvisor/machine/cpu``), one instruction form at a time, from sampled
machine states.  It prints which forms are privileged, which are sensitive,
and which are sensitive but not privileged, with a witness for each verdict;
``theory x86 --compare robin-irvine`` puts the last set beside the 17
instructions (18 mnemonics) of Robin and Irvine (USENIX Security 2000).
``--isa x86-strict`` does the same on the CPU variant in which the sensitive
instructions trap outside ring 0.

How the formal notions map onto x86
-----------------------------------

The definitions ask a handful of questions of a machine (``adapter.py``);
this is how each is answered here.  The choices that change a verdict are
*readings*, options of :class:`X86Adapter` and flags of the command line
(``cli.X86_READINGS``); the defaults are named below.

**State S = (E, M, P, R).**  A bridge state (``x86_state.X86State``) is a
whole machine: GDT, LDT, IDT, TSS, page tables, segment registers, control
registers and a 16 KiB *window* of memory that the guest addresses.

* **M, the mode**, is x86's privilege state: the CPL (the RPL of CS and SS,
  so the mode changes the CS and SS selectors too) together with EFLAGS.IOPL,
  which decides for CLI, STI, IN, OUT, INS, OUTS and POPF's IF exactly what M
  decides for a privileged instruction, and which, like M, only the
  supervisor can change.  ``s`` is CPL 0 (with the sampled IOPL); ``u`` is
  CPL 3 (``--user-cpl``) with IOPL 0 (``--user-iopl 0``; ``sampled`` keeps
  the sampled IOPL, reading IOPL as ordinary state).  The other combinations
  are run by the privilege profile (``x86_report``).
* **E, the storage**, is what a program can see and address: the general
  registers, EFLAGS apart from IOPL, the data-segment selectors, and the
  window's bytes (code, data, stack, inner stacks).  EFLAGS.IF is part of E
  by default (``--popf-if behaviour``: POPF's silent IF at CPL 3 is then a
  difference in results); ``--popf-if control`` puts it with M instead.
  Port writes are recorded and count as results.
* **P** is EIP.
* **R, relocation-bounds**, is everything that places and confines the guest
  in the real machine: the segment descriptor caches (base, limit, rights),
  the paging setup (CR0.PG, CR3 and the frames behind the window), the
  descriptor-table registers (GDTR, IDTR, LDTR, TR: where the system tables
  are, and which GDT slots hold the TSS and LDT descriptors) and CR0.

**r (+) x, the same visible storage moved by x** (``counterpart``,
``x86_state.relocate``): the classifier draws x in -3..3; every relocation
gives the machine other system tables (GDT, IDT, TSS, LDT elsewhere, the TSS
and LDT descriptors in other GDT slots) and another CR0.MP/TS/NE -- a
monitor's tables and CR0 are its own -- and moves the window: x = +1 / -1 by
the segment bases (the next / previous 16 KiB slot), x = +2 onto other
physical frames through another page directory (paging turned on if it was
off), x = -2 by switching paging the other way, x = +3 / -3 both by the
segment bases and onto other frames.  The program's view (registers,
selectors, window bytes at the same segment offsets) stays exactly the same.

**Traps.**  An execution *traps* when the CPU exits on an event: the bridge
sets the CPU's intercept controls so that every exception and every software
interrupt exits before IDT delivery, i.e. it is the x86 trap sequence (save EFLAGS, CS, EIP; load a new
CS:EIP from the vector table), and the bridge takes it there.  INT n, INT3
and INTO are therefore traps (``--int-n trap``): they *are* the trap
sequence, invoked on purpose; ``--int-n gate`` lets them go through the IDT
as gate transfers instead.  What the trap sequence does to M is the paper's:
the CPU goes to the supervisor, so a trap taken in user mode changes M.  An
execution that makes the CPU stop the machine (a task switch, IRET with NT
set) is outside the model and is excluded like a memory trap.

**Memory traps**, which the definitions exclude, are traps caused by the
operands rather than by the mode.  The paper's memory traps do not depend on
the mode, and that is how the bridge recognises them: a trap is a memory trap
if the execution's twin in the other mode (same E, P and R) traps too, or if
it is #PF, #SS or #AC (address translation, stack bounds and alignment: the
x86 memory traps proper).  Every other trap counts, as in the paper.

**Control sensitive** = an execution that does not memory-trap and changes
M or R: CPL, IOPL (and IF with ``--popf-if control``), the CS/SS selectors,
any segment descriptor cache, GDTR, IDTR, LDTR, TR, CR0, CR3, CR4 or the
SYSENTER MSRs -- without trapping, or through a trap taken in user mode.

**Behaviour sensitive** = two executions, neither memory-trapping, from
states with the same view whose results (registers, EIP, EFLAGS without
IOPL, data selectors, window bytes through the state's own R, port writes;
for a trapped execution, which trap) differ: *location* sensitive for a pair
related by a relocation above, *mode* sensitive for the s/u twins, and the
pairs related by both.

Instruction forms are enumerated, not listed (``x86_forms.py``); states are
sampled (``x86_state.py``) from a seeded random stream per form, so a run is
reproducible; the privilege profile and the grouping by mnemonic are in
``x86_report.py``, the comparison with Robin and Irvine in ``x86_compare.py``.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from typing import Hashable

from trapvisor.theory import registry
from trapvisor.theory.adapter import ISAAdapter, Outcome
from trapvisor.theory.bridges.x86_forms import Encoding, Form, forms
from trapvisor.theory.bridges.x86_state import (
    Machine, Snapshot, X86State, random_state, relocate, trap_text,
)
from trapvisor.theory.formal_machine import Mode
from trapvisor.machine.cpu.constants import AC_VEC, PF_VEC, SS_VEC

IOPL_BITS, IF_BIT = 0x3000, 0x200

#: Exceptions that are memory traps whatever the mode (address translation,
#: stack-segment bounds, alignment).
MEMORY_VECTORS = frozenset({PF_VEC, SS_VEC, AC_VEC})

DEFAULT_SAMPLES = 16
STATE_POOL = 2048
_POOL: dict[int, X86State] = {}


class _Bounded(OrderedDict):
    """A small LRU dict."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def put(self, key, value):
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.size:
            self.popitem(last=False)


class X86Adapter(ISAAdapter):
    """Answers the classifier's questions with the simulated IA-32 CPU (module docstring)."""

    supports_exhaustive = False
    keep_details = False        # witnesses hold 16 KiB windows; the report keeps one per form
    default_samples = DEFAULT_SAMPLES

    def __init__(self, strict: bool = False, form_filter=None, *, user_iopl: int | None = 0,
                 software_interrupts_trap: bool = True, user_cpl: int = 3, popf_if: str = "behaviour"):
        """``strict``: the CPU variant in which sensitive instructions trap outside ring 0.

        The readings the mapping chooses between (module docstring, and
        ``READINGS``) are options, so that the alternatives can be run and
        compared: ``user_iopl=None`` treats IOPL as ordinary state (u keeps
        the sampled IOPL) instead of part of M; ``software_interrupts_trap=
        False`` lets INT n, INT3 and INTO go through the IDT as gate transfers
        instead of counting them as the trap sequence; ``user_cpl`` is the
        CPL of the user-mode twin (3, or 1 or 2 as a monitor running a guest
        kernel deprivileged might); ``popf_if`` says where EFLAGS.IF belongs:
        "behaviour" -- with the storage E, so POPF's silent IF at CPL 3 is a
        difference in results (mode sensitivity) -- or "control" -- with M,
        so only a change of IF counts (control sensitivity).
        """
        if user_cpl not in (1, 2, 3):
            raise ValueError("user_cpl must be 1, 2 or 3")
        if popf_if not in ("behaviour", "control"):
            raise ValueError("popf_if must be 'behaviour' or 'control'")
        self.strict = strict
        self.user_iopl = user_iopl
        self.software_interrupts_trap = software_interrupts_trap
        self.user_cpl = user_cpl
        self.popf_if = popf_if
        self._if_visible = popf_if == "behaviour"
        self._key_mask = ~(IOPL_BITS if self._if_visible else IOPL_BITS | IF_BIT)
        self.name = "x86-strict" if strict else "x86"
        self.description = (
            "IA-32, the simulated PC's CPU" + (", strict variant (sensitive instructions trap outside ring 0)"
                                               if strict else "")
            + ": one verdict per instruction form, from sampled machine states")
        self.machine = Machine(strict, software_interrupts_trap)
        self.forms: list[Form] = [f for f in forms() if form_filter is None or form_filter(f)]
        self._resources = _Bounded(16384)   # state -> resources as loaded
        self._runs = _Bounded(64)           # (encoding, state) -> what Machine.run returned
        self.executions = 0
        # Per form, a few (encoding, state) that ran without trapping in
        # supervisor mode: where the privilege profile looks (x86_report).
        self.ran_in_s: dict[int, list] = {}
        self._keep: dict[int, random.Random] = {}   # per form, so the choice does not depend on other forms

    @property
    def options(self) -> dict:
        """The readings this adapter runs with, as ``X86Adapter(**options)`` takes them."""
        return {"user_iopl": self.user_iopl, "software_interrupts_trap": self.software_interrupts_trap,
                "user_cpl": self.user_cpl, "popf_if": self.popf_if}

    # -- instructions -----------------------------------------------------
    def opcodes(self):
        return list(self.forms)

    def opcode_name(self, form: Form) -> str:
        return form.name

    def opcode_doc(self, form: Form) -> str:
        return f"{form.opcode}; {len(form.encodings)} encoding(s): " + ", ".join(map(str, form.encodings[:4])) \
            + (", ..." if len(form.encodings) > 4 else "")

    def instances(self, form, bounds):
        return list(form.encodings)

    def sample_instance(self, form: Form, rng) -> Encoding:
        return rng.choice(form.encodings)

    # -- states -----------------------------------------------------------
    def sample_state(self, rng) -> X86State:
        """A whole machine state, drawn from a pool of ``STATE_POOL`` (``x86_state.random_state``).

        Building a state costs more than running an instruction on it, so the
        states are made once per process, each from its own seed, and every
        form draws its samples from the same pool with its own stream.
        """
        k = rng.randrange(STATE_POOL)
        st = _POOL.get(k)
        if st is None:
            st = _POOL[k] = random_state(random.Random(f"x86 state {k}"))
        return st

    def run(self, instance: Encoding, state: X86State):
        """One execution on the CPU: (after, trap, stop).  Cached: the twins are asked about more than once."""
        key = (instance, state)
        r = self._runs.get(key)
        if r is None:
            want_before = state not in self._resources
            before, after, trap, stop = self.machine.run(state, instance.raw, before=want_before)
            if want_before:
                self._resources.put(state, before.resources())
            r = (after, trap, stop)
            self.executions += 1
            self._runs.put(key, r)
        return r

    def execute(self, instance: Encoding, state: X86State) -> Outcome:
        after, trap, stop = self.run(instance, state)
        if stop is not None:
            return Outcome(state, after, f"machine stop ({stop})", True)
        if trap is None:
            if state.cpl == 0 and not state.tag:
                self._remember(instance, state)
            return Outcome(state, after, None, False)
        return Outcome(state, after, trap_text(trap), self.memory_trap(instance, state, trap))

    def _remember(self, instance: Encoding, state: X86State, keep: int = 6) -> None:
        kept = self.ran_in_s.setdefault(instance.code, [])
        rng = self._keep.setdefault(instance.code, random.Random(instance.code))
        if len(kept) < keep:
            kept.append((instance, state))
        elif rng.random() < 0.2:
            kept[rng.randrange(keep)] = (instance, state)

    def memory_trap(self, instance: Encoding, state: X86State, trap: tuple) -> bool:
        """Whether a trap is independent of the mode, like the paper's memory traps.

        #PF, #SS and #AC always are; any other trap is when the twin in the
        other mode (same E, P, R) traps too.  So a pair of executions counts for
        privilege unless both trap, and a trap that only supervisor mode has
        (loading SS with a ring-3 selector at CPL 0) refutes privilege.
        """
        vector, _, kind = trap
        if kind == "exception" and vector in MEMORY_VECTORS:
            return True
        twin = self.with_mode(state, Mode.U if state.cpl == 0 else Mode.S)
        _, twin_trap, twin_stop = self.run(instance, twin)
        return twin_trap is not None or twin_stop is not None

    def mode(self, state: X86State) -> Mode:
        return Mode.S if state.cpl == 0 else Mode.U

    def with_mode(self, state: X86State, mode: Mode) -> X86State:
        if mode == Mode.S:
            return state.with_privilege("s", 0, state.iopl_s)
        return state.with_privilege("u", self.user_cpl, state.iopl_s if self.user_iopl is None else self.user_iopl)

    def base(self, state: X86State) -> int:
        return state.tag

    def resources(self, state) -> Hashable:
        if isinstance(state, Snapshot):
            return state.resources(if_in_m=not self._if_visible)
        r = self._resources.get(state)
        if r is None:
            cpu = self.machine.load(state, b"\x90")
            r = self.machine.snapshot(cpu, state).resources()
            self._resources.put(state, r)
        return r if not self._if_visible else Snapshot.without_if(r)

    def resources_after(self, outcome: Outcome) -> Hashable:
        """After a trap, the trap sequence has run: the monitor has the CPU at CPL 0 (M = s).

        The bridge takes the trap in the CPU's exception hook, before the IDT
        delivery would change anything, so the recorded state is the one the
        instruction trapped in; what the trap sequence does to M is added
        here.  Nothing else of R is changed by it (the monitor's handler runs
        with the same tables).
        """
        if outcome.trapped:
            r = self.resources(outcome.before)
            return (0,) + tuple(r[1:])
        return self.resources(outcome.after)

    def view_key(self, state: X86State) -> Hashable:
        return (state.regs, state.eip, state.eflags & self._key_mask, state.segs, state.data_hot, state.stack_hot)

    def observe(self, outcome: Outcome) -> Hashable:
        """What the program sees of ``i(S)``; a trapped execution shows only that it trapped, and how."""
        if outcome.trapped:
            return ("trap", outcome.trap)
        return outcome.after.view(if_visible=self._if_visible)

    def counterpart(self, state: X86State, x: int, mode: Mode) -> X86State | None:
        if state.tag:
            return None
        return relocate(state, x)

    def bridge_report(self, *, samples: int | None = None, seed: int = 0, names=None, workers=None):
        """The whole run (``x86_report.run``) with this adapter's readings: what every command reads."""
        from trapvisor.theory.bridges.x86_report import run

        extra = {k: v for k, v in (("names", names), ("workers", workers)) if v is not None}
        return run(strict=self.strict, samples=samples, seed=seed, **extra, **self.options)

    # -- presentation -----------------------------------------------------
    def describe(self, s) -> str:
        if isinstance(s, Snapshot):
            r = s.regs
            return (f"CPL={s.cpl} IOPL={s.iopl} IF={int(bool(s.eflags & 0x200))} CS={s.sel[1]:#06x} "
                    f"SS={s.sel[2]:#06x} DS={s.sel[3]:#06x} EIP={s.eip:#x} EFLAGS={s.eflags:#x} "
                    f"EAX={r[0]:#x} ECX={r[1]:#x} EDX={r[2]:#x} EBX={r[3]:#x} ESP={r[4]:#x} "
                    f"GDTR={s.gdtr[0]:#x} CR0={s.cr[0]:#x}")
        r = s.regs
        return (f"{s.mode}: CPL={s.cpl} IOPL={s.iopl} IF={int(bool(s.eflags & 0x200))} EIP={s.eip:#x} "
                f"EFLAGS={s.eflags:#x} EAX={r[0]:#x} ECX={r[1]:#x} EDX={r[2]:#x} EBX={r[3]:#x} ESP={r[4]:#x} "
                f"DS={s.segs[1]:#06x} | R: {s.R.describe()}")

    def state_json(self, s) -> dict:
        if isinstance(s, Snapshot):
            return {"cpl": s.cpl, "iopl": s.iopl, "eflags": s.eflags, "eip": s.eip, "regs": list(s.regs),
                    "selectors": list(s.sel), "segment_bases": [c[0] for c in s.cache],
                    "gdtr": list(s.gdtr), "idtr": list(s.idtr), "ldtr": s.ldtr[0], "tr": s.tr[0],
                    "cr0": s.cr[0], "cr3": s.cr[2], "cr4": s.cr[3], "ports_written": [list(p) for p in s.ports]}
        R = s.R
        return {"mode": s.mode, "cpl": s.cpl, "iopl": s.iopl, "eflags": s.eflags, "eip": s.eip,
                "regs": list(s.regs), "data_selectors": {"es": s.segs[0], "ds": s.segs[1], "fs": s.segs[2],
                                                         "gs": s.segs[3]},
                "R": {"segment_base": R.seg_base, "paging": R.paging, "frames": R.frame, "cr3": R.cr3,
                      "tables": "AB"[R.tables], "cr0": R.cr0},
                "relocation": s.tag}


def _load(strict: bool):
    def loader():
        return X86Adapter(strict=strict)
    return loader


registry.register("x86", _load(False), "IA-32, the simulated PC's CPU (sampled states, one verdict per form)")
registry.register("x86-strict", _load(True),
                  "IA-32, strict variant: every sensitive instruction traps outside ring 0")

__all__ = ["X86Adapter", "MEMORY_VECTORS", "DEFAULT_SAMPLES"]
