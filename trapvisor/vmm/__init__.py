"""The virtual machine monitor, in Popek and Goldberg's sense.

A control program CP = <D, A, {v_i}> (Popek & Goldberg, "Formal Requirements
for Virtualizable Third Generation Architectures", CACM 17(7), 1974, the
section on the virtual machine monitor):

* the dispatcher D (``dispatcher.py``) receives every trap, exit or callout
  of a guest and routes it;
* the allocator A (``allocator.py``, ``shadow_paging.py``,
  ``shadow_descriptors.py``) owns the host's resources: memory partitions,
  the page tables and descriptor tables the host CPU really uses;
* the interpreter routines v_i (``interpreter.py``) emulate one guest
  instruction's effect on the virtual CPU.

A technique (``techniques/``) decides how guest instructions reach the host
CPU: ``emulate`` interprets all of them, ``trap-emulate`` runs them directly
at ring 1 and interprets only what traps.
"""
