"""Bridges from real machines to the formal definitions (see ``adapter.ISAAdapter``).

A bridge module implements :class:`trapvisor.theory.adapter.ISAAdapter` for a
machine too large to enumerate and registers it with
``trapvisor.theory.registry.register(name, loader)`` when imported;
``registry.KNOWN_BRIDGES`` names the module to import for each bridge.  The
bridges are the only part of ``trapvisor.theory`` that imports the rest of
trapvisor.

* ``x86.py`` -- the IA-32 CPU of the simulated PC (``--isa x86`` and
  ``--isa x86-strict``): the mapping of M, E, P, R, traps and relocation onto
  x86, and the adapter;
* ``x86_forms.py`` -- the instruction forms, enumerated from the CPU's handler
  registry and encoded from iced-x86's opcode tables;
* ``x86_state.py`` -- sampled machine states, and running one instruction;
* ``x86_report.py`` -- the run (workers, escalation, privilege profile), the
  table grouped by instruction, the comparison with Robin and Irvine (2000).
"""
