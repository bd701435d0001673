"""Fixtures of the system-level differential tests."""

import pytest

from tests.hosttools_gate import need
from tests.system.harness import runner
from trapvisor import hosttools


@pytest.fixture(scope="session")
def system_machines():
    """QEMU, the guest toolchain and trapvisor's PC (skipped outside CI if missing, failed in CI)."""
    need(*hosttools.QEMU, *hosttools.GUEST_BUILD)
    assert runner.trapvisor_available(), "trapvisor.machine.pc.run_kernel is not importable"
    return True
