"""The x86 classification as a report: the run, the privilege profile, the tables.

``run()`` classifies every instruction form with the shared classifier
(``classifier.classify`` on an :class:`~trapvisor.theory.bridges.x86.X86Adapter`),
split over a few worker processes (each form's sample stream is seeded by
its name, so the verdicts do not depend on the split), searches the forms
whose verdict is unsettled again with more states, and measures the
*privilege profile* of every privileged or sensitive form: on a few states,
at every combination of CPL 0..3 and IOPL 0..3, whether the instruction
traps where privilege would have avoided the trap.

The report groups forms by instruction (the SDM's name: PUSHFD is PUSHF,
RETF is RET, INT3 and INTO are INT n).  ``classify``, ``theorems``,
``explain`` and ``x86 --compare robin-irvine`` all read the same report, so
they cannot disagree about an instruction.  The comparison with Robin and
Irvine is in ``x86_compare.py``; witnesses in words in ``x86_witness.py``.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from trapvisor.theory.bridges import x86_compare
from trapvisor.theory.bridges.x86_compare import ROBIN_IRVINE_NAMES, SDM_NAME
from trapvisor.theory.bridges.x86_forms import Form, forms, skipped
from trapvisor.theory.bridges.x86_state import random_state
from trapvisor.theory.bridges.x86_witness import _short, witness_lines
from trapvisor.theory.classifier import SAMPLED_CAVEAT, Classification, InstructionVerdict, classify
from trapvisor.theory.render import Table

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
            _, _, trap0, stop0 = m.run(s0, enc.raw, before=False)
            adapter.executions += 1
            if trap0 is not None or stop0 is not None:
                continue
            counts[(0, iopl)][0] += 1
            for cpl in (1, 2, 3):
                _, _, trap, stop = m.run(base.with_privilege("p", cpl, iopl), enc.raw, before=False)
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
    # The profile says where a form traps for lack of privilege; a form that
    # is neither privileged nor sensitive never trapped in user mode where
    # supervisor mode did not (that trap would have made it control
    # sensitive), so only the others are profiled.
    wanted_profile = {v.name for v in c.verdicts if v.privileged or v.sensitive}
    profiles = {f.name: _profile(adapter, f, profile_states, seed) for f in adapter.forms
                if f.name in wanted_profile} if profile_states else {}
    return c.verdicts, adapter.executions, profiles


def _workers(n: int | None, jobs: int) -> int:
    if n is None:
        env = os.environ.get("TRAPVISOR_THEORY_WORKERS")
        n = int(env) if env and env.isdigit() else min(4, os.cpu_count() or 1)
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

    @property
    def row_kind(self) -> str:
        """Where the group goes in the table: 'shown' (privileged, sensitive or trapping) or 'innocuous'."""
        return "innocuous" if not self.sensitive and self.privileged == "no" and not self.trapping_forms \
            else "shown"


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

    def find(self, name: str):
        """An instruction (SDM name) or one form, case-insensitively; None if neither."""
        key = name.strip().upper()
        for g in self.groups:
            if g.name.upper() == key:
                return g
        for v in self.classification.verdicts:
            if v.name.upper() == key:
                return v
        return None

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

    def comparison(self) -> list[x86_compare.Row]:
        return x86_compare.compare(self)

    # -- JSON ----------------------------------------------------------------
    def to_json(self) -> dict:
        c = self.classification
        base = c.to_json()
        for entry, v in zip(base["instructions"], c.verdicts):
            p = self.profiles.get(v.name)
            entry["privilege_profile"] = ({"rule": profile_rule(p), "grid_cpl_rows_iopl_columns": profile_grid(p)}
                                          if p is not None else None)
        shown, withheld = x86_compare.notes(self)
        note = {n: t for n, _, t in shown}
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
            "note": note.get(g.name),
        } for g in self.groups]
        base["comparison"] = [r.to_json() for r in self.comparison()]
        base["derived"] = sorted(self.derived)
        base["notes_withheld"] = [{"instruction": n, "note": t} for n, t in withheld]
        base["skipped_forms"] = [{"form": s.name, "opcode": s.opcode, "reason": s.reason} for s in skipped()]
        base["workers"] = self.workers
        base["options"] = self.options
        return base

    # -- tables ----------------------------------------------------------------
    def tables(self) -> list[Table]:
        """The classification table (privileged or sensitive instructions) and the innocuous ones."""
        c = self.classification
        t = Table(f"ISA {c.isa}: privileged or sensitive instructions ({len(c.verdicts)} forms, "
                  f"{c.scope})",
                  ["instruction", "forms", "privileged", "control", "location", "mode",
                   "sensitive & unprivileged forms", "traps when", "R&I"], align="lrcccclll")
        ri = set(ROBIN_IRVINE_NAMES)
        innocuous = []
        for g in self.groups:
            if g.row_kind == "innocuous" and g.name not in ri:
                innocuous.append(g)
                continue
            priv = "always traps" if g.vacuous else g.privileged + (
                f" ({len(g.trapping_forms)} always trap)" if g.trapping_forms else "")
            sbu = g.unprivileged_sensitive
            sbu_text = (f"{len(sbu)}: " + "; ".join(_short(v.name, g.name) for v in sbu[:6])
                        + (" ..." if len(sbu) > 6 else "")) if sbu else "-"
            cnt = lambda lst: str(len(lst)) if lst else "-"  # noqa: E731
            t.add(g.name, len(g.forms), priv, cnt(g.control), cnt(g.location), cnt(g.mode), sbu_text,
                  g.rule.replace(", some states", " (some)") or "-", "yes" if g.name in ri else "")
        derived = sorted(self.derived)
        t.notes.append(f"Innocuous, unprivileged ({len(innocuous)} instructions, "
                       f"{sum(len(g.forms) for g in innocuous)} forms; no witness of sensitivity): "
                       + ", ".join(g.name for g in innocuous))
        t.notes.append(f"Sensitive but unprivileged, derived ({len(derived)}): " + ", ".join(derived))
        t.notes.append(c.caveat)
        return [t]

    def comparison_table(self) -> Table:
        rows = self.comparison()
        agree = sum(r.agreement == "agree" for r in rows)
        t = Table(f"{self.classification.isa} beside Robin & Irvine (USENIX Security 2000): {len(ROBIN_IRVINE_NAMES)} "
                  f"mnemonics on their list, {len(self.derived)} derived here, {agree} on both",
                  ["instruction", "Robin & Irvine", "their reason", "derived here", "our forms and kinds",
                   "agreement or difference, explained"], align="llllll")
        for r in rows:
            theirs = r.group if r.theirs else "not listed"
            ours = "yes" if r.ours else "no"
            forms_ = "; ".join(_short(f, r.instruction) for f in r.forms[:4]) + (" ..." if len(r.forms) > 4 else "")
            what = (f"{forms_} ({', '.join(r.kinds)})" if r.ours else r.verdict)
            t.add(r.instruction, theirs, r.their_reason or "-", ours, what,
                  ("same: " + r.explanation) if r.agreement == "agree" else r.explanation)
        t.notes.append(f"Readings: {reading_words(self.options)}.")
        return t

    def notes_table(self) -> Table:
        shown, withheld = x86_compare.notes(self)
        t = Table("Notes on instructions the question usually turns on", ["instruction", "verdict", "note"])
        for name, words, text in shown:
            t.add(name, words, text)
        for name, text in withheld:
            t.notes.append(f"Withheld, it does not fit this run: {name}: {text}")
        return t

    # -- terminal --------------------------------------------------------------
    def render(self, con, witnesses: bool = True) -> None:
        from trapvisor.theory.render import text

        c = self.classification
        con.print(f"[bold]ISA {c.isa}[/]  {c.adapter.description}")
        con.print(f"{c.method}: {c.scope}; {len(c.verdicts)} forms of {len(self.groups)} instructions "
                  f"({len(skipped())} forms skipped: x87 and forms without a 32-bit encoding); "
                  f"{c.executions} executions, {c.seconds:.1f} s, {self.workers} worker(s)", soft_wrap=True, markup=False)
        con.print(f"Readings: {reading_words(self.options)}.  M: s = CPL 0, u = CPL {self.options.get('user_cpl', 3)}. "
                  "R: segment bases and limits, paging, descriptor tables, CR0.  Mapping: "
                  "trapvisor/theory/bridges/x86.py.", soft_wrap=True, markup=False, style="dim")
        for t in self.tables():
            text(t, con)
        con.print()
        text(self.comparison_table(), con)
        con.print()
        text(self.notes_table(), con)
        if witnesses:
            con.print()
            con.print("[bold]Witnesses[/] (one per instruction; S = a machine state, i(S) its result)")
            for g in self.groups:
                for line in self.witness_lines(g):
                    con.print(line, soft_wrap=True, markup=False)

    def witness_lines(self, g: GroupRow) -> list[str]:
        a = self.classification.adapter
        out = []
        sbu = g.unprivileged_sensitive
        if sbu:
            v = sbu[0]
            out.append(f"{g.name}: sensitive and unprivileged ({len(sbu)} of {len(g.forms)} forms, e.g. {v.name})")
            out += witness_lines(a, v.unprivileged_sensitive)
            counter = v.unprivileged_counter.get("sensitive")
            if counter is not None:
                out += witness_lines(a, counter)
            return out
        if g.sensitive:
            v = next(v for v in g.forms if v.sensitive)
            out.append(f"{g.name}: sensitive, {'privileged' if v.privileged else 'not privileged'} ({v.name})")
            out += witness_lines(a, v.control or v.behavior)
            if v.privileged and v.privileged_witness is not None:
                out += witness_lines(a, v.privileged_witness, pairs=v.pairs)
            return out
        if g.privileged == "yes" and not g.vacuous:
            v = g.forms[0]
            if v.privileged_witness is not None:
                out.append(f"{g.name}: privileged ({v.name})")
                out += witness_lines(a, v.privileged_witness, pairs=v.pairs)
        return out


def reading_words(options: dict) -> str:
    """The readings of a run, as the command-line options that select them."""
    iopl = options.get("user_iopl", 0)
    return (f"--int-n {'trap' if options.get('software_interrupts_trap', True) else 'gate'}, "
            f"--popf-if {options.get('popf_if', 'behaviour')}, --user-cpl {options.get('user_cpl', 3)}, "
            f"--user-iopl {'sampled' if iopl is None else iopl}")


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


_CACHE: dict = {}


def run(*, strict: bool = False, samples: int | None = None, seed: int = 0, workers: int | None = None,
        names=None, profile_states: int = 4, escalate: int = 4, **adapter_options) -> X86Report:
    """Classify every form (or those in ``names``) and build the report.

    Forms whose verdict is unsettled after ``samples`` states -- every pair
    excluded because both modes trapped, or sensitive with no privilege
    verdict for the same encoding -- get a second search with ``escalate``
    times as many states (seed + 1), which replaces the first.  The same
    arguments give the same report, and within a process it is computed once.
    """
    from trapvisor.theory.bridges.x86 import DEFAULT_SAMPLES, X86Adapter

    samples = samples or DEFAULT_SAMPLES
    probe = X86Adapter(strict=strict, form_filter=lambda f: False, **adapter_options)
    key = (strict, samples, seed, None if names is None else tuple(sorted(names)), profile_states, escalate,
           tuple(sorted(probe.options.items())))
    if key in _CACHE:
        return _CACHE[key]
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
    probe.forms = [f for f in forms() if f.name in by_name]
    scope = f"{samples} sampled states per form (seed {seed})"
    if again:
        scope += f"; {len(again)} unsettled forms searched again with {samples * escalate} (seed {seed + 1})"
    c = Classification(probe.name, "sampled", scope,
                       {"samples_per_form": samples, "seed": seed, "escalated_forms": again,
                        "escalated_samples": samples * escalate if again else 0},
                       SAMPLED_CAVEAT, verdicts, executions, seconds, probe)
    report = X86Report(c, profiles, n, dict(probe.options, strict=strict))
    _CACHE[key] = report
    return report
