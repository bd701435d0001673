"""Every limit holds whatever the guest does, under every technique.

The guest is guests/hostile/fault-loop: an exception whose gate leads to an
instruction that raises it again (mode=0: #UD; mode=1: #GP, one instruction
retired per loop), or a slide through zero-filled memory (mode=2).  The
instruction limit counts steps (instructions retired plus events delivered to
the guest), so a guest that only ever faults reaches it too; the time limit
holds on its own; and under `trapvisor vms` a VM caught in such a loop does
not starve the others.
"""

import pytest

from trapvisor.guests import build_guest
from trapvisor.vmm import monitor
from trapvisor.vmm.run import run_technique
from trapvisor.vmm.scheduler import Scheduler, VmSpec

# Techniques that run any kernel (a paravirtual one runs only kernels ported to it: its
# limits are held in tests/vmm/techniques/test_pv_limits.py).
SIMULATED = [n for n, cls in monitor.registered().items() if cls.time_sliced and not cls.paravirtual]
LIMIT = 60_000
MEMORY = 32 << 20


@pytest.mark.parametrize("strict", [False, True], ids=["standard", "strict"])
@pytest.mark.parametrize("technique", SIMULATED)
@pytest.mark.parametrize("mode", [0, 1, 2])
def test_the_instruction_limit_holds_in_a_fault_loop(technique, mode, strict):
    r = run_technique(technique, str(build_guest("fault-loop")), cmdline=f"mode={mode}",
                      memory_bytes=MEMORY, max_instructions=LIMIT, strict=strict)
    assert r.steps <= LIMIT + 1000, f"{r.steps} steps past a limit of {LIMIT}"
    ended = r.exit_code is not None or r.stop_reason is not None
    assert ended and (r.stop_reason != "instruction limit" or r.steps >= LIMIT)


@pytest.mark.parametrize("technique", SIMULATED)
def test_the_time_limit_holds_on_its_own(technique):
    r = run_technique(technique, str(build_guest("fault-loop")), cmdline="mode=2",
                      memory_bytes=MEMORY, max_instructions=10**12, max_seconds=0.5)
    assert r.stop_reason == "time limit", r.stop_reason
    # The run itself (building the VM is not limited), with room for a loaded machine.
    assert r.seconds < 5, f"a 0.5 s limit took {r.seconds:.1f} s of running"


def test_a_vm_in_a_fault_loop_does_not_starve_its_neighbours():
    hello = VmSpec(str(build_guest("hello")), "", MEMORY)
    loop = VmSpec(str(build_guest("fault-loop")), "mode=0", MEMORY)
    r = Scheduler([loop, hello, loop], slice_instructions=5_000).run(200_000)
    assert r.results[1].exit_code == 1 and b"Hello" in r.results[1].output
    for i in (0, 2):
        assert r.results[i].steps <= 200_000 + 1000
