"""Every case of the system-level differential tests, for the command line."""

from __future__ import annotations

import importlib
import pathlib


def all_cases():
    here = pathlib.Path(__file__).parent
    out = []
    for path in sorted(here.glob("test_*.py")):
        mod = importlib.import_module(f"tests.system.{path.stem}")
        out += getattr(mod, "CASES", [])
    return out
