"""``trapvisor bt show``: a guest unit and its translation, from the command line."""

from __future__ import annotations

import pytest
from elftools.elf.elffile import ELFFile

from tests.test_cli import one_line_error, tv
from trapvisor.guests import build_guest


def symbol(guest: str, name: str) -> int:
    with open(build_guest(guest), "rb") as f:
        for sym in ELFFile(f).get_section_by_name(".symtab").iter_symbols():
            if sym.name == name:
                return sym["st_value"]
    raise KeyError(name)


def test_bt_show_prints_the_unit_with_ident_and_callouts_marked():
    at = symbol("tvos", "cpu_irq_restore")      # pushl; popfl: POPF is sensitive
    p = tv("bt", "show", "guest:tvos", "--append", "workload=probe", "--at", f"{at:x}", "--stats")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[1].startswith("unit at guest 0x")
    marked = [ln for ln in lines if ln.startswith(">")]
    assert marked and f"{at:#010x}" in marked[0] and "IDENT" in marked[0]
    popf = [ln for ln in lines if " popfd " in ln]
    assert popf and "CALLOUT" in popf[0] and "ud2" in popf[0] and "(popf)" in popf[0]
    assert any("units translated:" in ln for ln in lines)


def test_bt_show_of_code_the_kernel_never_ran_says_so():
    p = tv("bt", "show", "guest:hello", "--at", "0x7000000", "--max-instructions", "200000")
    assert p.returncode == 1 and "no translation of guest 0x07000000" in p.stdout


@pytest.mark.parametrize("args,message", [
    (("bt", "show", "guest:hello"), "--at"),
    (("bt", "show", "guest:hello", "--at", "zz"), "bad address"),
    (("bt", "show", "/nonexistent/kernel", "--at", "0"), "not found"),
    (("bt", "show", "guest:hello", "--at", "0", "--max-instructions", "0"), "bad instruction limit"),
    (("bt", "frobnicate"), "invalid choice"),
])
def test_bt_show_refuses_bad_input_in_one_line(args, message):
    line = one_line_error(tv(*args))
    assert message in line
