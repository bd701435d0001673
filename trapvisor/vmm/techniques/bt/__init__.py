"""``bt``: binary translation (Adams & Agesen, ASPLOS 2006, §3).

* ``classify.py``: which guest instructions are IDENT, rewritten, or callouts;
* ``translator.py``: guest code -> translated units (iced-x86 encodes them);
* ``tcache.py``: the translation cache in monitor memory and its maps back to the guest;
* ``callouts.py``: what the monitor does when translated code exits;
* ``technique.py``: the technique, registered as ``bt``, built on trap-emulate's machinery.
"""

from .technique import BinaryTranslation  # noqa: F401  (registers "bt")
