"""The package's layers: every import points downward, and only the CLI talks to the terminal.

Each top-level part of ``trapvisor`` has a rank; a module may import only
from its own part or from parts of a lower rank::

    8  __main__                      python -m trapvisor
    7  cli                           argument parsing, commands, terminal output
    6  report, debug                 comparison tables, HTML, divergences; the gdb stub
    5  vmm                           the monitor and its techniques
    4  kvm                           the /dev/kvm backend
    3  machine                       the simulated PC: CPU, devices, board, loaders
    2  guests                        builds the bundled guests (uses hosttools)
    1  events, hosttools, linux      the shared event format; host programs and files; Debian Linux assets
    0  errors, the package itself    UserError; trapvisor/__init__.py

``vmm`` sits above ``kvm`` because the ``kvm`` technique drives the KVM
backend as one more row of a comparison; the backend knows nothing of the
monitor.  ``theory`` stands apart: nothing but ``cli`` imports it, and it
imports nothing of trapvisor outside itself, except ``theory/bridges``,
which may import ``machine`` and the leaf modules (ranks 0-3) to check the
formal model against the simulated CPU.

Imports are read with :mod:`ast` from every module, including imports
inside functions and ``try`` blocks, so a lazy import cannot hide an upward
dependency.  ``machine``, ``vmm`` and ``kvm`` must not use argparse nor
write to the terminal (``print``, ``sys.stdout``, ``sys.stderr``): their
results go to the caller, events to the event log, and the CLI or the
report layer decides what the user sees.  ``benchmarks/`` must not import
the CLI.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

RANKS = {
    "trapvisor": 0, "errors": 0,
    "events": 1, "hosttools": 1, "linux": 1,
    "guests": 2,
    "machine": 3,
    "kvm": 4,
    "vmm": 5,
    "report": 6,
    "debug": 6,
    "cli": 7,
    "__main__": 8,
}
THEORY = "theory"
BRIDGE_MAX_RANK = RANKS["machine"]
QUIET_PARTS = ("machine", "vmm", "kvm", "debug")
TERMINAL_STREAMS = ("stdout", "stderr", "__stdout__", "__stderr__")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(tree: ast.AST, name: str, is_package: bool):
    """(line, absolute module name) for every import in the tree, at any depth."""
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # ``from trapvisor import cli`` and ``from . import hosttools`` name a part
            # in the alias, so the alias is kept (for a class or function it is harmless).
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}" if module else alias.name


def part_of(module: str) -> str | None:
    """The top-level part of trapvisor a module belongs to (None: not trapvisor)."""
    parts = module.split(".")
    if parts[0] != "trapvisor":
        return None
    return parts[1] if len(parts) > 1 else "trapvisor"


def import_violation(importer: str, target: str) -> str | None:
    src, dst = part_of(importer), part_of(target)
    if dst is None or src == dst:
        return None
    if dst == THEORY:
        return None if src == "cli" else f"only the CLI may import {THEORY}"
    if src == THEORY:
        in_bridges = importer.startswith("trapvisor.theory.bridges")
        if in_bridges and RANKS.get(dst, 99) <= BRIDGE_MAX_RANK:
            return None
        return "theory stands alone (only theory/bridges may import machine and the leaf modules)"
    if src not in RANKS or dst not in RANKS:
        return f"{src if src not in RANKS else dst} has no rank in tests/test_layering.py"
    if RANKS[dst] >= RANKS[src]:
        return f"{src} (rank {RANKS[src]}) may not import {dst} (rank {RANKS[dst]})"
    return None


def terminal_uses(tree: ast.AST):
    """(line, what) for argparse, print and sys.stdout/stderr anywhere in the tree."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "argparse":
                    yield node.lineno, "imports argparse"
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] == "argparse":
                yield node.lineno, "imports argparse"
            if node.module == "sys" and any(a.name in TERMINAL_STREAMS for a in node.names):
                yield node.lineno, "imports sys.stdout/stderr"
        elif isinstance(node, ast.Name) and node.id == "print":
            yield node.lineno, "uses print"
        elif (isinstance(node, ast.Attribute) and node.attr in TERMINAL_STREAMS
              and isinstance(node.value, ast.Name) and node.value.id == "sys"):
            yield node.lineno, f"uses sys.{node.attr}"


def python_files(root: Path, folder: str):
    return sorted((root / folder).rglob("*.py"))


def layering_violations(root: Path = ROOT) -> list[str]:
    """Every upward import and every terminal use in the quiet layers, as 'path:line: why'."""
    found = []
    for path in python_files(root, "trapvisor"):
        name = module_name(path, root)
        tree = ast.parse(path.read_text(), str(path))
        where = path.relative_to(root)
        for line, target in imported_modules(tree, name, path.name == "__init__.py"):
            why = import_violation(name, target)
            if why:
                found.append(f"{where}:{line}: imports {target}: {why}")
        if part_of(name) in QUIET_PARTS:
            found.extend(f"{where}:{line}: {what}" for line, what in terminal_uses(tree))
    for path in python_files(root, "benchmarks"):
        tree = ast.parse(path.read_text(), str(path))
        for line, target in imported_modules(tree, module_name(path, root), False):
            if part_of(target) == "cli":
                found.append(f"{path.relative_to(root)}:{line}: benchmarks may not import the CLI")
    return found


def test_every_import_points_downward_and_only_the_cli_prints():
    found = layering_violations()
    assert not found, "layering violations:\n" + "\n".join(found)


@pytest.mark.parametrize("importer,target,ok", [
    ("trapvisor.cli.run", "trapvisor.machine.pc", True),
    ("trapvisor.machine.pc", "trapvisor.cli", False),
    ("trapvisor.kvm.runner", "trapvisor.vmm.vm", False),
    ("trapvisor.vmm.techniques.kvm", "trapvisor.kvm.runner", True),
    ("trapvisor.machine.board", "trapvisor.guests", True),
    ("trapvisor.guests", "trapvisor.machine", False),
    ("trapvisor.events", "trapvisor.hosttools", False),
    ("trapvisor.theory.bridges.x86", "trapvisor.machine.cpu", True),
    ("trapvisor.theory.classifier", "trapvisor.machine.cpu", False),
    ("trapvisor.theory.bridges.x86", "trapvisor.vmm", False),
    ("trapvisor.report.compare", "trapvisor.theory", False),
    ("trapvisor.cli", "trapvisor.theory.isa", True),
])
def test_the_rank_rule(importer, target, ok):
    assert (import_violation(importer, target) is None) == ok


def test_terminal_uses_are_found_in_function_bodies():
    tree = ast.parse("def f():\n    import argparse\n    import sys\n    print(1, file=sys.stderr)\n")
    assert {what for _, what in terminal_uses(tree)} == {"imports argparse", "uses print", "uses sys.stderr"}


def test_relative_and_package_imports_resolve():
    tree = ast.parse("from . import hosttools\nfrom ..cli import main\nfrom .bus import IoBus\n")
    got = [m for _, m in imported_modules(tree, "trapvisor.kvm.runner", False)]
    assert got == ["trapvisor.kvm.hosttools", "trapvisor.cli.main", "trapvisor.kvm.bus.IoBus"]
    tree = ast.parse("from . import hosttools\n")
    assert [m for _, m in imported_modules(tree, "trapvisor.guests", False)] == ["trapvisor.hosttools"]


def test_a_tree_with_upward_imports_and_printing_fails(tmp_path):
    # The shapes this test was written against (trapvisor before cli/ was a package).
    (tmp_path / "trapvisor" / "kvm").mkdir(parents=True)
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "trapvisor" / "__init__.py").write_text("")
    (tmp_path / "trapvisor" / "kvm" / "__init__.py").write_text("")
    (tmp_path / "trapvisor" / "kvm" / "__main__.py").write_text(
        "import argparse\n\ndef main():\n    from ..cli import parse_size\n    print(parse_size('1M'))\n")
    (tmp_path / "benchmarks" / "b.py").write_text("from trapvisor.cli import main\n")
    found = layering_violations(tmp_path)
    assert any("kvm (rank 4) may not import cli" in f for f in found)
    assert any(f.endswith("imports argparse") for f in found)
    assert any(f.endswith("uses print") for f in found)
    assert any("benchmarks may not import the CLI" in f for f in found)
