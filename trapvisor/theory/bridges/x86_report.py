"""The x86 classification as a report: runs, privilege profile, table, comparison.

``run()`` classifies every instruction form with the shared classifier
(``classifier.classify`` on an :class:`~trapvisor.theory.bridges.x86.X86Adapter`),
split over a few worker processes (each form's hypothesis search is seeded on
its own, so the verdicts do not depend on the split), and measures each
form's *privilege profile*: on a few sampled states, at every combination of
CPL 0..3 and IOPL 0..3, whether the instruction traps where privilege would
have avoided the trap (the extra mode-like states beside s and u).

The report groups forms by instruction (the SDM's name: PUSHFD is PUSHF,
RETF is RET, INT3 and INTO are INT n) and compares the instructions with at
least one sensitive-but-unprivileged form with the list of Robin and Irvine
(2000).  That list is *data for the comparison only*: nothing in the
derivation reads it.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from trapvisor.theory.classifier import Classification, InstructionVerdict, Witness, classify
from trapvisor.theory.bridges.x86_forms import Form, forms, skipped
from trapvisor.theory.bridges.x86_state import (
    CODE_PAGE, DATA_PAGE, INNER_PAGE, STACK_PAGE, Snapshot, random_state,
)

# Robin, J. S. and Irvine, C. E., "Analysis of the Intel Pentium's Ability to
# Support a Secure Virtual Machine Monitor", USENIX Security 2000: the 17
# sensitive-but-unprivileged instructions, 18 mnemonics
# (../shared/reference/virtualization.md section 2).  The comparison target.
ROBIN_IRVINE = ("SGDT", "SIDT", "SLDT", "SMSW", "PUSHF", "POPF", "LAR", "LSL", "VERR", "VERW",
                "POP", "PUSH", "CALL", "JMP", "INT n", "RET", "STR", "MOV")

# iced mnemonic -> the instruction's name in the SDM (one SDM entry covers them).
SDM_NAME = {"PUSHFD": "PUSHF", "POPFD": "POPF", "IRETD": "IRET", "RETF": "RET", "INT": "INT n",
            "INT3": "INT n", "INTO": "INT n", "INT1": "INT n", "PUSHAD": "PUSHA", "POPAD": "POPA"}

# Why the derived set differs from Robin and Irvine's, per instruction.  A
# difference without an entry here is reported as unexplained.
DIFFERENCES = {
    "IRET": (
        "IRET pops EFLAGS with POPF's rules (IOPL changes only at CPL 0, IF only when CPL <= IOPL) and "
        "reloads CS -- and, returning outward, SS -- from the stack: it changes CPL, IF, IOPL and segment "
        "caches without trapping, from any CPL (control sensitive, and mode sensitive like POPF). It is as "
        "sensitive as POPF and far RET together but not on the published list; trapvisor's strict CPU traps "
        "it for this reason."),
    "SYSENTER": (
        "SYSENTER (Pentium II and later; Robin and Irvine analysed the Pentium, which lacks it) loads CS, SS, "
        "ESP and EIP from MSRs and sets CPL 0 without the trap sequence: from CPL 3 it changes the mode "
        "without trapping. A monitor can only disarm it indirectly (IA32_SYSENTER_CS = 0 makes it #GP; "
        "WRMSR is privileged)."),
    "LDS": "LDS loads DS from a far pointer with exactly MOV Sreg's checks and effect: a new descriptor "
           "in DS's cache (base, limit, rights -- part of R) at any CPL, without trapping. Robin and "
           "Irvine list MOV and POP for segment loads; the far-pointer loads do the same and are missing.",
    "LES": "LES: as LDS, for ES.",
    "LFS": "LFS: as LDS, for FS.",
    "LGS": "LGS: as LDS, for GS.",
    "LSS": "LSS: as LDS, for SS (whose descriptor must match the CPL: a different stack at CPL 0 and 3).",
    "INT n": (
        "Every execution of INT n (and INT3, INTO with OF=1, INT1) traps: it is the x86 trap sequence "
        "itself -- EFLAGS, CS, EIP saved, a new CS:EIP loaded from the IDT -- which the CPU's exception hook "
        "receives before any IDT delivery. So no execution is left to be sensitive, and it traps at CPL 0 too "
        "(vacuously privileged: every pair is excluded). A monitor that owns the IDT gets every INT n; "
        "trapvisor's trap-and-emulate monitor emulates it through the guest's IDT (tests/vmm/"
        "test_x86_holes.py). Robin and Irvine count INT n for its protection check (gate DPL against CPL), "
        "which shows when a guest's own IDT is installed on the real CPU. Read that way -- software "
        "interrupts as ordinary gate transfers, X86Adapter(software_interrupts_trap=False) -- INT n, INT3 "
        "and INTO come out control sensitive and unprivileged, as they say."),
}

# Instructions on both lists, but for a reason worth saying.
AGREEMENTS: dict[str, str] = {}

# Notes on instructions the brief singles out; each states the verdict it
# explains, and the tests hold the classification to it.
NOTES = {
    "CLI": "IOPL-sensitive: traps exactly when CPL > IOPL. IOPL is part of M (like M it decides what traps, "
           "and only the supervisor changes it), and u is CPL 3 with IOPL 0, the mode a monitor runs guests in: "
           "privileged (and control sensitive: it changes IF). Read IOPL as ordinary state instead "
           "(X86Adapter(user_iopl=None)) and CLI/STI become sensitive and unprivileged while PUSHF turns "
           "innocuous: Robin and Irvine's list matches the reading with IOPL in M.",
    "STI": "As CLI.",
    "IN": "Not privileged: the TSS I/O permission bitmap can open a port to CPL 3 (traps when CPL > IOPL, "
          "for some ports). Not sensitive either: port I/O is outside the paper's model and its results do not "
          "depend on M or R; a monitor keeps ports with IOPL and the bitmap of its own TSS.",
    "OUT": "As IN.", "INSB": "As IN.", "INSW": "As IN.", "INSD": "As IN.",
    "OUTSB": "As IN.", "OUTSW": "As IN.", "OUTSD": "As IN.",
    "INT n": "INT imm8, INT3 and INTO (with OF=1) trap in every execution: they are the trap sequence itself. "
             + "So no execution is left to be sensitive and the privilege pairs are all excluded (vacuously "
             + "privileged); a monitor owning the IDT receives them. Robin and Irvine's reason is the gate-DPL "
             + "check; read software interrupts as gate transfers (X86Adapter(software_interrupts_trap=False)) "
             + "and INT imm8, INT3, INTO come out control sensitive and unprivileged.",
    "SYSEXIT": "Privileged (CPL 0 only) and control sensitive: it sets CPL 3, like LPSW.",
    "RDTSC": "Privileged only with CR4.TSD; never sensitive: the model has no clock, and equivalence "
             "exempts timing. It is Theorem 2's business (a VMM without timing dependencies).",
    "CPUID": "Innocuous: its answers do not depend on M or R.",
    "RDMSR": "Privileged; not sensitive (no sampled relocation changes an MSR).",
    "WRMSR": "Privileged; control sensitive when it writes the SYSENTER MSRs.",
    "PUSH": "Only PUSH CS and PUSH SS: the selector pushed carries the CPL (mode sensitive).",
    "POP": "Only POP Sreg: a segment load changes a descriptor cache (R) without trapping.",
    "MOV": "Only the segment-register forms: MOV from CS/SS reveals the CPL, MOV to Sreg loads a descriptor.",
    "CALL": "Only far CALL: it pushes CS (the CPL) and loads CS, through a call gate even into ring 0.",
    "JMP": "Only far JMP: it loads CS with another descriptor.",
    "RET": "Only far RET (RETF): it loads CS, and SS when returning outward.",
}


# ---------------------------------------------------------------------------
# privilege profile


def _profile(adapter, form: Form, states: int, seed: int) -> dict:
    """(cpl, iopl) -> [executions counted, privilege traps] for ``form``.

    The states are ones the classifier saw run without trapping in
    supervisor mode (and, if it saw none, fresh samples).  A privilege trap at
    (cpl, iopl) is a trap that is not a memory trap and that the same state at
    CPL 0 (same IOPL) does not have; executions that trap at CPL 0 too are
    not counted.
    """
    from trapvisor.theory.bridges.x86 import MEMORY_VECTORS

    rng = random.Random(f"{seed}:{form.code}")
    counts = {(c, i): [0, 0] for c in range(4) for i in range(4)}
    m = adapter.machine
    picks = list(adapter.ran_in_s.get(form.code, ()))[:states]
    while len(picks) < states:
        picks.append((rng.choice(form.encodings), random_state(rng)))
    for enc, base in picks:
        for iopl in range(4):
            s0 = base.with_privilege("p", 0, iopl)
            _, _, trap0, stop0 = m.run(s0, enc.raw)
            adapter.executions += 1
            if trap0 is not None or stop0 is not None:
                continue
            counts[(0, iopl)][0] += 1
            for cpl in (1, 2, 3):
                _, _, trap, stop = m.run(base.with_privilege("p", cpl, iopl), enc.raw)
                adapter.executions += 1
                if stop is not None or (trap is not None and trap[2] == "exception" and trap[0] in MEMORY_VECTORS):
                    continue
                counts[(cpl, iopl)][0] += 1
                if trap is not None:
                    counts[(cpl, iopl)][1] += 1
    return counts


_PREDICATES = (("CPL>IOPL", lambda c, i: c > i), ("CPL>0", lambda c, i: c > 0), ("CPL=3", lambda c, i: c == 3))


def profile_rule(counts: dict) -> str:
    """A short description of where a form traps for lack of privilege."""
    seen = {k for k, (n, _) in counts.items() if n}
    some = {k for k, (n, t) in counts.items() if t}
    always = {k for k, (n, t) in counts.items() if n and t == n}
    if not seen:
        return "no run"
    if not some:
        return "never"
    for name, pred in _PREDICATES:
        inside = {k for k in seen if pred(*k)}
        if some <= inside:
            if always == inside:
                return name
            return f"{name}, some states"
    return "mixed"


def profile_grid(counts: dict) -> str:
    """4x4: rows CPL 0..3, columns IOPL 0..3; T always traps, t sometimes, . never, - not run."""
    rows = []
    for c in range(4):
        cells = ""
        for i in range(4):
            n, t = counts[(c, i)]
            cells += "-" if not n else "T" if t == n else "t" if t else "."
        rows.append(cells)
    return "/".join(rows)


# ---------------------------------------------------------------------------
# running


def _work(job):
    strict, opts, names, samples, seed, profile_states = job
    from trapvisor.theory.bridges.x86 import X86Adapter

    wanted = set(names)
    adapter = X86Adapter(strict=strict, form_filter=lambda f: f.name in wanted, **opts)
    c = classify(adapter, samples=samples, seed=seed)
    profiles = {f.name: _profile(adapter, f, profile_states, seed) for f in adapter.forms} if profile_states else {}
    return c.verdicts, adapter.executions, profiles


def _workers(n: int | None, jobs: int) -> int:
    if n is None:
        env = os.environ.get("TRAPVISOR_THEORY_WORKERS")
        n = int(env) if env else min(4, os.cpu_count() or 1)
    return max(1, min(n, jobs))


@dataclass
class GroupRow:
    """One instruction (SDM name) and the verdicts of its forms."""

    name: str
    forms: list[InstructionVerdict]
    profiles: dict = field(default_factory=dict)

    def _any(self, attr):
        return [v for v in self.forms if getattr(v, attr) is not None]

    @property
    def privileged_forms(self):
        """Forms privileged with at least one pair checked (not only vacuously)."""
        return [v for v in self.forms if v.privileged and not v.vacuous]

    @property
    def trapping_forms(self):
        """Forms whose every sampled pair trapped in both modes (privileged only vacuously)."""
        return [v for v in self.forms if v.vacuous]

    @property
    def privileged(self) -> str:
        n, k = len(self.privileged_forms), len(self.forms) - len(self.trapping_forms)
        return "no" if n == 0 else "yes" if n == k else "some"

    @property
    def vacuous(self) -> bool:
        return all(v.vacuous for v in self.forms)

    @property
    def control(self):
        return self._any("control")

    @property
    def location(self):
        return self._any("location")

    @property
    def mode(self):
        return self._any("mode")

    @property
    def sensitive(self) -> bool:
        return any(v.sensitive for v in self.forms)

    @property
    def unprivileged_sensitive(self) -> list[InstructionVerdict]:
        return [v for v in self.forms if v.unprivileged_sensitive is not None]

    @property
    def rule(self) -> str:
        rules = Counter(profile_rule(self.profiles[v.name]) for v in self.forms if v.name in self.profiles)
        if not rules:
            return ""
        return " | ".join(r for r, _ in rules.most_common(2))


@dataclass
class X86Report:
    classification: Classification
    profiles: dict
    workers: int
    options: dict
    groups: list[GroupRow] = field(default_factory=list)

    def __post_init__(self):
        by: dict[str, GroupRow] = {}
        mnemonic = {f.name: f.mnemonic for f in forms()}
        for v in self.classification.verdicts:
            m = mnemonic.get(v.name, v.name.split()[0])
            g = SDM_NAME.get(m, m)
            by.setdefault(g, GroupRow(g, [], self.profiles)).forms.append(v)
        self.groups = sorted(by.values(), key=lambda r: r.name)

    def __getitem__(self, name: str) -> GroupRow:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)

    @property
    def derived(self) -> set[str]:
        """Instructions with at least one sensitive-but-unprivileged form."""
        return {g.name for g in self.groups if g.unprivileged_sensitive}

    @property
    def privileged(self) -> set[str]:
        return {g.name for g in self.groups if g.privileged == "yes"}

    @property
    def sensitive(self) -> set[str]:
        return {g.name for g in self.groups if g.sensitive}

    def comparison(self) -> dict:
        ri = set(ROBIN_IRVINE)
        d = self.derived
        def why(name):
            g = self[name]
            kinds = sorted({k for v in g.unprivileged_sensitive for k, w in
                            (("control", v.control), ("location", v.location), ("mode", v.mode)) if w})
            return {"forms": [v.name for v in g.unprivileged_sensitive], "kinds": kinds,
                    "note": AGREEMENTS.get(name)}

        def missing(name):
            if name in DIFFERENCES:
                return DIFFERENCES[name]
            g = next((g for g in self.groups if g.name == name), None)
            if g is None:
                return "not classified in this run"
            if self.options.get("strict") and g is not None and g.sensitive and not g.unprivileged_sensitive:
                return "the strict CPU traps it outside ring 0: sensitive and privileged"
            return "UNEXPLAINED"

        return {
            "robin_irvine": list(ROBIN_IRVINE),
            "derived": sorted(d),
            "both": {n: why(n) for n in sorted(d & ri)},
            "derived_only": {n: DIFFERENCES.get(n, "UNEXPLAINED") for n in sorted(d - ri)},
            "robin_irvine_only": {n: missing(n) for n in sorted(ri - d)},
        }

    # -- JSON ----------------------------------------------------------------
    def to_json(self) -> dict:
        c = self.classification
        base = c.to_json()
        for entry, v in zip(base["instructions"], c.verdicts):
            p = self.profiles.get(v.name)
            if p is not None:
                entry["privilege_profile"] = {"rule": profile_rule(p), "grid_cpl_rows_iopl_columns": profile_grid(p)}
        base["groups"] = [{
            "instruction": g.name,
            "forms": [v.name for v in g.forms],
            "privileged": g.privileged,
            "always_traps": g.vacuous,
            "forms_that_always_trapped": [v.name for v in g.trapping_forms],
            "control_sensitive": [v.name for v in g.control],
            "location_sensitive": [v.name for v in g.location],
            "mode_sensitive": [v.name for v in g.mode],
            "sensitive_and_unprivileged": [v.name for v in g.unprivileged_sensitive],
            "privilege_profile": g.rule,
            "note": NOTES.get(g.name),
        } for g in self.groups]
        base["comparison"] = self.comparison()
        base["skipped_forms"] = [{"form": s.name, "opcode": s.opcode, "reason": s.reason} for s in skipped()]
        base["workers"] = self.workers
        base["options"] = self.options
        return base

    # -- terminal --------------------------------------------------------------
    def render(self, con, witnesses: bool = True) -> None:
        from rich.markup import escape as esc
        from rich.table import Table

        c = self.classification
        nforms = len(c.verdicts)
        con.print(f"[bold]ISA {esc(c.isa)}[/]  {esc(c.adapter.description)}")
        con.print(f"[bold]{c.method}[/]: {esc(c.scope)}; {nforms} forms of {len(self.groups)} instructions "
                  f"({len(skipped())} forms skipped: x87 and forms without a 32-bit encoding); "
                  f"{c.executions} executions, {c.seconds:.1f} s, {self.workers} worker(s)")
        con.print("[dim]M: s = CPL 0, u = CPL 3 with IOPL 0.  R: segment bases and limits, paging, descriptor "
                  "tables, CR0.  trap = the CPU's exception hook fired (exceptions and INT n).  A 'form' is one "
                  "opcode/operand shape (iced-x86 Code).  Mapping: trapvisor/theory/bridges/x86.py.[/]", soft_wrap=True)
        t = Table(title="Privileged or sensitive instructions (n = forms; (k trap): k forms trapped in both modes "
                        "in every sample)", title_justify="left")
        for col, just in (("instruction", "left"), ("n", "right"), ("privileged", "center"), ("control", "center"),
                          ("location", "center"), ("mode", "center"), ("sensitive & unprivileged forms", "left"),
                          ("traps when", "left"), ("R&I", "center")):
            t.add_column(col, justify=just)
        ri = set(ROBIN_IRVINE)
        innocuous = []
        for g in self.groups:
            if not g.sensitive and g.privileged == "no" and not g.trapping_forms and g.name not in ri:
                innocuous.append(g)
                continue
            n = len(g.forms)

            def cnt(lst):
                return f"[green]{len(lst)}[/]" if lst else "[dim]-[/]"
            priv = {"yes": "[green]yes[/]", "no": "[dim]no[/]", "some": "[yellow]some[/]"}[g.privileged]
            if g.vacuous:
                priv = "[cyan]always traps[/]"
            elif g.trapping_forms:
                priv += f" [cyan]({len(g.trapping_forms)} trap)[/]"
            sbu = g.unprivileged_sensitive
            sbu_text = (f"[red]{len(sbu)}: " + esc("; ".join(_short(v.name, g.name) for v in sbu[:6])
                                                   + (" ..." if len(sbu) > 6 else "")) + "[/]" if sbu else "[dim]-[/]")
            t.add_row(esc(g.name), str(n), priv, cnt(g.control), cnt(g.location), cnt(g.mode), sbu_text,
                      esc(g.rule.replace(", some states", " (some)")), "yes" if g.name in ri else "")
        con.print(t)
        con.print(f"[bold]Innocuous, unprivileged[/] ({len(innocuous)} instructions, "
                  f"{sum(len(g.forms) for g in innocuous)} forms; no witness of sensitivity): "
                  + esc(", ".join(g.name for g in innocuous)), soft_wrap=True)
        cmp = self.comparison()
        con.print()
        con.print(f"[bold]Sensitive but unprivileged, derived[/] ({len(cmp['derived'])}): "
                  + esc(", ".join(cmp["derived"])), soft_wrap=True)
        if cmp["derived"]:
            con.print(f"Theorem 1's condition (sensitive ⊆ privileged) [red]fails[/] on {esc(c.isa)}: "
                      f"{len(cmp['derived'])} instructions have sensitive forms that are not privileged.", soft_wrap=True)
        else:
            con.print(f"Theorem 1's condition (sensitive ⊆ privileged) [green]holds[/] on {esc(c.isa)} "
                      "for every sampled form (not refuted; sampled, not proven).", soft_wrap=True)
        con.print(f"[bold]Robin & Irvine (2000)[/] ({len(ROBIN_IRVINE)} mnemonics): " + esc(", ".join(ROBIN_IRVINE)),
                  soft_wrap=True)
        con.print(f"  in both ({len(cmp['both'])}):")
        for name, w in cmp["both"].items():
            forms_ = "; ".join(_short(f, name) for f in w["forms"][:6]) + (" ..." if len(w["forms"]) > 6 else "")
            con.print(f"    {esc(name)}: {esc(forms_)} ({', '.join(w['kinds'])} sensitive)"
                      + (f" -- [yellow]{esc(w['note'])}[/]" if w["note"] else ""), soft_wrap=True)
        for label, key in (("derived, not on their list", "derived_only"), ("on their list, not derived", "robin_irvine_only")):
            for name, why in cmp[key].items():
                style = "red" if why == "UNEXPLAINED" else "yellow"
                con.print(f"  [{style}]{label}: {esc(name)}[/] -- {esc(why)}", soft_wrap=True)
        con.print()
        con.print("[bold]Notes[/]")
        for g in self.groups:
            if g.name in NOTES:
                con.print(f"  [bold]{esc(g.name)}[/] ({esc(self._verdict_words(g))}): {esc(NOTES[g.name])}", soft_wrap=True)
        if witnesses:
            con.print()
            con.print("[bold]Witnesses[/] (one per instruction; S = a machine state, i(S) its result)")
            for g in self.groups:
                for line in self.witness_lines(g):
                    con.print(esc(line), soft_wrap=True)
        con.print(f"[yellow]{esc(c.caveat)}[/]", soft_wrap=True)

    @staticmethod
    def _verdict_words(g: GroupRow) -> str:
        words = ["always traps" if g.vacuous else {"yes": "privileged", "no": "not privileged",
                                                   "some": "some forms privileged"}[g.privileged]]
        kinds = [k for k, lst in (("control", g.control), ("location", g.location), ("mode", g.mode)) if lst]
        words.append(("sensitive: " + ", ".join(kinds)) if kinds else "no sensitivity found")
        if g.rule:
            words.append(f"traps: {g.rule}")
        return "; ".join(words)

    def witness_lines(self, g: GroupRow) -> list[str]:
        a = self.classification.adapter
        out = []
        sbu = g.unprivileged_sensitive
        if sbu:
            v = sbu[0]
            out.append(f"{g.name}: sensitive and unprivileged ({len(sbu)} of {len(g.forms)} forms, e.g. {v.name})")
            user = v.unprivileged_user_sensitive      # a user-mode witness, if there is one, says the most
            out += _witness(a, user or v.unprivileged_sensitive)
            counter = v.unprivileged_counter.get("user" if user else "sensitive")
            if counter is not None:
                out += _witness(a, counter)
            return out
        if g.sensitive:
            v = next(v for v in g.forms if v.sensitive)
            w = v.control or v.location or v.mode
            out.append(f"{g.name}: sensitive, {'privileged' if v.privileged else 'not privileged'} ({v.name})")
            out += _witness(a, w)
            if v.privileged and v.privileged_witness is not None:
                out += _witness(a, v.privileged_witness, pairs=v.pairs)
            return out
        if g.privileged == "yes" and not g.vacuous:
            v = g.forms[0]
            if v.privileged_witness is not None:
                out.append(f"{g.name}: privileged ({v.name})")
                out += _witness(a, v.privileged_witness, pairs=v.pairs)
        return out


def _short(name: str, group: str | None = None) -> str:
    """A form's name without its group's mnemonic or opcode: 'PUSH CS (o16 0E)' -> 'CS o16'."""
    o16 = "(o16 " in name
    base = name.split(" (")[0]
    first, _, rest = base.partition(" ")
    if group is not None and first == group and rest:
        base = rest
    return base + (" o16" if o16 else "")


# ---------------------------------------------------------------------------
# witness summaries

_REG_NAMES = ("EAX", "ECX", "EDX", "EBX", "ESP", "EBP", "ESI", "EDI")
_SEG_NAMES = ("ES", "CS", "SS", "DS", "FS", "GS")
_RELOC = {1: "window moved up by the segment bases", -1: "window moved down by the segment bases",
          2: "window on other frames (paging)", -2: "paging switched",
          3: "window moved up, on other frames", -3: "window moved down, on other frames"}


def _region(off: int) -> str:
    for base, name in ((INNER_PAGE, "inner stacks"), (STACK_PAGE, "stack"), (DATA_PAGE, "data"), (CODE_PAGE, "code")):
        if off >= base:
            return name
    return "?"


def diff_views(v1, v2, limit: int = 4) -> list[str]:
    regs1, eip1, fl1, sel1, win1, ports1 = v1
    regs2, eip2, fl2, sel2, win2, ports2 = v2
    out = [f"{_REG_NAMES[i]} {a:#x} vs {b:#x}" for i, (a, b) in enumerate(zip(regs1, regs2)) if a != b]
    if eip1 != eip2:
        out.append(f"EIP {eip1:#x} vs {eip2:#x}")
    if fl1 != fl2:
        out.append(f"EFLAGS {fl1:#x} vs {fl2:#x}")
    for n, a, b in zip(("ES", "DS", "FS", "GS"), sel1, sel2):
        if a != b:
            out.append(f"{n} {a:#06x} vs {b:#06x}")
    if win1 != win2:
        offs = sorted({i & ~3 for i in range(len(win1)) if win1[i] != win2[i]})
        for o in offs[:limit]:
            a = int.from_bytes(win1[o:o + 4], "little")
            b = int.from_bytes(win2[o:o + 4], "little")
            out.append(f"memory [{o:#06x}] ({_region(o)}) {a:#010x} vs {b:#010x}")
        if len(offs) > limit:
            out.append(f"... {len(offs) - limit} more dwords")
    if ports1 != ports2:
        out.append(f"port writes {list(ports1)} vs {list(ports2)}")
    return out


def diff_resources(r1, r2) -> list[str]:
    (cpl1, fl1, cs1, ss1, cache1, gdtr1, idtr1, ldtr1, tr1, cr01, cr31, cr41, msr1) = r1
    (cpl2, fl2, cs2, ss2, cache2, gdtr2, idtr2, ldtr2, tr2, cr02, cr32, cr42, msr2) = r2
    out = []
    if cpl1 != cpl2:
        out.append(f"CPL {cpl1} -> {cpl2}")
    if (fl1 ^ fl2) & 0x3000:
        out.append(f"IOPL {(fl1 >> 12) & 3} -> {(fl2 >> 12) & 3}")
    if (fl1 ^ fl2) & 0x200:
        out.append(f"IF {int(bool(fl1 & 0x200))} -> {int(bool(fl2 & 0x200))}")
    if cs1 != cs2:
        out.append(f"CS {cs1:#06x} -> {cs2:#06x}")
    if ss1 != ss2:
        out.append(f"SS {ss1:#06x} -> {ss2:#06x}")
    for n, a, b in zip(_SEG_NAMES, cache1, cache2):
        if a != b:
            out.append(f"{n} cache base/limit/rights {a[0]:#x}/{a[1]:#x}/{a[2]:#x} -> {b[0]:#x}/{b[1]:#x}/{b[2]:#x}")
    for n, a, b in (("GDTR", gdtr1, gdtr2), ("IDTR", idtr1, idtr2), ("LDTR", ldtr1, ldtr2), ("TR", tr1, tr2)):
        if a != b:
            out.append(f"{n} {tuple(hex(x) for x in a)} -> {tuple(hex(x) for x in b)}")
    for n, a, b in (("CR0", cr01, cr02), ("CR3", cr31, cr32), ("CR4", cr41, cr42)):
        if a != b:
            out.append(f"{n} {a:#x} -> {b:#x}")
    if msr1 != msr2:
        out.append(f"SYSENTER MSRs {tuple(hex(x) for x in msr1)} -> {tuple(hex(x) for x in msr2)}")
    return out


def _witness(a, w: Witness, pairs: int | None = None) -> list[str]:
    extra = f" (pairs checked: {pairs})" if pairs is not None else ""
    out = [f"  {w.definition}: {w.instance} -- {w.note}{extra}"]
    ex = w.executions
    for n, o in enumerate(ex, 1):
        tag = (f" [r(+)x, x={o.before.tag:+d}: {_RELOC[o.before.tag]}; other tables and CR0.MP/TS/NE]"
               if o.before.tag else "")
        out.append(f"    S{n} = {a.describe(o.before)}{tag}")
        if o.trap:
            out.append(f"    i(S{n}) traps: {o.trap}")
    if w.definition == "control sensitive" and ex and isinstance(ex[0].after, Snapshot):
        out.append("    changes without trapping: " + "; ".join(diff_resources(a.resources(ex[0].before),
                                                                              ex[0].after.resources())))
    elif w.definition in ("location sensitive", "mode sensitive") and len(ex) == 2:
        out.append("    results differ: " + "; ".join(diff_views(a.observe(ex[0]), a.observe(ex[1]))))
    elif w.definition == "not privileged" and len(ex) == 2 and not ex[1].trapped:
        out.append("    i(S2) in user mode completes without trapping")
    elif w.definition == "privileged" and len(ex) == 2:
        out.append(f"    i(S1) completes in supervisor mode; i(S2) traps in user mode ({ex[1].trap})")
    return out


# ---------------------------------------------------------------------------
# entry points


def _unsettled(v: InstructionVerdict) -> bool:
    """A verdict that rests on nothing yet: every pair excluded (both modes trapped
    each time), or sensitive without a privilege verdict for the same encoding."""
    return v.vacuous or (v.sensitive and v.unprivileged_sensitive is None and not v.privileged)


def _classify(strict, adapter_options, names, samples, seed, profile_states, workers):
    n = _workers(workers, len(names))
    # Interleave so that every worker gets a share of the expensive forms.
    jobs = [(strict, adapter_options, names[i::n], samples, seed, profile_states) for i in range(n)]
    if n == 1:
        results = [_work(jobs[0])]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
        with ProcessPoolExecutor(max_workers=n, mp_context=ctx) as pool:
            results = list(pool.map(_work, jobs))
    verdicts, profiles, executions = {}, {}, 0
    for vs, ex, prof in results:
        executions += ex
        profiles.update(prof)
        verdicts.update((v.name, v) for v in vs)
    return verdicts, profiles, executions, n


def run(*, strict: bool = False, samples: int | None = None, seed: int = 0, workers: int | None = None,
        names=None, profile_states: int = 5, escalate: int = 4, **adapter_options) -> X86Report:
    """Classify every form (or those in ``names``) and build the report.

    Forms whose verdict is unsettled after ``samples`` states -- every pair
    excluded because both modes trapped, or sensitive with no privilege
    verdict for the same encoding -- get a second search with ``escalate``
    times as many states (seed + 1), which replaces the first.
    """
    from trapvisor.theory.bridges.x86 import DEFAULT_SAMPLES, X86Adapter

    samples = samples or DEFAULT_SAMPLES
    wanted = None if names is None else set(names)
    all_names = [f.name for f in forms() if wanted is None or f.name in wanted]
    t0 = time.perf_counter()
    by_name, profiles, executions, n = _classify(strict, adapter_options, all_names, samples, seed,
                                                 profile_states, workers)
    again = [nm for nm in all_names if nm in by_name and _unsettled(by_name[nm])] if escalate > 1 else []
    if again:
        more, prof2, ex2, _ = _classify(strict, adapter_options, again, samples * escalate, seed + 1,
                                        profile_states, workers)
        by_name.update(more)
        profiles.update(prof2)
        executions += ex2
    seconds = time.perf_counter() - t0
    verdicts = [by_name[nm] for nm in all_names if nm in by_name]
    adapter = X86Adapter(strict=strict, form_filter=lambda f: False, **adapter_options)
    adapter.forms = [f for f in forms() if f.name in by_name]
    scope = f"hypothesis search, {samples} sampled states per form (seed {seed})"
    if again:
        scope += f"; {len(again)} unsettled forms searched again with {samples * escalate} (seed {seed + 1})"
    caveat = ("Sampled: every 'yes' for a sensitivity comes with a witness, but a 'no' only means no witness was "
              "found -- absence is not proof. 'privileged' means no counterexample was found.")
    c = Classification(adapter.name, "sampled", scope,
                       {"samples_per_form": samples, "seed": seed, "escalated_forms": again,
                        "escalated_samples": samples * escalate if again else 0},
                       caveat, verdicts, executions, seconds, adapter)
    return X86Report(c, profiles, n, dict(adapter_options, strict=strict))


def command(args, con) -> int:
    """``trapvisor theory classify --isa x86|x86-strict`` (called by the theory CLI)."""
    import json

    from trapvisor.theory.errors import TheoryError

    if args.samples is not None and args.samples < 1:
        raise TheoryError("--samples must be at least 1")
    report = run(strict=args.isa == "x86-strict", samples=args.samples, seed=args.seed)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
        return 0
    report.render(con, witnesses=not args.no_witnesses)
    return 0
