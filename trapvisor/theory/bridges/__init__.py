"""Bridges from real machines to the formal definitions (see ``adapter.ISAAdapter``).

A bridge module implements :class:`trapvisor.theory.adapter.ISAAdapter` for a
machine too large to enumerate and registers it with
``trapvisor.theory.registry.register(name, loader)`` when imported.
``registry.KNOWN_BRIDGES`` names the module to import for each bridge; the x86
bridge (``bridges/x86.py``) is expected there once the simulated PC exists.
"""
