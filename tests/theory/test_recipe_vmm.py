"""The monitor built by the recipe: equivalence, resource control, efficiency,
two VMs, recursion and the hybrid monitor."""

import pytest

from trapvisor.theory.experiments import (
    GuestImage, bare_run, build_stack, equivalence, find_divergence, run_virtualized, two_vms,
)
from trapvisor.theory.isa import ISA
from trapvisor.theory.formal_machine import Machine, Mode, PSW, Reloc
from trapvisor.theory.recipe_vmm import BareHardware, RecipeVMM
from trapvisor.cli.theory import PROGRAMS_DIR

from .helpers import FLAWED, classified, isa

PROGRAMS = 300


def program(isa_name, name):
    i = isa(isa_name)
    return i, GuestImage.from_program(i.assemble((PROGRAMS_DIR / f"{name}.tv").read_text(), source=name))


@pytest.mark.parametrize("name", ["s360", "paged"])
def test_full_monitor_is_equivalent_on_hundreds_of_random_programs(name):
    r = equivalence(isa(name), PROGRAMS)
    assert r.passed == PROGRAMS and r.violations == 0
    assert r.guest_steps > PROGRAMS * 10  # the programs really ran


@pytest.mark.parametrize("name", ["s360", "pdp10", "mfpi11", "paged"])
def test_hybrid_monitor_is_equivalent_on_hundreds_of_random_programs(name):
    r = equivalence(isa(name), PROGRAMS, hybrid=True, seed=3)
    assert r.passed == PROGRAMS and r.violations == 0


@pytest.mark.parametrize("name", FLAWED)
def test_full_monitor_fails_on_every_flawed_isa_with_a_checked_witness(name):
    i = isa(name)
    r = equivalence(i, 150)
    assert not r.equivalent
    d = r.first_failure
    assert d is not None
    # The witness is real: one bare step from 'before' gives 'bare_after' ...
    assert Machine(i, len(d.before.E)).step(d.before).after == d.bare_after
    assert d.vmm_after != d.bare_after
    # ... and replaying the program from scratch reaches the same divergence.
    again = find_divergence(i, d.guest, r.steps)
    assert (again.step, again.vmm_after) == (d.step, d.vmm_after)


@pytest.mark.parametrize("name", ["retu", "lra67"])
def test_hybrid_monitor_fails_where_theorem_3_fails(name):
    r = equivalence(isa(name), 200, hybrid=True)
    assert not r.equivalent or r.violations


def test_interpreted_instructions_are_exactly_privileged_ones_and_innocuous_run_directly():
    i = isa("s360")
    r = equivalence(i, 100)
    privileged = {v.name for v in classified("s360").verdicts if v.privileged}
    assert set(r.interpreted) <= privileged and r.interpreted


def test_countdown_runs_mostly_directly_under_the_monitor():
    i, g = program("s360", "countdown")
    bare, trace = bare_run(i, g, 200)
    run = run_virtualized(i, g, 200)
    assert run.final == bare and run.guest_steps == len(trace)
    assert dict(run.interpreted) == {"LPSW": 1} and dict(run.reflected) == {"privilege": 1}
    assert run.direct == run.guest_steps - 2


@pytest.mark.parametrize("isa_name, prog, step", [
    ("lra67", "real_address", 1), ("mfpi11", "whoami", 1), ("pdp10", "jrst_return", 1), ("retu", "grab_r", 1),
])
def test_bundled_flaw_programs_show_the_exact_step_where_equivalence_breaks(isa_name, prog, step):
    i, g = program(isa_name, prog)
    d = find_divergence(i, g, 50)
    assert d is not None and d.step == step


def test_page_offset_program_is_equivalent_despite_the_sensitive_lpo():
    i, g = program("paged", "page_offset")
    assert find_divergence(i, g, 50) is None


def test_a_guest_cannot_escape_its_partition_by_setting_r():
    i = isa("s360")
    # Guest kernel asks for R = (0, 63): everything, as far as it knows.
    src = ".q 8\n.org 1\n.psw s, 7, 0, 7\n.org 2\nSETR 0, 63\nLDI 7, 5\nHALT\n"
    g = GuestImage.from_program(i.assemble(src))
    stack = build_stack(i, [8, 8])
    cp = stack.top
    vm, other = cp.create_vm(g.image, g.start), cp.create_vm([9] * 8, PSW(Mode.S, 2, Reloc(0, 7)))
    cp.run_guest(vm, 20)
    assert vm.vR == Reloc(0, 63)  # what the guest believes
    assert cp.allocator.real_reloc(vm) == Reloc(vm.base, 7)  # what it got: clipped to its partition
    assert cp.allocator.real_reloc(other) == Reloc(other.base, 7)  # the last partition: the paper's map
    assert cp.guest_state(other).E == (9,) * 8
    assert stack.bare.violations == []
    assert cp.allocator.changes >= 1  # the allocator was invoked


@pytest.mark.parametrize("hybrid", [False, True])
def test_resource_control_violation_is_reported_when_retu_reloads_the_real_r(hybrid):
    i, g = program("retu", "grab_r")
    stack = build_stack(i, [len(g.image)], hybrid=hybrid)
    vm = stack.top.create_vm(g.image, g.start)
    stack.top.run_guest(vm, 50)
    bypass = [v for v in stack.bare.violations if "without a trap" in v.what]
    assert bypass, "the audit must see R change without the allocator"
    escaped = bypass[0].after.R
    assert escaped.l < vm.base  # the real window now starts below the partition
    assert bypass[0].instruction.startswith("RETU")


def test_two_vms_at_once_are_each_equivalent_and_isolated():
    r = two_vms(isa("s360"), 40)
    assert r.passed == r.programs == 80 and r.violations == 0
    assert r.switches > 80  # they really were interleaved


@pytest.mark.parametrize("nesting", [1, 3])
def test_a_monitor_runs_inside_a_monitor(nesting):
    r = equivalence(isa("s360"), 60, nesting=nesting)
    assert r.passed == 60 and r.violations == 0 and r.nesting == nesting


def test_nested_monitors_each_hold_a_partition_of_the_one_below():
    stack = build_stack(isa("s360"), [8], nesting=2)
    assert len(stack.monitors) == 3
    sizes = [m.hw.q for m in stack.monitors]
    assert sizes[0] == stack.bare.q and sizes[0] > sizes[1] > sizes[2] >= 8


def test_hybrid_monitor_interprets_virtual_supervisor_code_and_runs_user_code_directly():
    i, g = program("pdp10", "jrst_return")
    run = run_virtualized(i, g, 50, hybrid=True)
    assert run.final == bare_run(i, g, 50)[0]
    assert "JRSTU" in run.interpreted


def test_interpreters_are_derived_from_the_isa_not_written_per_isa():
    toy = ISA("toy2", "made up here")
    toy.add("NOP", lambda c: None)

    def swap(c, a, b):
        c.supervisor_only()
        x, y = c.load(a), c.load(b)
        c.store(a, y)
        c.store(b, x)

    toy.add("SWAP a, b", swap)
    toy.add("HALT", lambda c: c.jump(c.pc))
    src = ".q 8\n.org 2\nSWAP 5, 6\nHALT\n.org 5\n.word 1, 2\n"
    g = GuestImage.from_program(toy.assemble(src))
    run = run_virtualized(toy, g, 10)
    assert run.final.E[5:7] == (2, 1) and run.interpreted == {"SWAP": 1}
    cp = RecipeVMM(toy, BareHardware(toy, 16))
    assert {f.__name__ for f in cp.interpreters.values()} == {"v_NOP", "v_SWAP", "v_HALT"}


def test_equivalence_is_judged_step_by_step_not_only_on_the_final_state():
    # The witness program of the combined-pair instruction: ODD stores 1 on
    # the bare machine and 0 under the monitor, then the next fetch traps and
    # the trap sequence overwrites E[0] -- the final states agree.
    from trapvisor.theory.experiments import lockstep
    from trapvisor.theory.program_sets import GuestImage

    from .built_isas import combined_only

    x = combined_only()
    g = GuestImage((x.encode(x.instance("ODD", 0)), 0, 0, 0), PSW(Mode.S, 0, Reloc(0, 0)))
    assert run_virtualized(x, g, 12).final == bare_run(x, g, 12)[0]
    div, _ = lockstep(x, g, 12)
    assert div is not None and div.step == 1 and div.bare_after.E[0] == 1 and div.vmm_after.E[0] == 0


def test_an_aligned_partition_of_an_odd_sized_guest_keeps_the_guest_inside_its_storage():
    # paged aligns partitions to 2 words: a 5-word guest gets 6, and the
    # sixth must stay out of reach (its bound is clipped), as on a 5-word machine.
    i = isa("paged")
    src = ".q 5\n.org 1\n.psw s, 4, 0, 4\n.org 2\nMOV 0, 5\nHALT\n"
    g = GuestImage.from_program(i.assemble(src))
    assert find_divergence(i, g, 20) is None
    stack = build_stack(i, [5])
    vm = stack.top.create_vm(g.image, g.start)
    assert vm.size == 5 and stack.top.allocator.real_reloc(vm).b == 4
