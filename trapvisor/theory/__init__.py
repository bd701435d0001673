"""The Popek-Goldberg theory of virtualization as executable code.

Popek & Goldberg, "Formal Requirements for Virtualizable Third Generation
Architectures", CACM 17(7):412-421, 1974.  One module a concept:

==================  =========================================================
``formal_machine``  the formal machine: S = (E, M, P, R), relocation, traps
``isa``             defining an ISA in a few lines; the assembler
``isas/``           bundled ISAs, one per kind of (non-)virtualizability
``definitions``     the paper's definitions, one function each, quoted
``adapter``         the questions the definitions ask a machine (plug-in point)
``classifier``      every definition on every instance: enumerated or sampled
``theorems``        Theorems 1, 2 and 3: conditions, evidence, the alarm
``program_sets``    every program within a bound, random ones, witness replays
``recipe_vmm``      CP = <D, A, {v_i}> built generically from an ISA
``experiments``     equivalence (in lock step), resource control, efficiency
``registry``        ISA names, user ISA files, plug-ins (the x86 bridge)
``render``          tables as text, Markdown, CSV, JSON, LaTeX
``reports``         what the commands print
``bridges/``        the simulated IA-32 CPU (the only part importing trapvisor)
==================  =========================================================

Apart from ``bridges/``, this package imports nothing from the rest of trapvisor.
Its commands (``trapvisor theory ...``) live with the others in ``trapvisor/cli/``:
``theory.py`` (parsing and commands), ``theory_run.py`` (run and vmm),
``theory_docs.py`` (the generated tables of docs/theory.md).
"""

from trapvisor.theory.errors import TheoryError
from trapvisor.theory.isa import ISA, Instance, Program
from trapvisor.theory.formal_machine import PSW, Machine, Mode, Reloc, State

__all__ = ["ISA", "Instance", "Machine", "Mode", "PSW", "Program", "Reloc", "State", "TheoryError"]
