"""The techniques, one module each, each registered against the monitor
interface (``vmm/monitor.py``) by name.  Importing this package registers them
all, in the order `trapvisor techniques` lists them."""

from . import native, emulate, trap_emulate, kvm, bt, pv, vtx  # noqa: F401
