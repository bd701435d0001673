"""The formal machine: relocation, memory traps, the trap sequence, PSWs."""

import pytest

from trapvisor.theory.isa import ISA
from trapvisor.theory.formal_machine import PSW, MemoryTrap, Mode, Reloc, State, TrapKind, WordFormat, translate

S, U = Mode.S, Mode.U


def tiny():
    isa = ISA("tiny", "test machine")

    @isa.instruction("NOP")
    def nop(c):
        pass

    @isa.instruction("MOV a, b")
    def mov(c, a, b):
        c.store(b, c.load(a))

    @isa.instruction("HALT")
    def halt(c):
        c.jump(c.pc)

    @isa.instruction("LPSW a")
    def lpsw(c, a):
        c.supervisor_only()
        c.set_psw(c.unpack_psw(c.load(a)))

    return isa


def test_bound_is_the_largest_legal_address_so_a_equal_b_does_not_trap():
    assert translate(3, Reloc(0, 3), 8) == 3
    with pytest.raises(MemoryTrap):
        translate(4, Reloc(0, 3), 8)


def test_relocated_address_past_storage_traps_even_within_the_bound():
    assert translate(2, Reloc(5, 7), 8) == 7
    with pytest.raises(MemoryTrap):
        translate(3, Reloc(5, 7), 8)  # 3 + 5 >= q


def test_whole_memory_register_reaches_every_word_and_no_more():
    q = 8
    assert [translate(a, Reloc(0, q - 1), q) for a in range(q)] == list(range(q))
    with pytest.raises(MemoryTrap):
        translate(q, Reloc(0, q - 1), q)


def test_psw_packs_into_one_word_and_back():
    fmt = WordFormat(6, 19)
    for psw in (PSW(S, 0, Reloc(0, 0)), PSW(U, 63, Reloc(63, 63)), PSW(U, 5, Reloc(2, 40))):
        word = fmt.pack_psw(psw)
        assert 0 <= word <= fmt.mask
        assert fmt.unpack_psw(word) == psw


def test_a_word_too_narrow_for_a_psw_is_rejected():
    with pytest.raises(ValueError):
        WordFormat(6, 18)


def test_trap_stores_old_psw_in_e0_loads_new_from_e1_and_changes_nothing_else():
    isa = tiny()
    m = isa.machine(8)
    handler = PSW(S, 6, Reloc(0, 7))
    E = [111, isa.fmt.pack_psw(handler), 0, 0, 42, 43, 44, 45]
    E[2] = isa.encode(isa.instance("LPSW", 4))
    before = m.state(E, U, 2, (0, 7))
    ex = m.step(before)
    assert ex.trap is TrapKind.PRIVILEGE
    after = ex.after
    assert isa.fmt.unpack_psw(after.E[0]) == PSW(U, 2, Reloc(0, 7))
    assert after.psw == handler
    assert after.E[1:] == before.E[1:]


def test_a_trapping_instruction_has_no_effect_besides_the_trap_sequence():
    isa = tiny()
    m = isa.machine(4)
    s = m.state([0, 0, 7, 0], S, 0, (0, 3))
    ex = m.execute(isa.instance("MOV", 2, 9), s)  # store to 9 > b
    assert ex.trap is TrapKind.MEMORY
    assert ex.after.E[2:] == s.E[2:] and ex.writes == ()


def test_fetch_outside_r_is_a_memory_trap():
    isa = tiny()
    m = isa.machine(4)
    ex = m.step(m.state([0, 0, 0, 0], S, 3, (0, 2)))
    assert ex.trap is TrapKind.MEMORY and ex.instance is None


def test_a_word_that_decodes_to_nothing_traps_as_illegal():
    isa = tiny()
    m = isa.machine(4)
    bad = 15 << 12  # opcode 15 is not defined
    assert isa.decode(bad) is None
    ex = m.step(m.state([0, 0, bad, 0], S, 2))
    assert ex.trap is TrapKind.ILLEGAL


def test_instruction_applied_as_a_function_agrees_with_fetch_and_execute():
    isa = tiny()
    m = isa.machine(4)
    inst = isa.instance("MOV", 3, 0)
    s = m.state([0, 0, isa.encode(inst), 9], S, 2)
    assert m.execute(inst, s).after == m.step(s).after
    assert m.step(s).after.E[0] == 9 and m.step(s).after.P == 3


def test_run_stops_at_a_fixed_point():
    isa = tiny()
    m = isa.machine(4)
    s = m.state([0, 0, isa.encode(isa.instance("HALT")), 0], S, 2)
    final, trace = m.run(s, 100)
    assert len(trace) == 1 and final == s


def test_visible_storage_marks_words_past_the_end_of_storage():
    s = State((1, 2, 3, 4), S, 0, Reloc(2, 3))
    assert s.visible() == (3, 4, None, None)
