"""The Popek-Goldberg theory of virtualization as executable code.

Popek & Goldberg, "Formal Requirements for Virtualizable Third Generation
Architectures", CACM 17(7):412-421, 1974.  One module a concept:

=================  ==========================================================
``formal_machine`` the formal machine: S = (E, M, P, R), relocation, traps
``isa``            defining an ISA in a few lines; the assembler
``isas/``          bundled ISAs, one per kind of (non-)virtualizability
``adapter``        the questions the definitions ask a machine (plug-in point)
``classifier``     privileged / control / behaviour / user / supervisor sensitive
``theorems``       Theorems 1, 2 and 3, with witnesses
``recipe_vmm``     CP = <D, A, {v_i}> built generically from an ISA
``experiments``    equivalence, resource control and efficiency, measured
``registry``       ISA names, user ISA files, plug-ins (x86 later)
``cli``            ``trapvisor theory ...``
=================  ==========================================================

This package imports nothing from the rest of trapvisor.
"""

from trapvisor.theory.errors import TheoryError
from trapvisor.theory.isa import ISA, Instance, Program
from trapvisor.theory.formal_machine import PSW, Machine, Mode, Reloc, State

__all__ = ["ISA", "Instance", "Machine", "Mode", "PSW", "Program", "Reloc", "State", "TheoryError"]
