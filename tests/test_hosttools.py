"""The set-up is complete: every host program and file the suite uses comes from
a Debian package that the Makefile installs, and a missing one is one line.

This is the check that a fresh machine would do, done on this one: each
program and each file that QEMU and Bochs open is traced to the package that
owns it (``dpkg -S``, links resolved), and that package must be the one the
table in trapvisor/hosttools.py names (or a hard dependency of it), and the
Makefile must install it by name.
"""

import os
import pathlib
import re
import shutil
import subprocess

import pytest

from tests.hosttools_gate import need
from tests.system.harness import bochs as bochs_harness
from trapvisor import cli, hosttools

REPO = pathlib.Path(__file__).resolve().parents[1]


def makefile_packages() -> set[str]:
    text = (REPO / "Makefile").read_text()
    m = re.search(r"^APT_PACKAGES\s*:=\s*(.*)$", text, re.M)
    assert m, "the Makefile has no APT_PACKAGES line"
    return set(m.group(1).split())


def depends_closure(package: str, depth: int = 3) -> set[str]:
    """``package`` and the installed packages it depends on (Depends, Pre-Depends)."""
    seen, todo = {package}, [(package, 0)]
    while todo:
        p, d = todo.pop()
        if d >= depth:
            continue
        r = subprocess.run(["dpkg-query", "-W", "-f=${Depends}, ${Pre-Depends}", p],
                           capture_output=True, text=True)
        for alt in r.stdout.split(","):
            for name in alt.split("|"):
                name = name.strip().split(" ")[0].split(":")[0]
                if name and name not in seen:
                    seen.add(name)
                    todo.append((name, d + 1))
    return seen


@pytest.fixture(scope="module")
def debian():
    if shutil.which("dpkg") is None:
        if hosttools.in_ci():
            pytest.fail("CI runs on Debian: dpkg is missing", pytrace=False)
        pytest.skip("not a Debian host: the packages cannot be traced")


def test_the_makefile_installs_exactly_the_packages_of_the_table():
    assert makefile_packages() == set(hosttools.packages())


@pytest.mark.parametrize("req", hosttools.REQUIREMENTS, ids=[r.name for r in hosttools.REQUIREMENTS])
def test_each_program_and_file_comes_from_the_package_the_table_names(req, debian):
    need(req.name)
    owner = hosttools.package_owning(req.locate())
    assert owner is not None, f"{req.locate()}: no installed package owns it"
    assert owner in depends_closure(req.package), \
        f"{req.name} comes from {owner}, which {req.package} (what the Makefile installs) does not bring"


def test_every_file_bochs_opens_is_in_the_table():
    rc = bochs_harness.bochsrc(pathlib.Path("/f"), pathlib.Path("/s"), pathlib.Path("/l"))
    opened = re.findall(r"^\w+:\s*file=(\S+)", rc, re.M)
    assert opened, "the harness's bochsrc names no ROM image"
    known = {p for r in hosttools.REQUIREMENTS for p in r.paths}
    assert set(opened) <= known, f"bochsrc opens files the set-up does not know: {set(opened) - known}"


def test_qemu_looks_for_its_firmware_where_the_table_does():
    need("qemu-system-i386")
    out = subprocess.run(["qemu-system-i386", "-L", "help"], capture_output=True, text=True).stdout
    dirs = {os.path.realpath(d) for d in out.split()}
    assert dirs, "qemu-system-i386 -L help printed no directory"
    assert dirs <= {os.path.realpath(d) for d in hosttools.QEMU_DATA_DIRS}


def test_a_dangling_link_counts_as_missing_and_names_its_package(tmp_path):
    link = tmp_path / "VGABIOS"
    link.symlink_to(tmp_path / "absent")
    req = hosttools.Requirement("VGABIOS", "vgabios", "Bochs's VGA BIOS", (str(link),))
    assert req.locate() is None
    assert "apt-get install vgabios" in req.problem()


def test_doctor_names_the_package_of_a_missing_file(monkeypatch, capsys):
    gone = hosttools.Requirement("VGABIOS-lgpl-latest", "vgabios", "Bochs's VGA BIOS", ("/nonexistent/vga",))
    monkeypatch.setattr(hosttools, "REQUIREMENTS", hosttools.REQUIREMENTS[:-1] + (gone,))
    assert cli.main(["doctor", "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "apt-get install vgabios" in err[0]


def test_doctor_passes_on_a_complete_set_up(capsys):
    need(*(r.name for r in hosttools.REQUIREMENTS))
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "MISSING" not in out and all(r.name in out for r in hosttools.REQUIREMENTS)


def test_require_is_one_user_error_line(monkeypatch):
    from trapvisor.errors import UserError
    monkeypatch.setitem(hosttools.BY_NAME, "bochs",
                        hosttools.Requirement("trapvisor-no-such-program", "bochs", "the tie-breaker"))
    with pytest.raises(UserError, match=r"^trapvisor-no-such-program .*apt-get install bochs\)$"):
        hosttools.require("bochs")


def test_setup_without_root_is_one_clear_line(debian):
    """`make apt` as an ordinary user with a package missing: one line, status 1, no apt-get."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root to drop to an ordinary user (setpriv)")
    r = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                        "make", "-s", "-C", str(REPO), "apt", "APT_PACKAGES=trapvisor-no-such-package"],
                       capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("trapvisor set-up:")]
    assert len(lines) == 1 and "sudo apt-get install trapvisor-no-such-package" in lines[0], r.stderr
