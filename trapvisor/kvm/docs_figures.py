"""The measured figures in docs/kvm.md: written by the benchmarks, checked against the code.

Each block of figures in docs/kvm.md sits between two markers::

    <!-- figures:NAME digest=HEX -->
    ...lines the benchmark wrote...
    <!-- /figures:NAME -->

and is written only by the benchmark that measures it, run with
``--write-docs`` (:data:`COMMANDS`).  The digest is a SHA-256 over the source
files the figures describe (:data:`SOURCES`), so
``tests/kvm/test_docs_figures.py`` fails as soon as any of them changes
after the figures were measured: the figures are then older than the code.
"""

from __future__ import annotations

import hashlib
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "kvm.md"

_EXIT_PATH = ["trapvisor/kvm/runner.py", "trapvisor/kvm/vcpu_loop.py", "trapvisor/kvm/exits.py",
              "trapvisor/kvm/vcpu.py", "trapvisor/kvm/ioctls.py", "trapvisor/kvm/vm.py"]
SOURCES = {
    "exit-roundtrip": _EXIT_PATH + ["benchmarks/kvm_exit_roundtrip.py"],
    "linux-boot": _EXIT_PATH + ["trapvisor/kvm/boot_linux.py", "trapvisor/kvm/cpuid.py",
                                "trapvisor/kvm/firmware_state.py", "trapvisor/machine/acpi.py",
                                "trapvisor/machine/bios.py", "trapvisor/machine/cpuid_model.py",
                                "benchmarks/kvm_linux_boot.py"],
}
COMMANDS = {
    "exit-roundtrip": "python benchmarks/kvm_exit_roundtrip.py --write-docs",
    "linux-boot": "python benchmarks/kvm_linux_boot.py --write-docs",
}


def digest(name: str, root: pathlib.Path = ROOT) -> str:
    h = hashlib.sha256()
    for rel in SOURCES[name]:
        h.update(rel.encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _pattern(name: str) -> re.Pattern:
    return re.compile(rf"<!-- figures:{re.escape(name)} digest=([0-9a-f]+) -->\n(.*?)<!-- /figures:{re.escape(name)} -->",
                      re.S)


def read_block(name: str, doc: pathlib.Path = DOC) -> tuple[str, str] | None:
    """(digest, body) of the block ``name`` in the document, or None if it has none."""
    m = _pattern(name).search(doc.read_text())
    return (m[1], m[2]) if m else None


def write_block(name: str, lines: list[str], doc: pathlib.Path = DOC) -> None:
    """Replace the block ``name`` (which must exist) with ``lines`` and the current digest."""
    text = doc.read_text()
    block = f"<!-- figures:{name} digest={digest(name)} -->\n" + "".join(line + "\n" for line in lines) \
        + f"<!-- /figures:{name} -->"
    new, n = _pattern(name).subn(lambda m: block, text)
    if n != 1:
        raise ValueError(f"{doc} has no figures:{name} block to replace")
    doc.write_text(new)
