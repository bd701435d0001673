"""Tables in five formats: text (a terminal table), Markdown, CSV, JSON and LaTeX.

Every command that prints a table builds :class:`Table` objects and hands
them to :func:`render`, so the formats cannot drift apart: the Markdown
tables in ``docs/theory.md`` are this module's output (``theory docs``).
Text is for people; Markdown, CSV and LaTeX carry the same cells; JSON is
each command's own ``to_json`` (richer: witnesses, counts), not a table.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass, field

FORMATS = ("text", "markdown", "csv", "json", "latex")


@dataclass
class Table:
    """A titled table with notes underneath."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    align: str = ""  # per column: l, c or r (default: first l, others l)

    def add(self, *cells) -> None:
        self.rows.append([str(c) for c in cells])

    def to_json(self) -> dict:
        return {"title": self.title, "columns": self.columns, "rows": self.rows, "notes": self.notes}


def markdown(t: Table) -> str:
    def cell(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    out = [f"**{cell(t.title)}**", ""] if t.title else []
    out.append("| " + " | ".join(cell(c) for c in t.columns) + " |")
    aligns = (t.align or "l" * len(t.columns)).ljust(len(t.columns), "l")
    out.append("|" + "|".join({"l": "---", "c": ":-:", "r": "--:"}[a] for a in aligns) + "|")
    for r in t.rows:
        out.append("| " + " | ".join(cell(c) for c in r) + " |")
    for n in t.notes:
        out += ["", n]
    return "\n".join(out)


def csv_text(t: Table) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(t.columns)
    w.writerows(t.rows)
    return buf.getvalue()


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
          "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
          "<": r"$<$", ">": r"$>$", "|": r"\textbar{}",
          "⊆": r"$\subseteq$", "⊕": r"$\oplus$", "≠": r"$\neq$", "≤": r"$\leq$", "→": r"$\rightarrow$"}


def latex_escape(s: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in s)


def latex(t: Table) -> str:
    aligns = (t.align or "l" * len(t.columns)).ljust(len(t.columns), "l")
    out = [r"\begin{table}[ht]", r"\centering", r"\small"]
    if t.title:
        out.append(r"\caption{" + latex_escape(t.title) + "}")
    out.append(r"\begin{tabular}{" + aligns + "}")
    out.append(r"\hline")
    out.append(" & ".join(r"\textbf{" + latex_escape(c) + "}" for c in t.columns) + r" \\")
    out.append(r"\hline")
    for r in t.rows:
        out.append(" & ".join(latex_escape(c) for c in r) + r" \\")
    out += [r"\hline", r"\end{tabular}"]
    for n in t.notes:
        out.append(r"\par\smallskip{\footnotesize " + latex_escape(n) + "}")
    out.append(r"\end{table}")
    return "\n".join(out)


def text(t: Table, con) -> None:
    """Print ``t`` as a terminal table on a rich console."""
    from rich.markup import escape
    from rich.table import Table as RichTable

    rt = RichTable(title=escape(t.title) if t.title else None, title_justify="left")
    aligns = (t.align or "l" * len(t.columns)).ljust(len(t.columns), "l")
    for c, a in zip(t.columns, aligns):
        rt.add_column(escape(c), justify={"l": "left", "c": "center", "r": "right"}[a])
    for r in t.rows:
        rt.add_row(*(escape(c) for c in r))
    con.print(rt)
    for n in t.notes:
        con.print(escape(n), soft_wrap=True)


def render(tables: list[Table], fmt: str, con=None, *, data=None, out=None) -> None:
    """Print ``tables`` in ``fmt``; for JSON print ``data`` (a command's own to_json)."""
    out = out or sys.stdout
    if fmt == "json":
        print(json.dumps(data if data is not None else [t.to_json() for t in tables], indent=2), file=out)
    elif fmt == "markdown":
        print("\n\n".join(markdown(t) for t in tables), file=out)
    elif fmt == "csv":
        print("\n".join(csv_text(t) for t in tables), end="", file=out)
    elif fmt == "latex":
        print("\n\n".join(latex(t) for t in tables), file=out)
    else:
        for t in tables:
            text(t, con)
