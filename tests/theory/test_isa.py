"""Defining ISAs and assembling programs."""

import pytest

from trapvisor.theory.errors import TheoryError
from trapvisor.theory.isa import ISA
from trapvisor.theory.isas.s360 import base
from trapvisor.theory.formal_machine import PSW, Mode, Reloc


def test_an_isa_is_a_few_lines_and_its_programs_run():
    isa = ISA("mini", "two instructions")

    @isa.instruction("INC a")
    def inc(c, a):
        c.store(a, c.load(a) + 1)

    @isa.instruction("JMP t")
    def jmp(c, t):
        c.jump(t)

    prog = isa.assemble(".q 4\n.start top\ntop: INC x\n JMP top\nx: .word 0\n")
    final, trace = prog.machine().run(prog.initial_state(), 6)
    assert final.E[prog.labels["x"]] == 3
    assert len(trace) == 6


def test_encoding_round_trips_for_every_instruction_and_operand_value():
    isa = base()
    for ins in isa.instructions:
        for a in (0, 1, 63):
            args = (a, 63 - a)[: len(ins.operands)]
            inst = isa.instance(ins.mnemonic, *args)
            assert isa.decode(isa.encode(inst)) == inst


def test_extended_isa_keeps_encodings_of_the_original():
    s360 = base()
    ext = s360.extended("ext")
    ext.add("NEW a", lambda c, a: None, opcode=12)
    for ins in s360.instructions:
        assert ext[ins.mnemonic].opcode == ins.opcode
    assert "NEW" not in s360 and "NEW" in ext


def test_assembler_resolves_labels_psw_words_and_directives():
    isa = base()
    prog = isa.assemble(
        ".q 8\n.mode u\n.start go\n.reloc 1, 6\n.org 1\n.psw s, handler, 0, 7\ngo: MOV x+1, x\nhandler: HALT\nx: .word 5, 6\n"
    )
    assert prog.start == PSW(Mode.U, 2, Reloc(1, 6))
    assert isa.fmt.unpack_psw(prog.image[1]) == PSW(Mode.S, 3, Reloc(0, 7))
    assert isa.decode(prog.image[2]) == isa.instance("MOV", 5, 4)
    assert prog.image[4:6] == (5, 6)


@pytest.mark.parametrize(
    "source, message",
    [
        ("FLY 1\n", "no instruction 'FLY'"),
        ("MOV 1\n", "takes 2 operand(s)"),
        ("JMP nowhere\n", "undefined label 'nowhere'"),
        ("x: NOP\nx: NOP\n", "defined twice"),
        (".org 9\nNOP\n", "outside storage"),
        (".frob 1\n", "unknown directive"),
    ],
)
def test_assembler_errors_name_the_line(source, message):
    with pytest.raises(TheoryError) as e:
        base().assemble(source, source="prog.tv")
    assert message in str(e.value) and "prog.tv:" in str(e.value)


def test_defining_an_opcode_twice_is_an_error():
    isa = ISA("dup")
    isa.add("A", lambda c: None, opcode=1)
    with pytest.raises(TheoryError):
        isa.add("B", lambda c: None, opcode=1)
