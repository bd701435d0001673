"""Debugging a guest: the gdb remote stub (``gdbstub.py`` over ``packets.py``), its backends
(``target.py``: ``sim_target.py`` for the simulated PC and every technique, ``kvm_target.py``
for /dev/kvm), snapshots (``snapshot.py``), record and replay (``replay.py``) and reverse
execution (``reverse.py``).  docs/debugging.md shows them at work."""
