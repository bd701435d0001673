"""Fixtures of the system-level differential tests."""

import pytest

from tests.system.harness import runner


@pytest.fixture(scope="session")
def system_machines():
    """Skip unless QEMU and trapvisor's PC are both available."""
    if runner.QEMU is None:
        pytest.skip("qemu-system-i386 is not installed (apt-get install qemu-system-x86)")
    if not runner.trapvisor_available():
        pytest.skip("trapvisor.machine.pc.run_kernel is not available")
    for tool in ("gcc", "as", "ld"):
        if runner.shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    return True
