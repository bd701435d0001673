"""The mapping of S = (E, M, P, R), traps and readings onto the simulated IA-32 CPU (bridges/x86.py)."""

import dataclasses
import random

import pytest

from trapvisor.theory.bridges.x86 import X86Adapter
from trapvisor.theory.bridges.x86_forms import forms
from trapvisor.theory.formal_machine import Mode


def encoding(name):
    return next(f for f in forms() if f.name == name).encodings[0]


@pytest.fixture(scope="module")
def adapter():
    return X86Adapter()


def state(adapter, seed=3):
    return adapter.sample_state(random.Random(seed))


def test_the_twins_differ_in_m_only_cpl_and_iopl(adapter):
    s = state(adapter)
    u = adapter.with_mode(s, Mode.U)
    assert (u.cpl, u.iopl) == (3, 0) and adapter.mode(u) is Mode.U and adapter.mode(adapter.with_mode(s, Mode.S)) is Mode.S
    assert adapter.view_key(adapter.with_mode(s, Mode.S)) == adapter.view_key(u)


def test_a_trap_in_user_mode_hands_the_cpu_to_the_supervisor(adapter):
    hlt = encoding("HLT")
    for seed in range(20):
        u = adapter.with_mode(state(adapter, seed), Mode.U)
        o = adapter.execute(hlt, u)
        if o.trapped and not o.memory_trap:
            assert adapter.resources_after(o)[0] == 0 and adapter.resources(o.before)[0] == 3
            assert adapter.observe(o) == ("trap", o.trap)
            return
    pytest.fail("HLT never trapped at CPL 3")


def test_a_trap_the_other_mode_takes_too_is_a_memory_trap(adapter):
    ud2 = encoding("UD2")
    o = adapter.execute(ud2, adapter.with_mode(state(adapter), Mode.S))
    assert o.trapped and o.memory_trap


def test_the_readings_are_checked_and_change_what_is_compared():
    with pytest.raises(ValueError):
        X86Adapter(user_cpl=4)
    with pytest.raises(ValueError):
        X86Adapter(popf_if="neither")
    behaviour, control = X86Adapter(), X86Adapter(popf_if="control")
    s = state(behaviour)
    flipped = dataclasses.replace(s, eflags=s.eflags ^ 0x200)
    assert behaviour.view_key(s) != behaviour.view_key(flipped)   # IF is part of what a program sees
    assert control.view_key(s) == control.view_key(flipped)       # IF belongs to M
    assert X86Adapter(user_cpl=1).with_mode(s, Mode.U).cpl == 1
    assert X86Adapter(user_iopl=None).with_mode(s, Mode.U).iopl == s.iopl_s
