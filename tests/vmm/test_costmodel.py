"""The cost model: defaults from the literature, user overrides, bad files."""

import pytest

from trapvisor.errors import UserError
from trapvisor.guests import build_guest
from trapvisor.vmm.costmodel import CostModel
from trapvisor.vmm.run import run_technique


def test_defaults_carry_the_published_figures():
    c = CostModel.default()
    # Adams & Agesen 2006: native divzero 889, BT `in` 214, ptemod BT 391, pgfault 3927-1093.
    assert (c.trap_roundtrip, c.interpreter_routine, c.shadow_update, c.shadow_fill) == (889, 214, 391, 2834)


def test_an_override_file_changes_only_its_keys(tmp_path):
    f = tmp_path / "costs.toml"
    f.write_text("trap_roundtrip = 10000\n")
    c = CostModel.load(str(f))
    assert c.trap_roundtrip == 10000 and c.interpreter_routine == CostModel.default().interpreter_routine


def test_the_override_reaches_the_simulated_cycles(tmp_path):
    kernel = str(build_guest("hello"))
    f = tmp_path / "costs.toml"
    f.write_text("trap_roundtrip = 100000\n")
    base = run_technique("trap-emulate", kernel, costs=CostModel.default(), max_instructions=100_000)
    dear = run_technique("trap-emulate", kernel, costs=CostModel.load(str(f)), max_instructions=100_000)
    traps = base.events.total("trap")     # every logged trap includes one round trip
    assert traps > 0
    assert dear.cycles - base.cycles == traps * (100_000 - CostModel.default().trap_roundtrip)


@pytest.mark.parametrize("text,message", [
    ("trap_roundtrip = ", "not valid TOML"),
    ("warp_speed = 3\n", "unknown cost keys warp_speed"),
    ("trap_roundtrip = -5\n", "non-negative integer"),
])
def test_bad_cost_files_are_one_line_errors(tmp_path, text, message):
    f = tmp_path / "costs.toml"
    f.write_text(text)
    with pytest.raises(UserError, match=message):
        CostModel.load(str(f))
