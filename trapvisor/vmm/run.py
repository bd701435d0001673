"""One entry point for every technique: ``run_technique(name, kernel, ...)``.

It looks the technique up in the registry (``monitor.py``), builds it with
the run's options and runs it.  No technique is named here: a new one is
reachable from `trapvisor run --technique`, `compare` and `vms` as soon as it
registers.
"""

from __future__ import annotations

from ..errors import UserError
from . import monitor
from .costmodel import CostModel
from .monitor import RunOptions
from .techniques.base import TechniqueResult


def techniques() -> dict:
    """name -> technique class, every registered technique."""
    return monitor.registered()


def run_technique(name: str, kernel: str, *, max_instructions: int = 2_000_000_000,
                  costs: CostModel | None = None, strict_options: bool = False,
                  **options) -> TechniqueResult:
    """Run ``kernel`` under technique ``name``.  ``options`` are RunOptions fields.

    With ``strict_options`` (`trapvisor run`) an option the technique cannot honour
    is an error naming it; otherwise (`compare`, one option set for several
    techniques) each technique is given only the options it honours."""
    cls = monitor.get(name)
    opts = RunOptions(cls.guest_kernel(str(kernel)), costs=costs or CostModel.default(), **options)
    bad = cls.unsupported(opts)
    if bad and strict_options:
        raise UserError(f"technique {name} does not support {', '.join(bad)}")
    for opt in RunOptions.OPTIONAL:
        if opt not in cls.honours:
            setattr(opts, opt, RunOptions.__dataclass_fields__[opt].default)
    return cls(opts).run(max_instructions)
