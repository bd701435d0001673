"""The IA-32 CPU of the simulated PC.

``cpu.py`` holds the state and the dispatch loop, with ``memory_access.py``
and ``paging.py`` as mixins of its CPU (the memory hot path, the page walk and
TLB); ``translate.py`` the decode cache; ``ops_*.py`` the instruction
semantics, one module per instruction family (``privilege.py`` says which are
privileged or sensitive); ``blockgen*.py`` the block-translation tier;
``descriptors.py``, ``interrupts.py`` and ``tasks.py`` the protection
architecture.
"""

from .cpu import CPU, CpuFault, MachineStop  # noqa: F401
from .constants import CS, DS, ES, FS, GS, SS  # noqa: F401


def enter_flat_protected_mode(cpu, code_sel=0x08, data_sel=0x10):
    """Put the CPU in the state a Multiboot loader leaves it in (Multiboot 0.6.96 §3.2):
    CR0.PE=1, flat 4 GiB code and data segments, CPL 0, IF=0."""
    from .constants import CR0_PE
    cpu.cr0 |= CR0_PE
    cpu.set_segment_cache(CS, code_sel, 0, 0xFFFFFFFF, 0xC09B)
    for s in (DS, ES, FS, GS, SS):
        cpu.set_segment_cache(s, data_sel, 0, 0xFFFFFFFF, 0xC093)
    cpu.set_cpl(0)
