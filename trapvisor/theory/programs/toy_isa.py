"""A user-defined ISA in a few lines: pass it with --isa path/to/toy_isa.py.

It has a load, a store, a privileged return and one deliberate flaw: GETB,
which copies R's bound into storage without trapping.  Is GETB sensitive?
Behaviour sensitivity compares states whose R differ by a shift of the base,
r (+) x = (l + x, b), so a bound alone is not location sensitive -- run
``trapvisor theory classify --isa toy_isa.py`` to see the verdict.  (Under
the paper's VM map, R' = (l + k, b), GETB is indeed harmless.  A monitor that
must clip b to keep a guest out of a neighbouring partition would expose the
clipped value: the definitions are about one machine and its VM map.)
"""

from trapvisor.theory.isa import ISA

isa = ISA("toy", "A user-defined toy machine.", models="nothing in particular")


@isa.instruction("MOV a, b")
def mov(c, a, b):
    "E[b] := E[a]"
    c.store(b, c.load(a))


@isa.instruction("JMP t")
def jmp(c, t):
    "P := t"
    c.jump(t)


@isa.instruction("LPSW a")
def lpsw(c, a):
    "load the PSW from E[a]; supervisor only"
    c.supervisor_only()
    c.set_psw(c.unpack_psw(c.load(a)))


@isa.instruction("GETB a")
def getb(c, a):
    "E[a] := b, the bound of R"
    c.store(a, c.R.b)
