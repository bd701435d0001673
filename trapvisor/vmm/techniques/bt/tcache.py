"""The translation cache: translated units in monitor memory, and what maps them back.

The cache is a run of pages at the top of the monitor region (reserved from
the allocator, ``Allocator.reserve_top``), so that the host CPU reaches it at
``MONITOR_WINDOW + offset`` in every shadow address space, where the guest
cannot: every guest segment the host loads is truncated below the window
(``shadow_descriptors.truncate_limit``), so no guest load, store or IDENT
instruction reaches a translation (Adams & Agesen, ASPLOS 2006, §3.1: the
translation cache lives in the monitor's part of the address space, hidden
by segment truncation).  Beside it, one page holds the virtual-CPU state that
translated code updates inline (the virtual IF of CLI, as VMware's translator
did), reached through the monitor's data segment in GS.

It keeps, for precise state (§3.1, "the translator maps a translation-cache
address back to the guest's"):

* ``guest_at``: tcache address of every host instruction -> guest EIP of the
  guest instruction it stands for;
* ``callouts``: tcache address of every callout -> :class:`Callout`;
* ``entries``: guest EIP -> (unit, tcache address) where its translation can be
  entered.  Every guest instruction of a unit is an entry point, not only the
  first: a unit is straight-line code, so its host code from any row on is the
  translation of the guest's code from that row's EIP on (after an exit in the
  middle of a unit the host resumes there, without translating again);
* ``by_frame``: guest frame -> units translated from it (coherence);
* ``by_page``: guest linear page -> (guest frame, units), to find units whose
  code a page-table change or CR3 load remaps.

When the cache is full it is flushed whole (``flush``), VMware's policy too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...allocator import MONITOR_WINDOW

# Monitor structures reserved for one VM under bt (bytes).
DEFAULT_TCACHE_SIZE = 512 << 10
VCPU_PAGE_SIZE = 0x1000
# The virtual-CPU page: what translated code reads and writes inline.
VCPU_VIF = 0x0          # the guest's virtual IF: 0 or EFLAGS.IF (0x200)

# Selectors marking the monitor's segments while translated code runs.  They name
# no slot of the shadow GDT the host ever loads from: the host CPU only takes them
# as register contents (translated code performs no segment load, every one is a
# callout), so a guest GDT of any size keeps all its own slots.
TC_CS_SELECTOR = 0xFFF1          # RPL 1
VCPU_GS_SELECTOR = 0xFFE9
# Attribute bits (descriptor bits 40..55, as the CPU keeps them): present, DPL 1,
# code execute-only 32-bit for CS (a CS-relative load of monitor bytes faults);
# data read/write for GS (SDM Vol. 3A §3.4.5, Table 3-1).
TC_CS_ATTR = 0x4000 | 0x80 | (1 << 5) | 0x10 | 0x8
VCPU_GS_ATTR = 0x4000 | 0x80 | (1 << 5) | 0x10 | 0x2


@dataclass(eq=False)
class Callout:
    """A ``ud2`` in the cache that exits to the monitor, and what it asks for.

    kind: ``emulate`` (execute the guest instruction at ``guest`` on the virtual
    CPU), ``chain`` (translate ``guest`` and patch the branch at ``site`` to it),
    ``continue`` (the unit's size limit: go on at ``guest``)."""

    kind: str
    guest: int
    reason: str = ""
    unit: "Unit | None" = None
    site: int | None = None          # chain: tcache address of the branch to patch
    next_guest: int | None = None    # emulate: the EIP after the instruction
    at: int = 0                      # its own tcache address


@dataclass(eq=False)
class Row:
    """One guest instruction of a unit and its translation (for ``trapvisor bt show``)."""

    guest: int
    guest_bytes: bytes
    text: str
    kind: str                 # classify.IDENT, JCC, ...
    reason: str
    host: int
    host_bytes: bytes


@dataclass(eq=False)
class Unit:
    entry: int                        # guest EIP
    host: int                         # tcache address of its first byte
    size: int = 0
    rows: list = field(default_factory=list)
    frames: set = field(default_factory=set)        # guest frames its code came from
    pages: dict = field(default_factory=dict)       # guest linear page -> guest frame
    incoming: list = field(default_factory=list)    # (branch site, its chain stub) into us
    valid: bool = True
    guest_count: int = 0
    ident_count: int = 0


class TranslationCache:
    def __init__(self, allocator, size: int = DEFAULT_TCACHE_SIZE):
        self.mem = allocator.host
        self.size = size
        self.phys = allocator.reserve_top(size + VCPU_PAGE_SIZE)
        self.vcpu_phys = self.phys + size
        self.lo = MONITOR_WINDOW + self.phys
        self.hi = self.lo + size
        self.vcpu_lin = MONITOR_WINDOW + self.vcpu_phys
        self.next = self.lo
        self.flushes = 0
        self.invalidations = 0
        self.units_translated = 0
        self.bytes_emitted = 0
        self.reset_maps()

    def reset_maps(self) -> None:
        self.guest_at: dict[int, int] = {}
        self.callouts: dict[int, Callout] = {}
        self.entries: dict[int, tuple] = {}
        self.by_frame: dict[int, set] = {}
        self.by_page: dict[int, tuple[int, set]] = {}
        self.units: list[Unit] = []

    # -- space ----------------------------------------------------------------
    def room(self) -> int:
        return self.hi - self.next

    def used(self) -> int:
        return self.next - self.lo

    def contains(self, lin: int) -> bool:
        return self.lo <= lin < self.hi

    def write(self, lin: int, data: bytes) -> None:
        """Store translated code: through ``PhysicalMemory.write``, so that the host
        CPU drops what it decoded from those bytes before (self-modifying code)."""
        self.mem.write(lin - MONITOR_WINDOW, data)

    def patch_rel32(self, site: int, length: int, target: int) -> None:
        """Point the rel32 branch of ``length`` bytes at ``site`` to ``target``."""
        rel = (target - (site + length)) & 0xFFFFFFFF
        self.write(site + length - 4, rel.to_bytes(4, "little"))

    def flush(self) -> None:
        """Drop every unit (the cache is full): VMware flushed its cache whole too."""
        self.flushes += 1
        for unit in self.units:
            unit.valid = False
        self.reset_maps()
        if self.next > self.lo:
            self.write(self.lo, bytes(self.next - self.lo))
        self.next = self.lo

    # -- the virtual-CPU page ----------------------------------------------------
    def read_vif(self) -> int:
        return self.mem.read_u32(self.vcpu_phys + VCPU_VIF)

    def write_vif(self, value: int) -> None:
        self.mem.write_u32(self.vcpu_phys + VCPU_VIF, value)

    # -- units -------------------------------------------------------------------
    def add(self, unit: Unit) -> None:
        self.units.append(unit)
        entries = self.entries
        for row in unit.rows:
            if row.kind == "continue":
                continue          # a stub that asks for the translation of row.guest
            have = entries.get(row.guest)
            if have is None or not have[0].valid or row.guest == unit.entry:
                entries[row.guest] = (unit, row.host)
        entries[unit.entry] = (unit, unit.host)
        for frame in unit.frames:
            self.by_frame.setdefault(frame, set()).add(unit)
        for page, frame in unit.pages.items():
            have = self.by_page.get(page)
            if have is None or have[0] != frame:
                have = self.by_page[page] = (frame, set())
            have[1].add(unit)
        self.units_translated += 1

    def invalidate(self, unit: Unit) -> None:
        """Drop one unit: nothing enters it again.  Its bytes stay until the next
        flush (an exit may still map an address inside it back to the guest)."""
        if not unit.valid:
            return
        unit.valid = False
        self.invalidations += 1
        for site, length, stub, source in unit.incoming:
            if source.valid:
                self.patch_rel32(site, length, stub)
        unit.incoming.clear()
        for frame in unit.frames:
            s = self.by_frame.get(frame)
            if s is not None:
                s.discard(unit)
                if not s:
                    del self.by_frame[frame]
        for page in unit.pages:
            have = self.by_page.get(page)
            if have is not None:
                have[1].discard(unit)
                if not have[1]:
                    del self.by_page[page]

    def lookup(self, eip: int):
        """(unit, tcache address) of a valid translation entered at guest ``eip``, or None."""
        have = self.entries.get(eip)
        if have is not None and have[0].valid:
            return have
        return None

    def invalidate_frame(self, frame: int) -> int:
        """A guest store into ``frame``: drop every unit translated from it."""
        units = list(self.by_frame.get(frame, ()))
        for unit in units:
            self.invalidate(unit)
        return len(units)

    def unit_at(self, lin: int) -> Unit | None:
        """The unit whose bytes hold tcache address ``lin`` (for inspection)."""
        for unit in self.units:
            if unit.host <= lin < unit.host + unit.size:
                return unit
        return None
