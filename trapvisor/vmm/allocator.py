"""The allocator: who owns which part of the host machine.

Popek and Goldberg's allocator A decides which resources each virtual machine
gets and is invoked whenever a VM tries to change them.  Here the resources
are the host's physical memory and the tables the host CPU really uses:

* the **monitor region** at the bottom of host memory: the monitor's own GDT
  (the shadow GDT), IDT, TSS and a pool of frames for shadow page tables.  No
  guest mapping ever points into it;
* one **partition** per VM: a contiguous run of host frames that is the VM's
  guest-physical memory (guest-physical address g is host-physical base + g).

Guest memory is handed to the VM as :class:`GuestMemory`, a
:class:`PhysicalMemory` whose bytes *are* the partition's bytes (a
memoryview), so the virtual CPU, the loader and the device models all work in
guest-physical addresses without copying.
"""

from __future__ import annotations

from ..errors import UserError
from ..machine.memory import PAGE_SHIFT, PAGE_SIZE, PhysicalMemory

MONITOR_REGION = 4 << 20          # 4 MiB: descriptor tables + shadow page-table pool
MONITOR_GDT = 0x1000              # the host GDT (shadow GDT), up to 64 KiB
MONITOR_IDT = 0x11000             # the host IDT: every gate leads to the monitor
MONITOR_TSS = 0x12000             # the host TSS (no I/O bitmap: every port traps)
SHADOW_POOL = 0x20000             # frames for shadow page directories and tables

# The monitor's window in every shadow address space: the top 4 MiB of linear
# space maps the monitor region, where the host CPU finds its GDT, IDT and TSS
# (descriptor-table registers hold linear addresses).  Ring 1 is "supervisor"
# to the paging unit, so paging cannot hide the window from the guest kernel;
# segment truncation does: every guest segment the host loads has its limit
# cut below the window (as VMware's monitor did), so a guest access there
# faults and is emulated against the guest's own mappings.
MONITOR_WINDOW = 0xFFC00000
# What a 32-bit page-table entry can name (SDM Vol. 3A §4.3: 20-bit frame numbers).
HOST_PHYSICAL_LIMIT = 1 << 32


class GuestMemory(PhysicalMemory):
    """A VM's guest-physical memory: a window onto its partition of host RAM."""

    def __init__(self, host: PhysicalMemory, base: int, size: int):
        self.host = host
        self.base = base
        self.size = size
        self.ram = memoryview(host.ram)[base:base + size]
        self.code_pages = memoryview(host.code_pages)[base >> PAGE_SHIFT:(base + size) >> PAGE_SHIFT]
        self.on_code_write = None


class Partition:
    def __init__(self, base: int, size: int):
        self.base, self.size = base, size

    def contains_host(self, addr: int) -> bool:
        return self.base <= addr < self.base + self.size


class Allocator:
    """Hands out partitions of host memory and frames of the monitor region."""

    def __init__(self, host_memory: PhysicalMemory):
        self.host = host_memory
        self.next_partition = MONITOR_REGION
        self.partitions: list[Partition] = []
        self.pool_next = SHADOW_POOL
        self.pool_free: list[int] = []
        # The shadow pool ends here; monitor structures reserved at the top of the
        # region (a binary translator's translation cache) lie above it.
        self.pool_limit = MONITOR_REGION

    @staticmethod
    def host_size_for(guest_sizes) -> int:
        """Host memory for the monitor region and one partition per guest.  The
        host model uses 32-bit page tables (no PAE), so every host-physical
        address a shadow entry holds must be below 4 GiB: beyond that a frame
        number would wrap into another VM's partition or the monitor's region.
        A request beyond it is refused before any VM is built."""
        sizes = list(guest_sizes)
        total = MONITOR_REGION + sum(sizes)
        if total > HOST_PHYSICAL_LIMIT:
            raise UserError(
                f"{len(sizes)} VM(s) with {sum(sizes) >> 20} MiB of guest memory in all, plus the "
                f"monitor's {MONITOR_REGION >> 20} MiB, need more than the 4 GiB of host-physical "
                f"memory the host model addresses (32-bit page tables): give fewer VMs or less --memory")
        return total

    def allocate_partition(self, size: int) -> Partition:
        if size % PAGE_SIZE:
            raise UserError(f"guest memory {size} is not a multiple of 4 KiB")
        if self.next_partition + size > self.host.size:
            raise UserError(f"no room for a {size >> 20} MiB guest in {self.host.size >> 20} MiB of host memory")
        p = Partition(self.next_partition, size)
        self.next_partition += size
        self.partitions.append(p)
        return p

    def guest_memory(self, p: Partition) -> GuestMemory:
        return GuestMemory(self.host, p.base, p.size)

    # -- monitor frames ----------------------------------------------------
    def alloc_frame(self) -> int:
        """A zeroed 4 KiB frame of the monitor region (for a shadow table)."""
        if self.pool_free:
            f = self.pool_free.pop()
        else:
            if self.pool_next + PAGE_SIZE > self.pool_limit:
                raise MemoryError("monitor region exhausted")
            f = self.pool_next
            self.pool_next += PAGE_SIZE
        self.host.ram[f:f + PAGE_SIZE] = bytes(PAGE_SIZE)
        return f

    def can_alloc_frame(self) -> bool:
        return bool(self.pool_free) or self.pool_next + PAGE_SIZE <= self.pool_limit

    def reserve_top(self, size: int) -> int:
        """Take ``size`` bytes (whole pages) off the top of the monitor region's free
        part, below whatever was reserved before, and return their host-physical
        address.  Refused once the shadow pool has grown into them."""
        size = (size + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        start = self.pool_limit - size
        if start < max(self.pool_next, SHADOW_POOL + 64 * PAGE_SIZE):
            raise UserError(f"no room for {size >> 10} KiB of monitor structures in the monitor region")
        self.pool_limit = start
        self.host.ram[start:start + size] = bytes(size)
        return start

    def free_frame(self, f: int) -> None:
        self.pool_free.append(f)

    def in_monitor_region(self, host_addr: int) -> bool:
        return host_addr < MONITOR_REGION
