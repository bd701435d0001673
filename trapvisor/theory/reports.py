"""What the theory commands print: tables for every format, and the terminal report with witnesses.

``cli.py`` parses and checks the options; this module turns a
classification, a theorem report or one instruction's findings into
:class:`~trapvisor.theory.render.Table` objects (the same cells in text,
Markdown, CSV and LaTeX) and, for the terminal, adds the witnesses: the
states, the executions and, for a counterexample program, the bare and the
virtualized runs side by side.
"""

from __future__ import annotations

from rich.markup import escape as _escape

from trapvisor.theory.classifier import Classification, InstructionVerdict
from trapvisor.theory.definitions import DEFINITIONS
from trapvisor.theory.render import Table, text
from trapvisor.theory.theorems import CONTRADICTION, EXPLAINED, PROVEN, REFUTED, SAMPLED, TheoremReport


def esc(x) -> str:
    """Escape text for rich markup: states and docs are full of [brackets]."""
    return _escape(str(x))


def _yn(flag: bool) -> str:
    return "yes" if flag else "no"


# ---------------------------------------------------------------------------
# classify


def classification_table(c: Classification) -> Table:
    sampled = c.method == "sampled"
    t = Table(f"ISA {c.isa}: {c.method}, {c.scope}",
              ["instruction", "privileged", "control", "location", "mode", "location+mode", "user", "supervisor",
               "innocuous"], align="lcccccccc")

    def found(w) -> str:  # sampled: a 'no' is only "no witness found"
        return "yes" if w is not None else ("none found" if sampled else "no")

    for v in c.verdicts:
        if sampled and v.privileged:
            priv = "not refuted"
        else:
            priv = _yn(v.privileged) + (" (vacuous)" if v.vacuous else "")
        innocuous = ("no witness" if sampled else "yes") if v.innocuous else "no"
        t.add(v.name, priv, found(v.control), found(v.location), found(v.mode), found(v.combined),
              found(v.user), found(v.supervisor), innocuous)
    t.notes.append(c.caveat)
    return t


def render_classification(c: Classification, con, witnesses: bool = True) -> None:
    a = c.adapter
    con.print(f"[bold]ISA {esc(c.isa)}[/]  {esc(a.description)}")
    con.print(f"{c.executions} instruction executions, {c.seconds:.1f} s")
    table = classification_table(c)
    notes, table.notes = table.notes, []
    text(table, con)
    if witnesses:
        con.print("[bold]Witnesses[/] (S = (E, M, P, R); a 'yes' for privileged shows one of the pairs checked)")
        for v in c.verdicts:
            shown = [w for w in v.witnesses() if w.definition != "not privileged"]
            if not shown:
                continue
            con.print(f"[bold]{esc(v.name)}[/]  [dim]{esc(v.doc)}[/]")
            for w in shown:
                kinds = [w.definition] + (["user sensitive"] if w is v.user else []) \
                    + (["supervisor sensitive"] if w is v.supervisor else [])
                lines = w.lines(a)
                extra = f" (pairs checked: {v.pairs})" if w.definition == "privileged" else ""
                con.print(f"  [cyan]{esc(' + '.join(kinds))}[/]{extra}: {esc(lines[0].split(' -- ', 1)[-1])}",
                          soft_wrap=True)
                for line in lines[1:]:
                    con.print("  " + esc(line), soft_wrap=True)
    for n in notes:
        con.print(f"[yellow]{esc(n)}[/]", soft_wrap=True)


# ---------------------------------------------------------------------------
# theorems

_STATUS_WORDS = {PROVEN: "proven within the bounds", REFUTED: "refuted by a counterexample program",
                 EXPLAINED: "sufficient, not necessary (explained by the ISA)", CONTRADICTION: "CONTRADICTION",
                 SAMPLED: "sampled, not proven", "no evidence": "no monitor run"}


def evidence_words(e) -> str:
    """'equivalent on 780 of the first 781 of 816 programs within the bound' and the like."""
    if e.exhaustive:
        first = f" of the first {e.programs}" if e.stopped else ""
        return f"equivalent on {e.passed}{first} of the {e.total} programs within the bound"
    return f"equivalent on {e.passed} of {e.programs} {e.program_set}" + (" (stopped at the first failure)"
                                                                           if e.stopped else "")


def theorem_table(report: TheoremReport) -> Table:
    c = report.classification
    pb = report.program_bounds
    t = Table(f"ISA {report.isa.name}: Theorems 1-3 (classification {c.method}: {c.scope})",
              ["theorem", "condition", "holds", "conclusion", "verdict", "evidence"], align="llclll")
    for th in report.theorems:
        ev = "; ".join(f"{e.monitor}: " + evidence_words(e)
                       + ("" if not e.violations else f", resource control broken in {e.programs_with_violations}")
                       for e in th.evidence) or "-"
        t.add(f"Theorem {th.number}", th.condition, _yn(th.holds), th.conclusion, _STATUS_WORDS[th.status], ev)
    if pb is not None:
        t.notes.append(f"Program bound: {pb.describe()}.")
    for th in report.theorems:
        if th.contradiction:
            t.notes.append(f"CONTRADICTION (Theorem {th.number}): {th.contradiction}")
    return t


def side_by_side_table(div, title: str) -> Table:
    t = Table(title, ["step", "instruction", "bare machine", "under the monitor"])
    for row in div.side_by_side():
        t.add(*row)
    t.notes.append("differs in: " + "; ".join(div.differences()))
    return t


def counterexample_tables(report: TheoremReport) -> list[Table]:
    out = []
    for th in report.theorems:
        div = th.counterexample
        if div is not None and th.status in (REFUTED, CONTRADICTION):
            out.append(side_by_side_table(div, f"Theorem {th.number}: {div.guest.name}, start PSW {div.guest.start}"))
    return out


def render_theorems(report: TheoremReport, con) -> None:
    c = report.classification
    con.print(f"[bold]ISA {esc(report.isa.name)}[/]")
    con.print(f"classification: {c.method}, {esc(c.scope)}", soft_wrap=True)
    if report.program_bounds is not None:
        con.print(f"program bound: {esc(report.program_bounds.describe())}", soft_wrap=True)
    for t in report.theorems:
        verdict = "[green]condition holds[/]" if t.holds else "[red]condition fails[/]"
        con.print()
        con.print(f"[bold]Theorem {t.number}[/]  {esc(t.condition)}: {verdict}  =>  [bold]{esc(t.conclusion)}[/]"
                  f"  [{'red' if t.status == CONTRADICTION else 'cyan'}]({_STATUS_WORDS[t.status]})[/]")
        con.print(f"  [dim]\"{esc(t.statement)}\"[/]  (Popek & Goldberg 1974, CACM 17(7))", soft_wrap=True)
        con.print(f"  why: {esc(t.reason)}", soft_wrap=True)
        for o in t.offenders:
            con.print(f"  [red]offending instruction {esc(o.instruction)}[/]")
            for w in (o.sensitivity, o.not_privileged):
                if w is not None:
                    for line in w.lines(c.adapter) if hasattr(w, "lines") else []:
                        con.print("    " + esc(line), soft_wrap=True)
        for e in t.evidence:
            ok = "[green]ok[/]" if e.held else "[red]broken[/]"
            rc = "no resource-control violations" if not e.violations else \
                f"resource control broken in {e.programs_with_violations} programs"
            con.print(f"  evidence: {e.monitor}: {esc(evidence_words(e))}, "
                      f"{rc}, {e.efficiency:.0%} of guest instructions direct -- {ok}", soft_wrap=True)
        div = t.counterexample
        if div is not None and t.status in (REFUTED, CONTRADICTION):
            con.print(f"  counterexample: {esc(div.guest.name)}, start PSW {esc(str(div.guest.start))}")
            for line in div.guest.listing(report.isa):
                con.print("      " + esc(line))
            text(side_by_side_table(div, ""), con)
        if t.remark:
            con.print(f"  [yellow]{esc(t.remark)}[/]", soft_wrap=True)
        if t.contradiction:
            con.print(f"  [bold red]CONTRADICTION[/]: {esc(t.contradiction)}", soft_wrap=True)
    con.print()
    con.print("[dim]Each condition is sufficient, not necessary: when it fails the theorem is silent. A "
              "contradiction between a condition and the monitor runs exits with status 3.[/]", soft_wrap=True)


# ---------------------------------------------------------------------------
# explain


def explain_table(data: dict) -> Table:
    """One row per definition: the verdict, what it ranged over, the witness in one line."""
    t = Table(f"{data['instruction']} on ISA {data['isa']} ({data['method']}: {data['scope']})",
              ["definition", "holds", "checked", "excluded (memory trap)", "witness"], align="lcrrl")
    for name, e in data["definitions"].items():
        w = e["witness"]
        if w is None:
            witness = "-"
        else:
            states = "; ".join(f"S{n} = {x['state']}" if not isinstance(x["state"], dict) else
                               f"S{n} = E={x['state'].get('E')} M={x['state'].get('M')} P={x['state'].get('P')} "
                               f"R=({x['state']['R']['l']},{x['state']['R']['b']})"
                               for n, x in enumerate(w["executions"], 1))
            witness = f"{w['definition']}: {w['instruction']} -- {w['note']}; {states}"
        t.add(name, _yn(e["holds"]), e["checked"], e["excluded"], witness)
    t.notes.append("conclusion: " + data["conclusion"])
    return t

def definition_source(fn) -> tuple[str, str]:
    """The paper's words a definition function quotes in its docstring, and the section it names."""
    import re

    doc = " ".join((fn.__doc__ or "").split())
    quote = re.search(r'"(.+?)"', doc)
    section = re.search(r"Popek & Goldberg 1974, (.+?):", doc)
    return (quote.group(1) if quote else "", section.group(1) if section else "")


_EXISTENTIAL = ("control sensitive", "behaviour sensitive", "location sensitive", "mode sensitive",
                "sensitive", "user sensitive", "supervisor sensitive")


def explain_formal(c: Classification, v: InstructionVerdict) -> tuple[list[str], dict]:
    """Every definition for one opcode, over all its instances: verdict, counts, witness."""
    a = c.adapter
    lines = [f"{v.name} on ISA {c.isa} ({c.method}: {c.scope})", f"  {v.doc}" if v.doc else ""]
    data = {"instruction": v.name, "isa": c.isa, "method": c.method, "scope": c.scope, "definitions": {}}
    details = v.details
    for name, fn in DEFINITIONS.items():
        findings = [(inst, f[name]) for inst, f in details]
        checked = sum(f.checked for _, f in findings)
        excluded = sum(f.excluded for _, f in findings)
        if name == "privileged":
            holds = all(f.holds for _, f in findings)
            first = next(((i, f) for i, f in findings if not f.holds), None) if not holds else \
                next(((i, f) for i, f in findings if f.witness is not None), None)
        elif name == "innocuous":
            holds = all(f.holds for _, f in findings)
            first = None
        else:
            holds = any(f.holds for _, f in findings)
            first = next(((i, f) for i, f in findings if f.holds), None)
        quote, section = definition_source(fn)
        what = "pairs" if name in ("privileged",) or "sensitive" in name and name not in ("control sensitive",) \
            else "executions"
        count = f"{checked} {what} checked over {len(findings)} instance(s), {excluded} excluded (memory trap)"
        if name == "privileged" and holds and checked == 0:
            count += "; holds vacuously"
        lines.append(f"{name}: {_yn(holds)}")
        if quote:
            lines.append(f"    definition, {section}: \"{quote}\"")
        lines.append(f"    {count}")
        entry = {"holds": holds, "checked": checked, "excluded": excluded, "witness": None,
                 "definition": quote, "section": section}
        if first is not None and first[1].witness is not None:
            w = first[1].witness
            lines += ["    " + l for l in w.lines(a)]
            entry["witness"] = w.to_json(a)
        elif name in _EXISTENTIAL and not holds:
            lines.append("    no witness " + ("within the bounds: proven for the bounded machine"
                                             if c.method == "exhaustive" else "found (sampled: not a proof)"))
        data["definitions"][name] = entry
    if v.unprivileged_sensitive is not None:
        concl = (f"{v.name} is sensitive ({', '.join(v.kinds())}) and not privileged: it breaks Theorem 1's condition"
                 + (", and Theorem 3's (it is user sensitive)" if v.unprivileged_user_sensitive else
                    "; it is sensitive only from supervisor mode, so Theorem 3's condition stands"))
    elif v.sensitive:
        concl = f"{v.name} is sensitive ({', '.join(v.kinds())}) and privileged: the theorems' conditions allow it"
    else:
        concl = f"{v.name} is innocuous" + (" and privileged" if v.privileged else "")
    lines.append("conclusion: " + concl)
    data["conclusion"] = concl
    return [l for l in lines if l != ""], data


def explain_x86(report, item) -> tuple[list[str], dict]:
    """One x86 instruction (SDM name) or form: its verdict, forms, witnesses and the comparison row."""
    from trapvisor.theory.bridges import x86_compare

    c = report.classification
    g = item if hasattr(item, "forms") else next(g for g in report.groups if item in g.forms)
    lines = [f"{g.name} on ISA {c.isa} ({c.scope})", f"  verdict: {x86_compare.verdict_words(g)}"]
    forms = g.forms if hasattr(item, "forms") else [item]
    for v in forms:
        lines.append(f"  form {v.name}: privileged {_yn(v.privileged)}" + (" (vacuous)" if v.vacuous else "")
                     + f"; sensitivity: {', '.join(v.kinds()) or 'none found'}"
                     + ("; SENSITIVE AND UNPRIVILEGED" if v.unprivileged_sensitive else "")
                     + f"; pairs checked {v.pairs}")
    lines += report.witness_lines(g)
    row = next((r for r in report.comparison() if r.instruction == g.name), None)
    if row is not None:
        lines.append(f"  Robin & Irvine: {row.group or 'not listed'}" + (f" -- {row.their_reason}" if row.theirs else ""))
        lines.append(f"  comparison: {row.agreement}" + (f" -- {row.explanation}" if row.explanation else ""))
    data = {"instruction": g.name, "isa": c.isa, "scope": c.scope, "verdict": x86_compare.verdict_words(g),
            "forms": [v.to_json(c.adapter) for v in forms], "comparison": row.to_json() if row else None}
    return lines, data
