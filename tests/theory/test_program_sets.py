"""The programs the monitors are tried on exercise the relocation-bounds register and the bound check.

The facts asserted here are computed by running the programs on the bare
machine: an access past a bound shorter than storage that traps only
because of the bound, relocated starts, and R changed in the middle of a run.
"""

import itertools

from trapvisor.theory.formal_machine import Machine, Reloc, TrapKind
from trapvisor.theory.program_sets import (
    ProgramBounds, bounded_programs, count, instances, random_programs, start_psws, witness_programs,
)

from .helpers import SMALL_PROGRAMS, classified, isa


def runs(isa_, programs, steps=12):
    for g in programs:
        m = Machine(isa_, len(g.image))
        yield g, m, m.run(m.state(g.image, g.start.M, g.start.P, g.start.R), steps)[1]


def traps_only_because_of_the_bound(m, ex) -> bool:
    """The execution memory-trapped, and the same instruction with R's bound widened to storage does not."""
    if ex.trap is not TrapKind.MEMORY or ex.instance is None:
        return False
    l, b = ex.before.R
    wide = Reloc(l, len(ex.before.E) - 1 - l)
    return b < wide.b and m.execute(ex.instance, ex.before._replace(R=wide)).trap is not TrapKind.MEMORY


def relocated_mid_run(trace) -> bool:
    return any(ex.after.R != ex.before.R and ex.trap is not TrapKind.MEMORY for ex in trace)


def test_every_program_within_the_bound_is_enumerated_once():
    s360 = isa("s360")
    progs = list(bounded_programs(s360, SMALL_PROGRAMS))
    assert len(progs) == count(s360, SMALL_PROGRAMS)
    assert len({(g.image, g.start) for g in progs}) == len(progs)
    words = {g.image[2] for g in progs}
    assert words == {s360.encode(i) for i in instances(s360, SMALL_PROGRAMS.q - 1)}


def test_start_psws_cover_relocated_starts_and_bounds_short_of_at_and_past_storage():
    q = 4
    psws = start_psws(q)
    assert {p.M for p in psws} == {"s", "u"} and all(p.R.l + p.P == 2 for p in psws)
    ends = {p.R.l + p.R.b for p in psws}
    assert min(ends) < q - 1 and q - 1 in ends and max(ends) >= q   # short of, at and past the end of storage
    assert any(p.R.l > 0 for p in psws)


def test_the_bounded_programs_trap_on_accesses_past_the_bound_and_relocate_mid_run():
    s360 = isa("s360")
    past_bound = relocated = 0
    for g, m, trace in runs(s360, bounded_programs(s360, ProgramBounds(q=4, length=1, values=(0, 1)))):
        past_bound += any(traps_only_because_of_the_bound(m, ex) for ex in trace)
        relocated += relocated_mid_run(trace)
    assert past_bound > 100 and relocated > 100


def test_random_programs_trap_past_the_bound_and_relocate_mid_run_too():
    s360 = isa("s360")
    results = [(any(traps_only_because_of_the_bound(m, ex) for ex in trace), relocated_mid_run(trace))
               for _, m, trace in runs(s360, random_programs(s360, 200, seed=1), steps=60)]
    assert sum(a for a, _ in results) > 10 and sum(b for _, b in results) > 10
    starts = [g.start for g in random_programs(s360, 200, seed=1)]
    assert any(p.R.l > 0 for p in starts) and any(p.R.l + p.R.b < 7 for p in starts)


def test_a_witness_program_starts_in_the_witness_state_with_the_instruction_at_p():
    lra = isa("lra67")
    progs = witness_programs(lra, classified("lra67"))
    w = classified("lra67")["LRA"].unprivileged_sensitive
    assert progs and {g.start for g in progs} == {o.before.psw for o in w.executions}
    for g in progs:
        at = g.start.R.l + g.start.P
        assert lra.decode(g.image[at]).op.mnemonic == "LRA"
    assert witness_programs(isa("s360"), classified("s360")) == []


def test_program_bounds_are_checked():
    import pytest

    from trapvisor.theory.errors import TheoryError

    for bad in (ProgramBounds(q=2), ProgramBounds(length=4, q=8), ProgramBounds(steps=0), ProgramBounds(values=())):
        with pytest.raises(TheoryError):
            bad.check(isa("s360"))
    assert list(itertools.islice(bounded_programs(isa("s360"), ProgramBounds()), 3))
