"""Reclaiming host memory from VMs: the policy and its mechanisms, per time slice.

After Waldspurger, "Memory Resource Management in VMware ESX Server" (OSDI
2002).  Under overcommit (``pmap.py``) the scheduler calls
:meth:`Reclamation.after_slice` between time slices:

* **page sharing** (§4, ``page_sharing.py``) scans a budget of pages;
* **idle-memory measurement** (§5.3): every ``SAMPLE_PERIOD`` slices each VM's
  active fraction *f* is estimated by statistical sampling: ``SAMPLES``
  random resident pages have their shadow entries dropped, and the share of
  them the VM maps again (``PmapMemory.frame_for`` marks ``accessed``) by the
  end of the period is its active fraction, smoothed by an exponentially
  weighted average;
* **allocation** (§5.1-5.2): when a frame must be reclaimed, the victim is the
  VM with the fewest *adjusted shares per page*
  rho = S / (P * (f + k * (1 - f))), k = 1 / (1 - tax), tax the idle-memory
  tax (0.75 by default, as ESX's): the min-funding revocation of the paper,
  which charges idle pages more than active ones.  A VM can thus only make
  the monitor take memory from a VM that holds more than its shares' worth;
* **ballooning** (§3, :class:`BalloonPolicy`, the device in
  ``machine/devices/balloon.py``, the driver in guests/os/kernel/balloon.c):
  when free host frames fall below an eighth of the pool or pages are
  swapped out, each VM's balloon target grows by what it holds (resident or
  swapped) above its entitlement; above a quarter free the balloons
  deflate; or a fixed target per VM (``--balloon N``);
* **hypervisor swapping** (§3.3), the last resort: the victim VM loses a
  random resident page of its own (the paper's random selection), written to
  its swap file and brought back on its next access.
"""

from __future__ import annotations

import random
from collections import deque

from .page_sharing import PageSharing

SAMPLE_PERIOD = 10        # slices between two estimates of each VM's active fraction
SAMPLES = 32              # pages sampled per VM per period (ESX: 100 per 30 s)
DEFAULT_TAX = 0.75        # ESX's default idle-memory tax (§5.2)
DEFAULT_SHARES = 1000
RECENT = 16               # pages a VM was just given, never chosen as swap victims


LOW_WATER, HIGH_WATER = 8, 4      # balloon pressure below 1/8 of the pool free, release above 1/4


class BalloonPolicy:
    """Balloon targets for every VM, set between slices."""

    def __init__(self, memories, fixed: int | None = None):
        from ..machine.devices.balloon import BalloonDevice
        self.memories = memories
        self.fixed = fixed
        self.devices = [BalloonDevice(m.balloon_inflate, m.balloon_deflate) for m in memories]

    def set_targets(self, reclaim: "Reclamation") -> None:
        """Under pressure (few free frames, or pages already swapped out) a VM's balloon
        should hold whatever the VM has beyond its entitlement, resident or swapped:
        the guest then gives up pages it values least, and a swapped page it gives up
        needs its swap slot no more.  With frames to spare again the balloons deflate."""
        frames = reclaim.frames
        free = len(frames.free)
        swapped = [m.swapped() for m in self.memories]
        pressure = free < frames.total // LOW_WATER or any(swapped)
        for i, (mem, dev) in enumerate(zip(self.memories, self.devices)):
            held = dev.inflates - dev.deflates
            if self.fixed is not None:
                dev.target = self.fixed
            elif pressure:
                dev.target = held + max(0, mem.resident() + swapped[i] - reclaim.entitlement(i))
            elif free > frames.total // HIGH_WATER:
                dev.target = max(0, held - (free - frames.total // HIGH_WATER))


class Reclamation:
    def __init__(self, frames, *, share_budget: int = 0, swap: bool = False, shares=None,
                 tax: float = DEFAULT_TAX, seed: int = 0, balloon=None):
        """``balloon``: None (no balloon device), "auto" (targets from the pool's
        pressure) or a fixed target in pages for every VM."""
        if not 0 <= tax < 1:
            raise ValueError("the idle-memory tax is a fraction below 1")
        self.frames = frames
        self.sharing = PageSharing(frames, share_budget) if share_budget else None
        self.swap = swap
        self.tax = tax
        self.shares = list(shares) if shares else []
        self.rng = random.Random(seed)
        self.slices = 0
        self.active: dict[int, float] = {}          # VM index -> smoothed active fraction
        self.sampled: dict[int, list[int]] = {}     # VM index -> pages sampled this period
        self.recent: deque = deque(maxlen=RECENT)
        self.swap_victims: dict[int, int] = {}      # VM index -> pages swapped out of it
        self.table: list[list] = []                 # one allocation row per sample period
        self.balloon = None
        if balloon is not None:
            self.balloon = BalloonPolicy(frames.vms, None if balloon == "auto" else int(balloon))
        if swap:
            frames.reclaimer = self.reclaim_one
        frames.on_give = self.recent.append

    # -- per slice --------------------------------------------------------------------
    def after_slice(self) -> None:
        self.slices += 1
        if self.sharing is not None:
            self.sharing.scan()
        if self.slices % SAMPLE_PERIOD == 0:
            self.measure_idle()
            self.table.append(self.allocation_row())
        if self.balloon is not None:
            self.balloon.set_targets(self)

    def measure_idle(self) -> None:
        """End one sampling period, begin the next (§5.3)."""
        for i, mem in enumerate(self.frames.vms):
            pages = self.sampled.get(i)
            if pages:
                f = sum(mem.accessed[g] for g in pages) / len(pages)
                old = self.active.get(i)
                self.active[i] = f if old is None else 0.5 * old + 0.5 * f
            resident = [g for g in range(mem.pages) if mem.is_resident(g)]
            pages = self.rng.sample(resident, min(SAMPLES, len(resident)))
            for g in pages:
                mem.accessed[g] = 0
                if mem.on_remap is not None:
                    mem.on_remap(g, mem.pmap[g])    # the next access maps it again: seen
            self.sampled[i] = pages

    # -- allocation -----------------------------------------------------------------------
    def shares_of(self, i: int) -> int:
        return self.shares[i] if i < len(self.shares) else DEFAULT_SHARES

    def rho(self, i: int, resident: int) -> float:
        """Adjusted shares per page (§5.2): fewer means first to lose memory."""
        f = self.active.get(i, 1.0)
        k = 1.0 / (1.0 - self.tax)
        return self.shares_of(i) / (max(resident, 1) * (f + k * (1.0 - f)))

    def entitlement(self, i: int) -> int:
        """Host frames VM i would hold if the pool were divided by shares."""
        total = sum(self.shares_of(j) for j in range(len(self.frames.vms)))
        return self.frames.total * self.shares_of(i) // max(total, 1)

    def allocation_row(self) -> list:
        row = [self.slices]
        for i, mem in enumerate(self.frames.vms):
            row.append((mem.resident(), sum(mem.ballooned), self.active.get(i, 1.0)))
        return row

    # -- swapping: the last resort -----------------------------------------------------------
    def reclaim_one(self, exclude) -> bool:
        """Free one host frame by swapping out a page of the VM with the lowest rho."""
        vms = self.frames.vms
        candidates = []
        for i, mem in enumerate(vms):
            resident = mem.resident()
            if resident:
                candidates.append((self.rho(i, resident), i))
        for _, i in sorted(candidates):
            mem = vms[i]
            g = self._victim_page(mem, exclude)
            if g is not None:
                mem.swap_out(g)
                self.swap_victims[i] = self.swap_victims.get(i, 0) + 1
                return True
        return False

    def _victim_page(self, mem, exclude):
        """A random page of ``mem`` only it holds (the paper's random selection)."""
        avoid = {exclude} | set(self.recent)
        for _ in range(64):
            g = self.rng.randrange(mem.pages)
            if (mem, g) not in avoid and mem.is_private(g):
                return g
        for g in range(mem.pages):
            if (mem, g) not in avoid and mem.is_private(g):
                return g
        return None

    # -- the report ---------------------------------------------------------------------------
    def statistics(self) -> dict:
        frames = self.frames
        out = {
            "host_frames": frames.total, "used": frames.used, "peak_used": frames.peak_used,
            "resident": [m.resident() for m in frames.vms],
            "swapped_out": [m.swapped_out for m in frames.vms],
            "swapped_in": [m.swapped_in for m in frames.vms],
            "swapped_now": [m.swapped() for m in frames.vms],
            "ballooned": [sum(m.ballooned) for m in frames.vms],
            "balloon_targets": [d.target for d in self.balloon.devices] if self.balloon else [],
            "active": [self.active.get(i, 1.0) for i in range(len(frames.vms))],
        }
        if self.sharing is not None:
            out["sharing"] = self.sharing.statistics()
        return out
