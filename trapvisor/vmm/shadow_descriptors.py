"""Shadow descriptor tables and ring compression.

Under trap-and-emulate the guest kernel runs at ring 1 of the host CPU, its
rings 1 and 2 at ring 2 (ring compression, ``HOST_RING``; guest ring 3 stays
at ring 3).  The host CPU therefore uses the monitor's own tables, never the
guest's:

* the **shadow GDT**: the guest's descriptors copied into the monitor region,
  with every code/data DPL compressed the same way, so the deprivileged
  kernel can load its own segments; its system descriptors not present;
  plus the monitor's TSS in the last slot;
* the **monitor IDT**: every vector leads to the monitor (in this model, the
  host CPU's exception bitmap and software-interrupt exiting make every event
  an exit), which reflects the event into the guest through the guest's own
  IDT and TSS;
* the **monitor TSS**: with no I/O permission bitmap, so every IN/OUT from
  ring 1 or 3 traps (#GP) to the monitor.

Selectors and descriptor privilege levels are translated between the guest's
view (the virtual CPU) and the host's by :func:`compress_selector` and
friends.  What ring compression cannot hide, x86's sensitive but
unprivileged instructions reveal: PUSH CS shows RPL 1, SGDT shows the shadow
GDT's base, STR shows the monitor's TSS selector (Robin & Irvine, USENIX
Security 2000).
"""

from __future__ import annotations

from ..machine.cpu.descriptors import d_limit
from .allocator import MONITOR_GDT, MONITOR_IDT, MONITOR_TSS, MONITOR_WINDOW

GDT_LIMIT = 0xFFFF                 # the shadow GDT always spans 8192 slots
MONITOR_TSS_SELECTOR = 0xFFF8      # the last GDT slot: the monitor's own TSS
MONITOR_TSS_LIMIT = 0x67           # a bare 32-bit TSS, no I/O permission bitmap
MONITOR_IDT_LIMIT = 0x7FF


# Ring compression: guest ring -> host ring.  The guest kernel (ring 0) runs at host
# ring 1; guest rings 1 and 2 share host ring 2, so that neither is ever taken for the
# kernel (a privileged instruction at guest ring 1 faults on the host and the monitor,
# which keeps the guest's real CPL in the virtual CPU, gives the guest its #GP(0));
# ring 3 stays ring 3.  Both host rings 1 and 2 are supervisor to the paging unit, as
# guest rings 0-2 are (SDM Vol. 3A §4.6).
HOST_RING = (1, 2, 2, 3)
GUEST_RING = (0, 0, 2, 3)      # host ring -> guest ring where it is unambiguous (2: see guest_cpl)


def compress_selector(sel: int) -> int:
    """Guest selector -> host selector: the RPL goes through HOST_RING (a null selector stays)."""
    if not sel & ~3:
        return sel
    return (sel & ~3) | HOST_RING[sel & 3]


def decompress_selector(sel: int) -> int:
    """Host selector -> guest selector.  RPL 2 is guest RPL 2 (or 1: only a selector the
    guest loaded while running directly on the standard CPU can be either)."""
    if not sel & ~3:
        return sel
    return (sel & ~3) | GUEST_RING[sel & 3]


def compress_attr(attr: int) -> int:
    """Descriptor attribute bits (40..55): a code/data DPL goes through HOST_RING."""
    if attr & 0x10:
        return (attr & ~(3 << 5)) | (HOST_RING[(attr >> 5) & 3] << 5)
    return attr


def decompress_attr(attr: int) -> int:
    if attr & 0x10:
        return (attr & ~(3 << 5)) | (GUEST_RING[(attr >> 5) & 3] << 5)
    return attr


def guest_cpl(host_cpl: int, vcpu_cpl: int) -> int:
    """The guest's CPL after it ran directly: the virtual CPU's, unless the host ring
    says the guest changed rings meanwhile (only the standard CPU lets it do so
    without a trap); host ring 2 is guest ring 1 or 2, kept as the virtual CPU had it
    when that was one of the two."""
    if HOST_RING[vcpu_cpl] == host_cpl:
        return vcpu_cpl
    return GUEST_RING[host_cpl] if host_cpl != 2 else 1


def truncate_limit(base: int, limit: int, attr: int) -> int:
    """Cut an expand-up code/data segment's limit below the monitor window."""
    if attr & 0x10 and not (attr & 0x1C == 0x14) and base < MONITOR_WINDOW \
            and base + limit >= MONITOR_WINDOW:
        return MONITOR_WINDOW - 1 - base
    return limit


def reaches_window(base: int, limit: int, attr: int) -> bool:
    """Does a present code/data segment reach the monitor window whatever its limit is cut to?

    Truncation can only shorten an expand-up segment that starts below the
    window.  A segment based inside the window reaches it at offset 0, and an
    expand-down segment's valid offsets (limit, 0xFFFF or 0xFFFFFFFF] run
    upwards into it (or wrap into it); no limit keeps either out.
    """
    if not attr & 0x10 or not attr & 0x80:
        return False
    if attr & 0x1C != 0x14:                                 # expand-up
        return base >= MONITOR_WINDOW
    upper = 0xFFFFFFFF if attr & 0x4000 else 0xFFFF
    if limit >= upper:
        return False                                        # no valid offset at all
    lo, hi = base + limit + 1, base + upper                 # linear range before wrapping
    return (lo <= 0xFFFFFFFF and hi >= MONITOR_WINDOW) or hi >= (1 << 32) + MONITOR_WINDOW


def host_segment(base: int, limit: int, attr: int) -> tuple[int, int]:
    """(limit, attr) the host CPU uses for a guest code/data segment.

    The limit is truncated below the monitor window; a segment that
    truncation cannot keep out of the window (:func:`reaches_window`) is
    given to the host *not present*, so that every access through it faults
    (#GP, #SS) and is emulated on the virtual CPU with the guest's own
    segment and mappings.  A code segment like that is never run directly:
    the monitor interprets its instructions (``TrapEmulate.run``).
    """
    if reaches_window(base, limit, attr):
        return limit, attr & ~0x80
    return truncate_limit(base, limit, attr), attr


def compress_descriptor(d: int) -> int:
    """A guest descriptor as the shadow GDT holds it: DPL compressed, limit truncated.

    A descriptor whose segment would reach the monitor window whatever its
    limit is copied *not present*: loading it on the host faults (#NP) and
    the load is emulated on the virtual CPU.

    System descriptors (TSS, LDT, call and task gates) are copied *not
    present* too: the host CPU only ever uses the monitor's own TSS, stacks
    and CR3.  A far call or jump through one, a task switch, faults on the
    host (#NP) and is performed by the virtual CPU on the guest's own tables,
    with the faults the SDM gives (Vol. 3A §5.8, §7.3).
    """
    if not (d >> 44) & 1:
        return d & ~(1 << 47)
    dpl = (d >> 45) & 3
    d = (d & ~(3 << 45)) | (HOST_RING[dpl] << 45)   # code/data: the DPL ring-compressed
    from ..machine.cpu.descriptors import d_attr, d_base
    base, limit, attr = d_base(d), d_limit(d), d_attr(d)
    if reaches_window(base, limit, attr):
        return d & ~(1 << 47)
    new = truncate_limit(base, limit, attr)
    if new != limit:
        # Back to the descriptor's granularity, rounding *down*: with G=1 the limit is
        # (field << 12) | 0xFFF (SDM Vol. 3A §3.4.5), which rounds a truncated limit up
        # into the window unless the field is taken one page lower.
        if attr & 0x8000:
            if new >= 0xFFF:
                field = (new - 0xFFF) >> 12
            else:                        # less than a page: byte granularity instead
                field, d = new, d & ~(1 << 55)
        else:
            field = new
        d = (d & ~0xFFFF & ~(0xF << 48)) | (field & 0xFFFF) | (((field >> 16) & 0xF) << 48)
    return d


def tss_descriptor(base: int, limit: int) -> int:
    """A present, available 32-bit TSS descriptor of DPL 0 (SDM Vol. 3A §7.2.2)."""
    d = (limit & 0xFFFF) | ((base & 0xFFFFFF) << 16) | (0x89 << 40) \
        | (((limit >> 16) & 0xF) << 48) | (((base >> 24) & 0xFF) << 56)
    return d


class ShadowDescriptors:
    """The host's GDT, IDT and TSS for one VM, kept in step with the guest's GDT."""

    def __init__(self, host_cpu, host_memory, vcpu, trace_frame=None):
        self.host = host_cpu
        self.mem = host_memory
        self.vcpu = vcpu
        self.trace_frame = trace_frame      # fn(guest_frame, tag): write-protect a guest page
        self.rebuilds = 0

    def install(self) -> None:
        """Point the host CPU at the monitor's tables (done once per VM entry)."""
        self.rebuild()
        h = self.host
        # I/O map base beyond the TSS limit: no bitmap, so every IN/OUT below
        # IOPL traps (SDM Vol. 1 §18.5.2).  Left at 0 it would overlay the TSS's
        # own zero bytes and open ports 0-0x33F to the guest.
        self.mem.write_u16(MONITOR_TSS + 0x66, 0xFFFF)
        h.idtr = (MONITOR_WINDOW + MONITOR_IDT, MONITOR_IDT_LIMIT)
        h.tr, h.tr_base, h.tr_limit, h.tr_attr = (MONITOR_TSS_SELECTOR, MONITOR_WINDOW + MONITOR_TSS,
                                                  MONITOR_TSS_LIMIT, 0x8B)
        h.ldtr, h.ldt_base, h.ldt_limit = 0, 0, 0

    def rebuild(self) -> None:
        """Copy the guest's GDT into the shadow GDT with ring compression applied."""
        from ..machine.cpu.cpu import CpuFault
        self.rebuilds += 1
        ram = self.mem.ram
        ram[MONITOR_GDT:MONITOR_GDT + GDT_LIMIT + 1] = bytes(GDT_LIMIT + 1)
        base, limit = self.vcpu.gdtr
        n = min((limit + 1) // 8, 8191)
        for i in range(1, n):
            try:
                d = self.vcpu.sys_read(base + 8 * i, 8)
            except CpuFault:
                continue           # a GDT page the guest has not mapped: leave the slot empty
            ram[MONITOR_GDT + 8 * i:MONITOR_GDT + 8 * i + 8] = compress_descriptor(d).to_bytes(8, "little")
        tss = tss_descriptor(MONITOR_WINDOW + MONITOR_TSS, MONITOR_TSS_LIMIT) | (2 << 40)  # busy: the host's TR
        off = MONITOR_GDT + MONITOR_TSS_SELECTOR
        ram[off:off + 8] = tss.to_bytes(8, "little")
        self.host.gdtr = (MONITOR_WINDOW + MONITOR_GDT, GDT_LIMIT)
        # Trace the guest's GDT pages so that a guest store into its GDT reaches us.
        if self.trace_frame is not None and limit:
            for lin in range(base & ~0xFFF, base + limit + 1, 0x1000):
                try:
                    gpa = self.vcpu.translate_lin(lin & 0xFFFFFFFF, False, user=False)
                except CpuFault:
                    continue
                self.trace_frame(gpa & ~0xFFF, ("gdt",))
        if self.vcpu.ldtr & ~3:
            self.host.ldtr = self.vcpu.ldtr   # guest LDTs are not shadowed (none of our guests use one)
