"""Tests that need a host program or file: skipped outside CI, failed under CI.

A missing tool on a developer's laptop should not hide the rest of the
suite, so there the test is skipped with the Debian package to install in
the reason.  Under CI (``.ci/run`` sets ``CI``) the set-up has installed
everything, so a missing tool means the set-up is incomplete: the test fails
and says which package is missing.
"""

import pytest

from trapvisor import hosttools


def need(*names: str) -> None:
    """Skip (outside CI) or fail (under CI) unless every named requirement is here."""
    gone = hosttools.missing(names)
    if not gone:
        return
    why = "; ".join(r.problem() for r in gone)
    if hosttools.in_ci():
        pytest.fail(f"CI set-up is incomplete: {why}", pytrace=False)
    pytest.skip(why)


def need_kvm(info) -> None:
    """The same rule for /dev/kvm: every machine the project runs CI on has it."""
    if info.available:
        return
    why = f"no usable KVM: {info.message}"
    if hosttools.in_ci():
        pytest.fail(f"CI machine without KVM: {why}", pytrace=False)
    pytest.skip(why)
