"""docs/kvm.md's measured figures are the benchmarks' output for the code as it is now.

Every block of figures carries the digest of the sources it describes
(``trapvisor/kvm/docs_figures.py``); when any of them changes, this test fails
until the benchmark is run again with ``--write-docs``.
"""
import pytest

from trapvisor.kvm import docs_figures as df


@pytest.mark.parametrize("name", sorted(df.SOURCES))
def test_figures_are_not_older_than_the_code_they_describe(name):
    block = df.read_block(name)
    assert block is not None, f"docs/kvm.md has no figures:{name} block; run {df.COMMANDS[name]}"
    recorded, body = block
    assert recorded == df.digest(name), (
        f"docs/kvm.md's {name} figures were measured on older code: run {df.COMMANDS[name]}")
    assert df.COMMANDS[name] in body and "| trapvisor" in body


def test_the_digest_follows_the_sources(tmp_path):
    for rel in df.SOURCES["exit-roundtrip"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    before = df.digest("exit-roundtrip", tmp_path)
    (tmp_path / df.SOURCES["exit-roundtrip"][0]).write_text("y")
    assert df.digest("exit-roundtrip", tmp_path) != before


def test_write_block_replaces_only_its_block(tmp_path):
    doc = tmp_path / "kvm.md"
    doc.write_text("intro\n<!-- figures:linux-boot digest=0 -->\nold\n<!-- /figures:linux-boot -->\nrest\n")
    df.write_block("linux-boot", ["| trapvisor | 1 s |"], doc)
    assert df.read_block("linux-boot", doc) == (df.digest("linux-boot"), "| trapvisor | 1 s |\n")
    assert doc.read_text().startswith("intro\n") and doc.read_text().endswith("rest\n")
