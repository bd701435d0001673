"""Overcommitted host memory: a pool of host frames and one pmap per VM.

Without overcommit each VM owns a fixed partition (``allocator.py``):
guest-physical address g is host-physical base + g.  With ``--host-memory``
the VMs together may be given more guest memory than the host holds, so the
monitor needs an indirection, as VMware ESX Server's (Waldspurger, OSDI 2002,
§2: "a pmap data structure for each VM to translate 'physical' page numbers
(PPNs) to machine page numbers (MPNs)"):

* :class:`HostFrames` is the host's memory: the monitor region, then a pool
  of host frames handed out one at a time, on demand, with a reference count
  each (a frame may back pages of several VMs once it is shared:
  ``page_sharing.py``), and a frame of zeros that backs every guest page not
  yet touched;
* :class:`PmapMemory` is one VM's guest-physical memory: its *pmap* (guest
  frame -> host frame, or a swap slot) and a flat window onto it for the
  virtual CPU, the loader and the devices.

The window.  The virtual CPU indexes its RAM directly (``machine/cpu``), so the
VM's guest-physical memory must be one flat buffer whose page g *is* host frame
pmap[g].  Host RAM is therefore a memfd, and each VM's window is a run of
virtual memory in which every guest page is an ``mmap(MAP_FIXED|MAP_SHARED)``
of the memfd at its host frame: the MMU of the machine this simulator runs on
does what the pmap says, and a store through the window lands in the host
frame the shadow page tables map.  A page backed by the zero frame is mapped
anonymous (reads zeros); a page swapped out is mapped onto its slot of the
swap file, so the monitor's own reads of it (a page walk, an interpreted
load) see its bytes without bringing it back.

Stores.  Every store the virtual CPU makes goes through ``before_store`` first:
the window marks every page as holding decoded code (``code_pages``), so the
CPU calls its ``code_written`` hook before each store (the hook re-marks the
page).  A store into a page whose frame is not this VM's alone (the zero
frame, a shared frame, a swap slot) first gets a private frame, a copy: the
copy-on-write of ESX's page sharing.  The host CPU's stores are caught by the
shadow page tables instead: ``frame_for`` maps such a page read-only, and
the write fault asks ``frame_for(write=True)`` for a private frame.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import tempfile
import weakref
from array import array

from ..errors import UserError
from ..machine.cpu import MachineStop
from ..machine.memory import PAGE_SHIFT, PAGE_SIZE, PhysicalMemory
from .allocator import HOST_PHYSICAL_LIMIT, MONITOR_REGION

ZERO_PAGE = bytes(PAGE_SIZE)
SWAPPED = -1            # pmap entries below zero: -(slot + 1) in the swap file
MAP_FIXED = 0x10        # <sys/mman.h>, Linux

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_PROT = mmap.PROT_READ | mmap.PROT_WRITE
_MAP_FAILED = ctypes.c_void_p(-1).value


def _mmap(addr, length, flags, fd, offset) -> int:
    r = _libc.mmap(addr, length, _PROT, flags, fd, offset)
    if r == _MAP_FAILED or r is None:
        err = ctypes.get_errno()
        raise MemoryError(f"mmap of the host-memory window failed: {os.strerror(err)}")
    return r


def host_exhausted(detail: str) -> MachineStop:
    """No host frame is free and nothing can be reclaimed: the VM that needs one stops."""
    return MachineStop("host memory exhausted", detail)


def max_map_count() -> int:
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 65530          # Linux's default


MAPPING_MARGIN = 4096     # the rest of the process's mappings (Python, libraries, heaps)


def check_mappings(guest_sizes) -> None:
    """Each guest page may need a mapping of its own in the window (when its frame is
    not next to its neighbour's); refuse, before any VM is built, what the host's
    ``vm.max_map_count`` cannot hold."""
    pages = sum(guest_sizes) >> PAGE_SHIFT
    limit = max_map_count()
    if pages + MAPPING_MARGIN > limit:
        raise UserError(
            f"--host-memory: {pages:,} guest pages in all may each need a memory mapping of this "
            f"process, more than the {limit:,} vm.max_map_count allows: give fewer VMs or less "
            f"--memory (or raise vm.max_map_count)")


class MemfdMemory(PhysicalMemory):
    """Host RAM in a memfd, so that guest windows can alias its frames."""

    def __init__(self, size: int):
        if size <= 0 or size % PAGE_SIZE:
            raise ValueError(f"memory size must be a positive multiple of 4 KiB, not {size}")
        self.size = size
        self.fd = os.memfd_create("trapvisor-host-ram", 0)
        os.ftruncate(self.fd, size)
        self._map = mmap.mmap(self.fd, size)
        weakref.finalize(self, os.close, self.fd)
        self.ram = memoryview(self._map)
        self.code_pages = bytearray(size >> PAGE_SHIFT)
        self.on_code_write = None


class HostFrames:
    """The host's frames beyond the monitor region, handed out on demand."""

    def __init__(self, pool_bytes: int, *, swap: bool = False):
        if pool_bytes % PAGE_SIZE or pool_bytes < 16 * PAGE_SIZE:
            raise UserError(f"host memory {pool_bytes} must be a multiple of 4 KiB and at least 64 KiB")
        if MONITOR_REGION + pool_bytes > HOST_PHYSICAL_LIMIT:
            raise UserError("host memory beyond 4 GiB cannot be named by the host's 32-bit page tables")
        self.memory = MemfdMemory(MONITOR_REGION + pool_bytes)
        first, end = MONITOR_REGION >> PAGE_SHIFT, self.memory.size >> PAGE_SHIFT
        self.total = end - first
        self.free = list(range(end - 1, first - 1, -1))      # lowest frames handed out first
        self.refs = array("i", bytes(4 * end))               # host frame -> pmap entries naming it
        self.zero = self.free.pop()                          # the frame of zeros, never written
        self.refs[self.zero] = 1
        self.vms: list[PmapMemory] = []
        self.sharing = None            # page_sharing.PageSharing, when enabled
        self.reclaimer = None          # called for a frame when none is free (reclamation.py)
        self.on_give = None            # called with (memory, guest page) given a new frame
        self.peak_used = 1

    # -- frames -------------------------------------------------------------
    @property
    def used(self) -> int:
        return self.total - len(self.free)

    def alloc(self, exclude=None) -> int:
        """A free host frame (contents undefined); reclaims one if none is free."""
        if not self.free:
            if self.reclaimer is None or not self.reclaimer(exclude):
                raise host_exhausted(
                    f"host memory exhausted: all {self.total:,} frames of --host-memory "
                    f"{self.total * PAGE_SIZE >> 20} MiB are in use and nothing can be reclaimed")
        f = self.free.pop()
        self.peak_used = max(self.peak_used, self.used)
        return f

    def release(self, f: int) -> None:
        """One pmap entry less names ``f``; free it when none does."""
        self.refs[f] -= 1
        if self.refs[f] == 0:
            if self.sharing is not None:
                self.sharing.forget(f)
            self.free.append(f)

    def frame_bytes(self, f: int) -> memoryview:
        return self.memory.ram[f << PAGE_SHIFT:(f + 1) << PAGE_SHIFT]

    def fill_frame(self, f: int, data) -> None:
        """Write a whole frame through the host memory (drops the host CPU's decoded code of it)."""
        self.memory.write(f << PAGE_SHIFT, bytes(data))

    def guest_memory(self, size: int, name: str) -> "PmapMemory":
        if size % PAGE_SIZE:
            raise UserError(f"guest memory {size} is not a multiple of 4 KiB")
        m = PmapMemory(self, size, name)
        self.vms.append(m)
        return m


class SwapFile:
    """The hypervisor's swap file: one slot per swapped-out guest page."""

    def __init__(self):
        self.file = tempfile.TemporaryFile(prefix="trapvisor-swap-")
        self.fd = self.file.fileno()
        self.slots = 0
        self.free: list[int] = []
        self.writes = self.reads = 0

    def put(self, data) -> int:
        if self.free:
            slot = self.free.pop()
        else:
            slot = self.slots
            self.slots += 1
            os.ftruncate(self.fd, self.slots * PAGE_SIZE)
        os.pwrite(self.fd, bytes(data), slot * PAGE_SIZE)
        self.writes += 1
        return slot

    def get(self, slot: int) -> bytes:
        self.reads += 1
        return os.pread(self.fd, PAGE_SIZE, slot * PAGE_SIZE)

    def drop(self, slot: int) -> None:
        self.free.append(slot)


class PmapMemory(PhysicalMemory):
    """A VM's guest-physical memory under overcommit: a pmap and a window onto it."""

    def __init__(self, frames: HostFrames, size: int, name: str):
        self.frames = frames
        self.name = name
        self.size = size
        self.pages = size >> PAGE_SHIFT
        self.pmap = array("i", [frames.zero]) * self.pages
        frames.refs[frames.zero] += self.pages
        self.base_addr = _mmap(None, size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
        window = (ctypes.c_ubyte * size).from_address(self.base_addr)
        # Unmapped when nothing can reach the window any more: every memoryview of it
        # (the CPU's, a block's) holds the ctypes array alive.
        weakref.finalize(window, _libc.munmap, self.base_addr, size)
        self.ram = memoryview(window).cast("B")
        # Every page "holds code": the CPU calls code_written before each store (see module doc).
        self.code_pages = bytearray(b"\x01") * self.pages
        self.on_code_write = None
        self.swap: SwapFile | None = None
        self.ballooned = bytearray(self.pages)     # guest frames the balloon holds
        self.touched = bytearray(self.pages)       # guest frames that ever had a frame of their own
        self.accessed = bytearray(self.pages)      # mapped by a shadow since sampled (reclamation.py)
        # Called with (guest frame, old pmap entry) when a page's backing changes:
        # the shadow page tables drop their entries for it (shadow_paging.py).
        self.on_remap = None
        self.host_cpu = None           # set by the technique: its decoded code of a frame is dropped
        self.cow_breaks = self.demand_fills = self.swapped_in = self.swapped_out = 0

    # -- the interface the shadow page tables use (allocator.GuestMemory has it too) ---------
    def frame_for(self, gframe: int, write: bool) -> int:
        """Host-physical address the shadow maps for guest frame ``gframe`` (an address)."""
        g = gframe >> PAGE_SHIFT
        self.accessed[g] = 1
        if write:
            self.make_private(g)
        elif self.pmap[g] < 0:
            self.swap_in(g)
        return self.pmap[g] << PAGE_SHIFT

    def writable_frame(self, gframe: int) -> bool:
        """May the shadow map this guest frame writable (the VM's alone)?"""
        h = self.pmap[gframe >> PAGE_SHIFT]
        return h >= 0 and h != self.frames.zero and self.frames.refs[h] == 1 and \
            not (self.frames.sharing is not None and self.frames.sharing.is_shared(h))

    def host_address(self, gframe: int) -> int:
        """The host address the shadow would find for ``gframe`` now (no side effect)."""
        return self.pmap[gframe >> PAGE_SHIFT] << PAGE_SHIFT

    def vcpu_store_hook(self, host_cpu):
        """The virtual CPU's ``code_written`` hook: a store is about to hit guest page ``g``."""
        self.host_cpu = host_cpu
        cp = self.code_pages
        cp[:] = b"\x01" * self.pages      # stores before the hook (the loader's) cleared some
        host_cp = host_cpu.code_pages
        pmap = self.pmap

        def before_store(g: int) -> None:
            if not self.writable_frame(g << PAGE_SHIFT):
                self.make_private(g)
            h = pmap[g]
            if host_cp[h]:
                host_cpu.invalidate_code_page(h)
            cp[g] = 1
        return before_store

    # -- writers other than the CPU (loader, devices) ------------------------------
    def write(self, addr: int, data: bytes) -> None:
        self._check(addr, len(data))
        for g in range(addr >> PAGE_SHIFT, (addr + max(len(data), 1) - 1 >> PAGE_SHIFT) + 1):
            if not self.writable_frame(g << PAGE_SHIFT):
                self.make_private(g)
        self.ram[addr:addr + len(data)] = data
        self.notify_write(addr, len(data))
        first, last = addr >> PAGE_SHIFT, (addr + max(len(data), 1) - 1) >> PAGE_SHIFT
        self.code_pages[first:last + 1] = b"\x01" * (last + 1 - first)   # the CPU's hook cleared them

    # -- the pmap ------------------------------------------------------------
    def _map_window(self, g: int, entry: int) -> None:
        """Point page g of the window at what ``entry`` names."""
        addr = self.base_addr + (g << PAGE_SHIFT)
        if entry == self.frames.zero:
            _mmap(addr, PAGE_SIZE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_FIXED, -1, 0)
        elif entry >= 0:
            _mmap(addr, PAGE_SIZE, mmap.MAP_SHARED | MAP_FIXED, self.frames.memory.fd, entry << PAGE_SHIFT)
        else:
            _mmap(addr, PAGE_SIZE, mmap.MAP_SHARED | MAP_FIXED, self.swap.fd, (-entry - 1) << PAGE_SHIFT)

    def set_entry(self, g: int, entry: int) -> int:
        """Make the pmap say ``entry`` for page g; returns the old entry (whose reference the
        caller releases).  The window follows; the shadows drop what they derived from the old."""
        old = self.pmap[g]
        self.pmap[g] = entry
        self._map_window(g, entry)
        if self.on_remap is not None:
            self.on_remap(g, old)
        return old

    def make_private(self, g: int) -> None:
        """Give page g a host frame of its own, copying what it held (copy-on-write)."""
        frames = self.frames
        old = self.pmap[g]
        if old >= 0 and old != frames.zero and frames.refs[old] == 1:
            if frames.sharing is not None:
                frames.sharing.forget(old)     # the last sharer keeps the frame, writable
            return
        if old < 0:
            self.swap_in(g)
            return self.make_private(g)
        content = ZERO_PAGE if old == frames.zero else bytes(frames.frame_bytes(old))
        f = frames.alloc(exclude=(self, g))
        frames.refs[f] = 1
        frames.fill_frame(f, content)
        if old == frames.zero and not self.touched[g]:
            self.demand_fills += 1
        else:
            self.cow_breaks += 1          # a shared frame, or the zero frame it was shared onto
            if frames.sharing is not None:
                frames.sharing.cow_breaks += 1
        self.touched[g] = 1
        self.ballooned[g] = 0
        frames.release(self.set_entry(g, f))
        if frames.on_give is not None:
            frames.on_give((self, g))

    def swap_in(self, g: int) -> None:
        entry = self.pmap[g]
        if entry >= 0:
            return
        slot = -entry - 1
        data = self.swap.get(slot)
        f = self.frames.alloc(exclude=(self, g))
        self.frames.refs[f] = 1
        self.frames.fill_frame(f, data)
        self.set_entry(g, f)
        self.swap.drop(slot)
        if self.frames.on_give is not None:
            self.frames.on_give((self, g))
        self.swapped_in += 1

    # -- what the VM holds -----------------------------------------------------
    def resident(self) -> int:
        """Guest pages backed by a host frame other than the zero frame."""
        z = self.frames.zero
        return sum(1 for h in self.pmap if h >= 0 and h != z)

    def is_resident(self, g: int) -> bool:
        h = self.pmap[g]
        return h >= 0 and h != self.frames.zero

    def is_private(self, g: int) -> bool:
        """Backed by a frame of this VM's alone (a swap victim may be chosen only so)."""
        return self.is_resident(g) and self.writable_frame(g << PAGE_SHIFT)

    # -- the balloon (reclamation.py drives it through machine/devices/balloon.py) ---
    def balloon_inflate(self, g: int) -> bool:
        """The guest's balloon gives up page g: its host frame goes back to the pool."""
        if not 0 <= g < self.pages or self.ballooned[g]:
            return False
        old = self.pmap[g]
        self.ballooned[g] = 1
        self.frames.refs[self.frames.zero] += 1
        self.set_entry(g, self.frames.zero)
        if old >= 0:
            self.frames.release(old)
        else:
            self.swap.drop(-old - 1)
        return True

    def balloon_deflate(self, g: int) -> bool:
        """The balloon gives page g back to the guest (zero-backed until it is written)."""
        if not 0 <= g < self.pages or not self.ballooned[g]:
            return False
        self.ballooned[g] = 0
        return True

    def zero_backed_touched(self) -> int:
        """Pages that had contents once and are now on the zero frame (shared zero pages)."""
        z, pmap, t, b = self.frames.zero, self.pmap, self.touched, self.ballooned
        return sum(1 for g in range(self.pages) if t[g] and pmap[g] == z and not b[g])

    def swapped(self) -> int:
        return sum(1 for h in self.pmap if h < 0)

    def swap_out(self, g: int) -> None:
        """Write page g to the swap file and give its frame back (pmap entry: the slot)."""
        if self.swap is None:
            self.swap = SwapFile()
        h = self.pmap[g]
        slot = self.swap.put(self.frames.frame_bytes(h))
        self.frames.release(self.set_entry(g, -(slot + 1)))
        self.swapped_out += 1

