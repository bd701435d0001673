"""Where ISA names come from: bundled modules, plug-ins and user files.

``load("s360")`` returns a bundled ISA; ``load("path/to/my_isa.py")`` executes
that file and returns the ISA it defines; ``load("x86")`` asks the plug-in
registered under that name.  A plug-in is any zero-argument callable that
returns an :class:`~trapvisor.theory.isa.ISA` or an
:class:`~trapvisor.theory.adapter.ISAAdapter`; register it with
:func:`register`.  A few names are *known bridges*: the module that provides
them is imported on first use and is expected to call :func:`register`
itself.  That is the plug-in point for the x86 bridge, which lives with the
simulated PC and is not part of the theory package.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Callable, Union

from trapvisor.theory.adapter import ISAAdapter
from trapvisor.theory.errors import TheoryError
from trapvisor.theory.isa import ISA
from trapvisor.theory.isas import BUNDLED

Loadable = Union[ISA, ISAAdapter]

_plugins: dict[str, tuple[Callable[[], Loadable], str]] = {}

#: name -> (module expected to register it, what the user is told if it is missing)
KNOWN_BRIDGES: dict[str, tuple[str, str]] = {
    name: (
        "trapvisor.theory.bridges.x86",
        f"--isa {name}: the x86 bridge needs the simulated PC (trapvisor.machine), which cannot be imported "
        f"(bundled ISAs: {', '.join(BUNDLED)}; or pass a Python file defining an ISA)",
    )
    for name in ("x86", "x86-strict")
}


def register(name: str, loader: Callable[[], Loadable], description: str = "") -> None:
    """Make ``--isa name`` resolve to ``loader()``."""
    _plugins[name] = (loader, description)


def names() -> list[tuple[str, str]]:
    """(name, one-line description) for every ISA that can be named."""
    out = []
    for n in BUNDLED:
        isa = _bundled(n)
        out.append((n, isa.doc))
    for n, (_, desc) in _plugins.items():
        out.append((n, desc))
    for n, (module, _) in KNOWN_BRIDGES.items():
        if n not in _plugins:
            _import_bridge(module)
        if n in _plugins and all(n != m for m, _ in out):
            out.append((n, _plugins[n][1]))
        elif n not in _plugins:
            out.append((n, "(plug-in, not available)"))
    return out


def _import_bridge(module: str) -> bool:
    """Import a known bridge's module (it registers itself); False if it is not there."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + ".")):
            return False
        raise
    return True


def _bundled(name: str) -> ISA:
    return importlib.import_module(f"trapvisor.theory.isas.{name}").ISA_


def load(spec: str) -> Loadable:
    """Resolve ``--isa`` (a name or a path to a Python file)."""
    if spec.endswith(".py") or os.sep in spec or "/" in spec:
        return load_file(spec)
    if spec in BUNDLED:
        return _bundled(spec)
    if spec not in _plugins and spec in KNOWN_BRIDGES:
        module, missing = KNOWN_BRIDGES[spec]
        if not _import_bridge(module) or spec not in _plugins:
            raise TheoryError(missing)
    if spec in _plugins:
        loaded = _plugins[spec][0]()
        if not isinstance(loaded, (ISA, ISAAdapter)):
            raise TheoryError(f"--isa {spec}: the plug-in returned {type(loaded).__name__}, not an ISA")
        return loaded
    known = ", ".join(n for n, _ in names())
    raise TheoryError(f"unknown ISA {spec!r} (known: {known}; or pass a Python file defining an ISA)")


def load_file(path: str) -> Loadable:
    """Execute a user's Python file and return the ISA it defines.

    The file must bind an ``ISA`` (or an ``ISAAdapter``) at module level: the
    one named ``ISA_``, ``isa`` or ``adapter`` if there is one, else the only
    one there is.
    """
    if not os.path.isfile(path):
        raise TheoryError(f"--isa {path}: no such file")
    modname = f"_trapvisor_user_isa_{abs(hash(os.path.abspath(path)))}"
    spec = importlib.util.spec_from_file_location(modname, path)
    if spec is None or spec.loader is None:
        raise TheoryError(f"--isa {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    try:
        spec.loader.exec_module(module)
    except TheoryError as e:
        raise TheoryError(f"--isa {path}: {e}") from None
    except Exception as e:  # the user's code: report it as one line
        raise TheoryError(f"--isa {path}: the file raised {type(e).__name__}: {e}") from None
    for attr in ("ISA_", "isa", "adapter"):
        obj = getattr(module, attr, None)
        if isinstance(obj, (ISA, ISAAdapter)):
            return obj
    found = [v for v in vars(module).values() if isinstance(v, (ISA, ISAAdapter))]
    if len({id(v) for v in found}) == 1:
        return found[0]
    if not found:
        raise TheoryError(f"--isa {path}: the file defines no ISA (bind one to a module-level name 'isa')")
    raise TheoryError(f"--isa {path}: the file defines several ISAs; name the one to use 'isa'")
