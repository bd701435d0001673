"""The cost model: turns an event log into simulated cycles.

Python's speed says nothing about a technique's real cost, so trapvisor
charges every guest instruction and every monitor event a number of cycles
taken from the literature (defaults in ``costs.toml``, each cited there) and
compares techniques in those cycles.  A user can override any value with a
TOML file of the same keys.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from importlib import resources

from ..errors import UserError


@dataclass(frozen=True)
class CostModel:
    direct_instruction: int
    emulated_instruction: int
    trap_roundtrip: int
    interpreter_routine: int
    shadow_fill: int
    shadow_update: int
    shadow_flush: int
    shadow_switch: int
    inject_interrupt: int
    native_event: int
    vm_exit_entry: int
    ept_walk: int
    bt_translate_instruction: int
    bt_callout: int
    bt_chain: int
    pv_hypercall: int
    pv_bounce: int
    pv_validated_update: int

    @classmethod
    def default(cls) -> "CostModel":
        text = resources.files(__package__).joinpath("costs.toml").read_text()
        return cls(**tomllib.loads(text))

    @classmethod
    def load(cls, path: str | None) -> "CostModel":
        base = cls.default()
        if path is None:
            return base
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as e:
            raise UserError(f"{path}: cannot read cost model ({e.strerror})") from None
        except tomllib.TOMLDecodeError as e:
            raise UserError(f"{path}: not valid TOML ({e})") from None
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"{path}: unknown cost keys {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        for k, v in data.items():
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:   # TOML's true is a Python int
                raise UserError(f"{path}: cost {k} must be a non-negative integer, not {v!r}")
        values = {f.name: data.get(f.name, getattr(base, f.name)) for f in fields(cls)}
        return cls(**values)
