"""ISA names, user files and the plug-in point for bridges (x86)."""

import pytest

from trapvisor.theory import registry
from trapvisor.theory.adapter import FormalAdapter
from trapvisor.theory.classifier import classify
from trapvisor.theory.errors import TheoryError
from trapvisor.theory.isas.s360 import base


def test_every_bundled_isa_loads_and_documents_what_it_models():
    for name in registry.BUNDLED:
        isa = registry.load(name)
        assert isa.name == name and isa.doc and isa.models


def test_a_registered_plug_in_is_resolved_by_name():
    class Bridge(FormalAdapter):
        supports_exhaustive = False

    registry.register("fake-bridge", lambda: Bridge(base("fake"), sample_q=8), "a test bridge")
    try:
        loaded = registry.load("fake-bridge")
        assert isinstance(loaded, Bridge)
        assert ("fake-bridge", "a test bridge") in registry.names()
        assert classify(loaded, samples=10).method == "sampled"
    finally:
        registry._plugins.pop("fake-bridge")


def test_x86_is_a_known_bridge_imported_on_first_use():
    assert registry.KNOWN_BRIDGES["x86"][0] == "trapvisor.theory.bridges.x86"
    assert registry.load("x86").name == "x86"


def test_a_known_bridge_that_cannot_be_imported_is_a_clean_error():
    registry.KNOWN_BRIDGES["nope"] = ("trapvisor.theory.bridges.nope", "--isa nope: not available")
    try:
        with pytest.raises(TheoryError, match="not available"):
            registry.load("nope")
        assert ("nope", "(plug-in, not available)") in registry.names()
    finally:
        registry.KNOWN_BRIDGES.pop("nope")


def test_a_user_file_defining_several_isas_must_name_one(tmp_path):
    f = tmp_path / "two.py"
    f.write_text("from trapvisor.theory.isa import ISA\na = ISA('a')\nb = ISA('b')\n")
    with pytest.raises(TheoryError, match="several ISAs"):
        registry.load(str(f))
    f.write_text("from trapvisor.theory.isa import ISA\na = ISA('a')\nisa = ISA('chosen')\n")
    assert registry.load(str(f)).name == "chosen"


def test_the_theory_package_imports_nothing_else_from_trapvisor():
    import ast
    from pathlib import Path

    root = Path(registry.__file__).parent
    for path in root.rglob("*.py"):
        if path.relative_to(root).parts[0] == "bridges":
            continue  # a bridge is where a real machine (trapvisor.machine) meets the theory
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            mods = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                mods = [node.module]
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            for m in mods:
                if m.startswith("trapvisor"):
                    assert m.startswith("trapvisor.theory"), f"{path.name} imports {m}"
