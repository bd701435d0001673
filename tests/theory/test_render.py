"""One table, five formats: the cells survive each, and each escapes what it must."""

import csv
import io
import json

from rich.console import Console

from trapvisor.theory.render import Table, csv_text, latex, markdown, render

CELLS = ["a|b", "50% & $x_1$", "sensitive ⊆ privileged"]


def table():
    t = Table("Title {with} braces", ["one", "two", "three"], align="lcr")
    t.add(*CELLS)
    t.notes.append("a note")
    return t


def test_markdown_escapes_pipes_and_keeps_the_alignment():
    md = markdown(table())
    assert md.splitlines()[0] == "**Title {with} braces**"
    assert "| a\\|b | 50% & $x_1$ | sensitive ⊆ privileged |" in md and "|---|:-:|--:|" in md
    assert md.endswith("a note")


def test_csv_round_trips_every_cell():
    rows = list(csv.reader(io.StringIO(csv_text(table()))))
    assert rows == [["one", "two", "three"], CELLS]


def test_latex_escapes_its_special_characters():
    tex = latex(table())
    assert r"a\textbar{}b & 50\% \& \$x\_1\$ & sensitive $\subseteq$ privileged \\" in tex
    assert r"\begin{tabular}{lcr}" in tex and r"\caption{Title \{with\} braces}" in tex


def test_json_prints_the_commands_own_data_and_text_a_terminal_table():
    out = io.StringIO()
    render([table()], "json", data={"x": 1}, out=out)
    assert json.loads(out.getvalue()) == {"x": 1}
    con = Console(record=True, width=100, file=io.StringIO())
    render([table()], "text", con)
    text = con.export_text()
    assert "a|b" in text and "50% & $x_1$" in text and "a note" in text
