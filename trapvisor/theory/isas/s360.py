"""``s360``: a virtualizable machine in the spirit of the IBM System/360.

What it models: the machine Popek & Goldberg (1974, CACM 17(7)) had in mind
as *virtualizable*.  Every instruction that can touch the mode, the
relocation-bounds register or the PSW is privileged -- it traps in user mode --
and everything else only computes on storage through R.  There is no I/O.

Instructions (``a``, ``b``: virtual addresses; ``t``: a jump target; ``v``,
``l``: small immediates):

=========  ===================================================  ==========
NOP        nothing                                              innocuous
HALT       jump to itself: a fixed point ends a run             innocuous
LDI a, v   E[a] := v                                            innocuous
MOV a, b   E[b] := E[a]                                         innocuous
ADD a, b   E[b] := E[b] + E[a]  (mod 2**W)                      innocuous
SUB a, b   E[b] := E[b] - E[a]  (mod 2**W)                      innocuous
JMP t      P := t                                               innocuous
JZ a, t    if E[a] = 0 then P := t                              innocuous
LPSW a     load the PSW (M, P, R) from E[a]  (360 LPSW)         privileged
SETR l, b  R := (l, b)                                          privileged
SPSW a     E[a] := the current PSW                              privileged
=========  ===================================================  ==========

The flawed machines in this package are this one plus one instruction each.
"""

from trapvisor.theory.isa import ISA
from trapvisor.theory.formal_machine import PSW, Reloc


def base(name: str = "s360", doc: str = "", models: str = "") -> ISA:
    """A fresh copy of the s360 instruction set under ``name``."""
    isa = ISA(
        name,
        doc or "Virtualizable: every sensitive instruction (LPSW, SETR, SPSW) is privileged.",
        models=models or "IBM System/360: privileged load-PSW and set-R, no I/O",
    )

    @isa.instruction("NOP", opcode=0)
    def nop(c):
        """do nothing"""

    @isa.instruction("HALT", opcode=1)
    def halt(c):
        """jump to itself, a fixed point that ends a run"""
        c.jump(c.pc)

    @isa.instruction("LDI a, v", opcode=2)
    def ldi(c, a, v):
        """E[a] := v"""
        c.store(a, v)

    @isa.instruction("MOV a, b", opcode=3)
    def mov(c, a, b):
        """E[b] := E[a]"""
        c.store(b, c.load(a))

    @isa.instruction("ADD a, b", opcode=4)
    def add(c, a, b):
        """E[b] := E[b] + E[a]"""
        c.store(b, c.load(b) + c.load(a))

    @isa.instruction("SUB a, b", opcode=5)
    def sub(c, a, b):
        """E[b] := E[b] - E[a]"""
        c.store(b, c.load(b) - c.load(a))

    @isa.instruction("JMP t", opcode=6)
    def jmp(c, t):
        """P := t"""
        c.jump(t)

    @isa.instruction("JZ a, t", opcode=7)
    def jz(c, a, t):
        """if E[a] = 0 then P := t"""
        if c.load(a) == 0:
            c.jump(t)

    @isa.instruction("LPSW a", opcode=8)
    def lpsw(c, a):
        """load PSW (M, P, R) from E[a]; privileged (System/360 LPSW)"""
        c.supervisor_only()
        c.set_psw(c.unpack_psw(c.load(a)))

    @isa.instruction("SETR l, b", opcode=9)
    def setr(c, l, b):
        """R := (l, b); privileged"""
        c.supervisor_only()
        c.R = Reloc(l, b)

    @isa.instruction("SPSW a", opcode=10)
    def spsw(c, a):
        """E[a] := current PSW; privileged"""
        c.supervisor_only()
        c.store(a, c.pack_psw(PSW(c.mode, c.pc, c.R)))

    return isa


ISA_ = base()
