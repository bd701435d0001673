"""Overcommitted host memory: pmaps, content-based page sharing, hypervisor swapping.

After Waldspurger (OSDI 2002).  What must hold:

* every guest's output, exit code and instruction count are those it has
  alone on a fixed partition (reclamation is invisible to the guest);
* sharing saves host frames, as the statistics say and as the pmaps
  themselves show (one host frame named by pages of several VMs);
* a store into a shared page gives the writer a private copy and leaves the
  other VM's page as it was (read back through its own window);
* no shadow page table maps a frame that is not its VM's alone writable:
  a guest can never write another VM's frame through a share;
* VMs whose memory adds up to more than --host-memory run to their end
  (sharing and swapping), and without swap a VM that finds no frame stops
  with a diagnostic.
"""

from __future__ import annotations

import functools
import subprocess
import sys

import pytest

from trapvisor.guests import build_guest
from trapvisor.machine.cpu.constants import PTE_P, PTE_RW
from trapvisor.vmm.scheduler import Scheduler, VmSpec

LIMIT = 50_000_000
MIB = 1 << 20
CMDLINES = ("workload=ctxswitch iterations=20", "workload=syscall iterations=100",
            "workload=ctxswitch iterations=20")


def specs(n: int, mib: int = 8, cmdlines=CMDLINES):
    k = str(build_guest("tvos"))
    return [VmSpec(k, cmdlines[i % len(cmdlines)], mib * MIB) for i in range(n)]


@functools.lru_cache(maxsize=None)
def alone(kernel: str, cmdline: str, memory: int):
    """The VM alone, on a fixed partition (no pmap, no reclamation)."""
    r = Scheduler([VmSpec(kernel, cmdline, memory)], slice_instructions=20_000).run(LIMIT)
    res = r.results[0]
    return res.output, res.exit_code, res.instructions


def run_overcommitted(n, host_mib, *, budget=4096, swap=True, mib=8, cmdlines=CMDLINES):
    sched = Scheduler(specs(n, mib, cmdlines), slice_instructions=20_000, host_memory=host_mib * MIB,
                      reclamation={"share_budget": budget, "swap": swap})
    return sched, sched.run(LIMIT)


@pytest.fixture(scope="module")
def shared_run():
    """Three tvos VMs of 8 MiB with room for all of them: sharing alone at work."""
    return run_overcommitted(3, 40, swap=False)


def frames_of(sched):
    return sched.alloc.frames


def test_every_guest_runs_as_it_runs_alone(shared_run):
    sched, r = shared_run
    for s, res in zip(sched_specs(sched), r.results):
        assert (res.output, res.exit_code, res.instructions) == alone(s.kernel, s.cmdline, s.memory_bytes)
        assert res.exit_code == 1 and b"result" in res.output


def sched_specs(sched):
    return [VmSpec(m.options.kernel, m.options.cmdline, m.options.memory_bytes) for m in sched.vms]


def test_sharing_saves_pages_by_statistics_and_by_pmap(shared_run):
    sched, _ = shared_run
    frames = frames_of(sched)
    st = sched.reclaim.statistics()["sharing"]
    assert st["scanned"] > 0 and st["saved"] > 0 and st["shared_frames"] > 0
    # From the pmaps themselves: host frames named by guest pages of two or more VMs.
    owners: dict[int, set] = {}
    named = 0
    for i, mem in enumerate(frames.vms):
        for h in mem.pmap:
            if h >= 0 and h != frames.zero:
                owners.setdefault(h, set()).add(i)
                named += 1
    across = [h for h, vms in owners.items() if len(vms) > 1]
    assert across, "no host frame is shared between VMs"
    # Frames saved = guest pages backed by a non-zero frame minus distinct frames backing them.
    assert named - len(owners) == st["saved"] - st["zero"]
    assert all(frames.refs[h] == sum(1 for m in frames.vms for x in m.pmap if x == h) for h in across)
    # The host holds fewer frames than the VMs' pages that have contents.
    assert frames.used < named


def test_no_shadow_maps_a_frame_not_its_own_writable(shared_run):
    """Containment: a writable shadow PTE names a frame that only its VM's pmap names, once."""
    sched, _ = shared_run
    frames = frames_of(sched)
    mem = frames.memory
    for i, m in enumerate(sched.vms):
        own = set(x for x in m.vm.memory.pmap if x >= 0)
        for space in m.shadow.spaces.values():
            for j, pt in space.pts.items():
                for k in range(1024):
                    pte = mem.read_u32(pt + 4 * k)
                    if pte & PTE_P and pte & PTE_RW:
                        h = pte >> 12
                        assert h in own, f"vm{i} maps host frame {h:#x} writable, not in its pmap"
                        assert frames.refs[h] == 1 and not frames.sharing.is_shared(h), \
                            f"vm{i} maps shared host frame {h:#x} writable"


def a_cross_vm_share(sched):
    frames = frames_of(sched)
    a, b = frames.vms[0], frames.vms[1]
    where_b = {h: g for g, h in enumerate(b.pmap) if h >= 0 and h != frames.zero}
    for g, h in enumerate(a.pmap):
        if h in where_b and frames.sharing.is_shared(h):
            return a, g, b, where_b[h], h
    pytest.fail("no page shared between vm0 and vm1")


def test_a_store_into_a_shared_page_copies_and_the_other_vm_keeps_its_page():
    sched, _ = run_overcommitted(2, 40, swap=False)
    a, ga, b, gb, h = a_cross_vm_share(sched)
    before = bytes(b.ram[gb << 12:(gb + 1) << 12])
    vcpu_a = sched.vms[0].vm.vcpu
    vcpu_a.phys_write32((ga << 12) + 8, 0xDEADBEEF)          # the virtual CPU's store path
    assert a.pmap[ga] != h, "the writer still has the shared frame"
    assert vcpu_a.phys_read32((ga << 12) + 8) == 0xDEADBEEF
    assert bytes(b.ram[gb << 12:(gb + 1) << 12]) == before    # the other VM's page, read back
    assert bytes(frames_of(sched).frame_bytes(h)) == before  # the shared frame itself
    # The loader's and devices' path (PhysicalMemory.write) copies too.
    a2, ga2, b2, gb2, h2 = a_cross_vm_share(sched)
    before2 = bytes(b2.ram[gb2 << 12:(gb2 + 1) << 12])
    a2.write((ga2 << 12) + 100, b"\x55" * 16)
    assert a2.pmap[ga2] != h2 and bytes(a2.ram[(ga2 << 12) + 100:(ga2 << 12) + 116]) == b"\x55" * 16
    assert bytes(b2.ram[gb2 << 12:(gb2 + 1) << 12]) == before2
    assert sched.reclaim.statistics()["sharing"]["cow_breaks"] >= 2


def test_vms_beyond_host_memory_run_to_their_end_with_sharing_and_swap():
    """3 VMs of 8 MiB (24 MiB of guest memory) in 12 MiB of host frames."""
    sched, r = run_overcommitted(3, 12)
    frames = frames_of(sched)
    assert sum(s.memory_bytes for s in sched_specs(sched)) > frames.total * 4096
    st = sched.reclaim.statistics()
    for s, res in zip(sched_specs(sched), r.results):
        assert (res.output, res.exit_code, res.instructions) == alone(s.kernel, s.cmdline, s.memory_bytes)
    assert st["peak_used"] <= frames.total
    assert sum(st["swapped_out"]) > 0 and sum(st["swapped_in"]) > 0
    assert st["sharing"]["saved"] > 0


def test_without_swap_a_vm_that_finds_no_frame_stops_with_a_diagnostic():
    sched, r = run_overcommitted(2, 8, budget=0, swap=False)
    stopped = [res for res in r.results if res.stop_reason == "host memory exhausted"]
    assert stopped and "frames of --host-memory" in stopped[0].detail


def tv(*args):
    return subprocess.run([sys.executable, "-m", "trapvisor", *args], capture_output=True, text=True,
                          timeout=600)


@pytest.mark.parametrize("args, needle", [
    (["--shares", "1,2"], "--host-memory"),
    (["--no-swap"], "--host-memory"),
    (["--host-memory", "64M", "--shares", "1,2,3"], "3 values for 2 VMs"),
    (["--host-memory", "64M", "--idle-tax", "100"], "percentage"),
    (["--host-memory", "64M", "--share-scan", "-1"], "0 or more"),
    (["--host-memory", "64M", "--balloon", "lots"], "auto, off or a number"),
    (["--balloon", "5"], "--host-memory"),
    (["--host-memory", "64M", "-m", "2G"], "vm.max_map_count"),
])
def test_cli_refuses_bad_reclamation_options(args, needle):
    p = tv("vms", "guest:hello", "guest:hello", *args)
    assert p.returncode != 0 and needle in p.stderr and "Traceback" not in p.stderr


def test_cli_reports_sharing_and_swapping():
    cmd = "guest:tvos workload=ctxswitch iterations=20"
    p = tv("vms", cmd, cmd, "-m", "8M", "--host-memory", "10M", "--slice", "20000", "--share-scan", "4096",
           "--memory-table")
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("result ctxswitch") == 2
    assert "page sharing:" in p.stderr and "pages scanned" in p.stderr and "saved" in p.stderr
    assert "swapped out" in p.stderr
    assert "vm1 resident/balloon/active" in p.stderr      # the allocation table


# -- ballooning ------------------------------------------------------------------------

def free_pages(output: bytes, label: str) -> list[int]:
    import re
    return [int(m) for m in re.findall(rb"balloon: " + label.encode() + rb"[^\n]*?free pages (\d+)", output)]


def test_the_balloon_takes_pages_from_the_guest_and_their_frames_from_the_vm():
    k = str(build_guest("tvos"))
    sched = Scheduler([VmSpec(k, "workload=balloon iterations=4", 8 * MIB),
                       VmSpec(k, "workload=ctxswitch iterations=20", 8 * MIB)],
                      slice_instructions=20_000, host_memory=64 * MIB,
                      reclamation={"share_budget": 0, "swap": False, "balloon": 300})
    frames, mem = sched.alloc.frames, sched.alloc.frames.vms[0]
    seen = []
    dev = sched.reclaim.balloon.devices[0]
    deflate = dev.on_deflate

    def watch(frame):
        """Just before each deflate: what the pmap says the balloon holds."""
        held = [g for g in range(mem.pages) if mem.ballooned[g]]
        # A ballooned page has no host frame of its own: the zero frame backs it.
        assert all(mem.pmap[g] == frames.zero for g in held)
        seen.append(len(held))
        return deflate(frame)
    dev.on_deflate = watch
    r = sched.run(LIMIT)
    out = r.results[0].output
    assert r.results[0].exit_code == 1 and r.results[1].exit_code == 1
    before = free_pages(out, "")[0]
    during = free_pages(out, "tick")
    end, = free_pages(out, "deflated")
    assert max(seen) == 300                      # the pmap held the balloon's 300 pages
    assert min(during) <= before - 300           # the guest's own allocator felt it
    assert end == before and sum(mem.ballooned) == 0   # deflated: everything given back
    assert dev.inflates == dev.deflates == 300 and dev.refused == 0
    # The other VM never had a target it could act on, and its output is its own.
    assert r.results[1].output == alone(k, "workload=ctxswitch iterations=20", 8 * MIB)[0]


def test_a_guest_that_writes_a_ballooned_page_gets_a_fresh_zero_page_not_the_old_frame():
    sched = Scheduler(specs(1), host_memory=16 * MIB, reclamation={"share_budget": 0, "balloon": 0})
    mem, vcpu = sched.alloc.frames.vms[0], sched.vms[0].vm.vcpu
    g = 0x300                                    # a free page of tvos (above the kernel)
    vcpu.phys_write32(g << 12, 0x12345678)
    old = mem.pmap[g]
    assert mem.balloon_inflate(g) and not mem.balloon_inflate(g)   # twice: refused
    assert mem.pmap[g] == sched.alloc.frames.zero and vcpu.phys_read32(g << 12) == 0
    vcpu.phys_write32((g << 12) + 4, 1)
    assert mem.ballooned[g] == 0 and mem.pmap[g] != sched.alloc.frames.zero
    assert vcpu.phys_read32(g << 12) == 0 and vcpu.phys_read32((g << 12) + 4) == 1
    assert not mem.balloon_deflate(g) and mem.balloon_inflate(mem.pages) is False
    assert old != sched.alloc.frames.zero


def test_the_balloon_workload_on_a_pc_without_the_device_says_so():
    from trapvisor.machine.pc import run_kernel
    out = []
    res = run_kernel(str(build_guest("tvos")), cmdline="workload=balloon iterations=2",
                     memory_bytes=8 * MIB, max_instructions=LIMIT, serial_out=out.append)
    assert res.exit_code == 1 and b"no balloon device" in b"".join(out)


def test_under_pressure_the_monitor_inflates_the_balloon_of_a_vm_beyond_its_entitlement():
    """Two 8 MiB VMs in 10 MiB: booting swaps; the automatic policy then asks vm0's
    balloon for what vm0 holds beyond half the pool, and the guest gives it."""
    k = str(build_guest("tvos"))
    sched = Scheduler([VmSpec(k, "workload=balloon iterations=3", 8 * MIB),
                       VmSpec(k, "workload=ctxswitch iterations=20", 8 * MIB)],
                      slice_instructions=20_000, host_memory=10 * MIB,
                      reclamation={"share_budget": 512, "swap": True, "balloon": "auto"})
    r = sched.run(LIMIT)
    out = r.results[0].output
    assert [res.exit_code for res in r.results] == [1, 1]
    before, during = free_pages(out, "")[0], free_pages(out, "tick")
    dev = sched.reclaim.balloon.devices[0]
    assert dev.inflates > 0 and min(during) <= before - dev.inflates
    assert dev.inflates <= sched.alloc.frames.vms[0].pages - sched.reclaim.entitlement(0)
    assert r.results[1].output == alone(k, "workload=ctxswitch iterations=20", 8 * MIB)[0]


def test_swap_victims_come_from_the_vm_with_the_fewest_shares_per_page():
    """Min-funding revocation (Waldspurger §5.2): with 1000 shares against 1, vm0 is never
    swapped while vm1 has pages of its own to give: a VM cannot push its neighbour out."""
    k = str(build_guest("tvos"))
    cmd = "workload=ctxswitch iterations=20"
    sched = Scheduler([VmSpec(k, cmd, 8 * MIB)] * 2, slice_instructions=20_000, host_memory=10 * MIB,
                      reclamation={"share_budget": 0, "swap": True, "shares": [1000, 1]})
    r = sched.run(LIMIT)
    st = sched.reclaim.statistics()
    assert [res.exit_code for res in r.results] == [1, 1]
    assert st["swapped_out"][0] == 0 and st["swapped_out"][1] > 0
    assert all(res.output == alone(k, cmd, 8 * MIB)[0] for res in r.results)


def test_page_table_heavy_guests_under_sharing_swap_and_balloon_run_as_alone():
    """The mixed workload (fork, page faults, PTE changes, exits) twice and pgfault once,
    24 MiB of guests in 8 MiB, odd slices: every page-table store, copy-on-write break,
    page-out and page-in lands between the guests' instructions, and no guest notices."""
    k = str(build_guest("tvos"))
    cmds = ["workload=mixed iterations=1", "workload=pgfault iterations=50", "workload=mixed iterations=1"]
    sched = Scheduler([VmSpec(k, c, 8 * MIB) for c in cmds], slice_instructions=7_919,
                      host_memory=8 * MIB,
                      reclamation={"share_budget": 1024, "swap": True, "balloon": "auto"})
    r = sched.run(LIMIT)
    st = sched.reclaim.statistics()
    assert sum(st["swapped_out"]) > 0 and st["sharing"]["cow_breaks"] > 0
    for c, res in zip(cmds, r.results):
        assert (res.output, res.exit_code, res.instructions) == alone(k, c, 8 * MIB)
