"""One entry point for every technique: ``run_technique(name, kernel, ...)``."""

from __future__ import annotations

from ..errors import UserError
from .costmodel import CostModel
from .techniques.base import TechniqueResult
from .techniques.emulate import run_emulate
from .techniques.native import run_native
from .techniques.kvm import run_kvm_technique
from .techniques.trap_emulate import run_trap_emulate

TECHNIQUES = {
    "native": run_native,
    "emulate": run_emulate,
    "trap-emulate": run_trap_emulate,
    "kvm": run_kvm_technique,
}


def run_technique(name: str, kernel: str, *, cmdline: str = "", memory_bytes: int = 128 << 20,
                  max_instructions: int = 2_000_000_000, costs: CostModel | None = None,
                  strict: bool = False, serial_out=None, keep_events: bool = False,
                  trace_file=None, audit: bool = False, shadow_cache: int | None = None) -> TechniqueResult:
    fn = TECHNIQUES.get(name)
    if fn is None:
        raise UserError(f"unknown technique {name!r}; known: {', '.join(TECHNIQUES)}")
    kwargs = dict(cmdline=cmdline, memory_bytes=memory_bytes, max_instructions=max_instructions,
                  costs=costs or CostModel.default(), strict=strict, serial_out=serial_out)
    if name == "trap-emulate":
        kwargs.update(keep_events=keep_events, trace_file=trace_file, audit=audit)
        if shadow_cache is not None:
            kwargs.update(shadow_cache=shadow_cache)
    elif name == "native":
        kwargs.update(audit=audit)
    # emulate runs the guest on its own complete software PC: nothing to audit.
    return fn(kernel, **kwargs)
