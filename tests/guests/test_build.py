"""trapvisor.guests: discovery, content-cached builds, errors, CLI."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from trapvisor import guests
from trapvisor.guests import GuestBuildError

EXPECTED = {"hello", "aout", "paging-timer", "ring3", "tvos"}


def test_list_guests_names_kinds_and_workloads():
    found = {g.name: g for g in guests.list_guests()}
    assert EXPECTED <= set(found)
    assert found["tvos"].kind == "os"
    assert {"mixed", "probe", "selftest", "io", "crwrite"} <= set(found["tvos"].workloads)
    assert found["hello"].kind == "test" and found["hello"].workloads == []
    assert all(g.description for g in found.values())


def test_build_guest_returns_multiboot_elf_and_is_cached():
    path = guests.build_guest("hello")
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 1          # ELF32
    assert (0x1BADB002).to_bytes(4, "little") in data[:8192]  # multiboot header
    mtime = path.stat().st_mtime_ns
    assert guests.build_guest("hello") == path               # cache hit
    assert path.stat().st_mtime_ns == mtime


def test_aout_guest_is_a_flat_binary_with_kludge_header():
    data = guests.build_guest("aout").read_bytes()
    assert data[:4] != b"\x7fELF"
    off = data.index((0x1BADB002).to_bytes(4, "little"))
    flags = int.from_bytes(data[off + 4:off + 8], "little")
    assert flags & (1 << 16)
    header_addr, load_addr, load_end, bss_end, entry = (
        int.from_bytes(data[off + 12 + 4 * i:off + 16 + 4 * i], "little") for i in range(5))
    assert load_addr == 0x100000 and header_addr == load_addr + off
    assert load_end - load_addr == len(data) and bss_end > load_end
    assert load_addr < entry < load_end


def test_resolve_kernel_guest_spec_and_file():
    assert guests.resolve_kernel("guest:hello") == guests.build_guest("hello")
    p = guests.build_guest("hello")
    assert guests.resolve_kernel(str(p)) == p


@pytest.mark.parametrize("spec, message", [
    ("guest:nosuch", "no bundled guest named 'nosuch'"),
    ("guest:", "empty guest name"),
    ("/no/such/kernel.elf", "kernel file not found"),
])
def test_resolve_kernel_errors_are_one_line(spec, message):
    with pytest.raises(GuestBuildError) as e:
        guests.resolve_kernel(spec)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_missing_tool_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))   # no gcc, as or ld here
    monkeypatch.setenv("TRAPVISOR_BUILD_DIR", str(tmp_path / "cache"))
    with pytest.raises(GuestBuildError, match=r"gcc \(program.*apt-get install gcc\)"):
        guests.build_guest("hello")


def test_cache_key_follows_sources_and_build_dir_override(monkeypatch, tmp_path):
    src = tmp_path / "guests"
    shutil.copytree(guests.GUESTS_DIR / "tests", src / "tests")
    monkeypatch.setattr(guests, "GUESTS_DIR", src)
    monkeypatch.setenv("TRAPVISOR_BUILD_DIR", str(tmp_path / "cache"))
    first = guests.build_guest("hello")
    assert first.is_relative_to(tmp_path / "cache")
    hello = src / "tests" / "hello" / "hello.S"
    hello.write_text(hello.read_text().replace("Hello from trapvisor", "Hello, changed"))
    second = guests.build_guest("hello")
    assert second != first and b"Hello, changed" in second.read_bytes()
    assert b"Hello from trapvisor" in first.read_bytes()   # old entry untouched


def test_compile_error_is_reported_with_details(monkeypatch, tmp_path):
    src = tmp_path / "guests"
    shutil.copytree(guests.GUESTS_DIR / "tests", src / "tests")
    (src / "tests" / "hello" / "hello.S").write_text("    bogus_instruction %eax\n")
    monkeypatch.setattr(guests, "GUESTS_DIR", src)
    monkeypatch.setenv("TRAPVISOR_BUILD_DIR", str(tmp_path / "cache"))
    with pytest.raises(GuestBuildError) as e:
        guests.build_guest("hello")
    assert "compiling hello.S failed" in str(e.value) and "\n" not in str(e.value)
    assert "bogus_instruction" in e.value.details
    assert not list((tmp_path / "cache").glob("hello-*"))   # no half-built entry


def run_cli(*args):
    root = pathlib.Path(guests.__file__).resolve().parent.parent
    return subprocess.run([sys.executable, "-m", "trapvisor.guests", *args], cwd=root,
                          capture_output=True, text=True, env={**os.environ})


def test_cli_list_build_and_usage():
    r = run_cli("list")
    assert r.returncode == 0 and "tvos" in r.stdout and "paging-timer" in r.stdout
    r = run_cli("build", "hello")
    assert r.returncode == 0 and r.stdout.strip() == str(guests.build_guest("hello"))
    r = run_cli("frobnicate")
    assert r.returncode == 2 and "usage:" in r.stderr
    r = run_cli("build", "nosuch")
    assert r.returncode == 1 and r.stderr.startswith("error: no bundled guest named 'nosuch'")
