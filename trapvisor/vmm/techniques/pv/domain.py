"""The domain builder: a paravirtual kernel's memory at boot.

What a Xen PV kernel finds when it starts (xen.h, "Start-of-day memory
layout"): paging on, running at ring 1 on FLAT_RING1_CS/DS, ESI pointing at
start_info, and after the kernel image, in order: the pfn-to-mfn list
(start_info.mfn_list), start_info, the console ring page, the bootstrap page
directory and page tables (pt_base, nr_pt_frames, mapped read-only and
pinned), a boot stack.  The bootstrap tables map the domain's pseudo-
physical memory at virtual address = pseudo-physical address, as tvos maps
it (Xen maps the kernel's region and the bootstrap area; a kernel linked at
0 that expects its memory identity-mapped gets all of it).

The hypervisor's hole is filled here too: the read-only machine-to-physical
table at MACH2PHYS_VIRT_START and the per-domain GDT area, both from frames
of the monitor region that the domain cannot name in its page tables.
"""

from __future__ import annotations

import struct

from ....errors import UserError
from ....machine.loader.elf import parse_elf32
from .abi import (
    CONS_OUT_SIZE, FIRST_RESERVED_GDT_ENTRY, FIRST_RESERVED_GDT_PAGE, FLAT_RING1_CS, FLAT_RING1_DS,
    FLAT_RING3_CS, FLAT_RING3_DS, HYPERCALL_SLOT, HYPERCALL_VECTOR, HYPERVISOR_GDT_VIRT,
    HYPERVISOR_iret, MACH2PHYS_VIRT_START, MAX_GUEST_CMDLINE, SI_CMD_LINE, SI_CONSOLE_EVTCHN,
    SI_CONSOLE_MFN, SI_MFN_LIST, SI_MOD_LEN, SI_MOD_START, SI_NR_PAGES, SI_NR_PT_FRAMES, SI_PT_BASE,
    SI_SHARED_INFO, SI_STORE_EVTCHN, SI_STORE_MFN, START_INFO_MAGIC, XEN_ELFNOTE_ENTRY,
    XEN_ELFNOTE_GUEST_OS, XEN_ELFNOTE_HYPERCALL_PAGE,
)
from .mm import PAGE, PTE_A, PTE_D, PTE_P, PTE_RW, PTE_US
from .segments import flat

INVALID_M2P = 0xFFFFFFFF
GDT_AREA_PAGES = 16            # a full 64 KiB GDT: the guest's 14 frames, then the hypervisor's
HYPERVISOR_PDE = PTE_P | PTE_RW | PTE_A | PTE_D   # supervisor: the guest's segments stop below


def xen_notes(data: bytes) -> dict[int, bytes]:
    """The "Xen" ELF notes of a kernel (elfnote.h): {type: descriptor bytes}."""
    from io import BytesIO

    from elftools.elf.elffile import ELFFile
    notes: dict[int, bytes] = {}
    try:
        elf = ELFFile(BytesIO(data))
        sec = elf.get_section_by_name(".note.Xen")
        raw = sec.data() if sec is not None else b""
    except Exception:  # noqa: BLE001 - not an ELF file: no notes (parse_elf32 says why)
        return notes
    off = 0
    while off + 12 <= len(raw):
        namesz, descsz, ntype = struct.unpack_from("<III", raw, off)
        off += 12
        name = raw[off:off + namesz].rstrip(b"\0")
        off += (namesz + 3) & ~3
        desc = raw[off:off + descsz]
        off += (descsz + 3) & ~3
        if name == b"Xen":
            notes[ntype] = desc
    return notes


def is_pv_kernel(path) -> bool:
    try:
        data = open(path, "rb").read()
    except OSError:
        return False
    notes = xen_notes(data)
    return XEN_ELFNOTE_HYPERCALL_PAGE in notes and XEN_ELFNOTE_GUEST_OS in notes


class BootLayout:
    """Where the builder put things (pseudo-physical addresses = the guest's virtual)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def build_domain(mem, alloc, partition, path: str, cmdline: str) -> BootLayout:
    """Load the PV kernel into the partition and lay out its boot structures.

    ``mem`` is host memory; the domain's pseudo-physical frame p is machine frame
    ``partition.base >> 12`` + p.  Returns the layout; the caller validates the
    page tables (frame types) and loads the host CPU."""
    data = open(path, "rb").read()
    notes = xen_notes(data)
    name = str(path).rsplit("/", 1)[-1]
    if XEN_ELFNOTE_HYPERCALL_PAGE not in notes:
        raise UserError(f"{name} is not a paravirtual kernel (no Xen HYPERCALL_PAGE ELF note); "
                        f"the pv technique runs kernels ported to its hypercall interface")
    segments, entry = parse_elf32(data, path)
    if XEN_ELFNOTE_ENTRY in notes:
        entry = int.from_bytes(notes[XEN_ELFNOTE_ENTRY][:4], "little")
    base, size = partition.base, partition.size
    nr_pages = size // PAGE
    first_mfn = base // PAGE
    kernel_end = 0
    for paddr, blob, memsz in segments:
        if paddr + memsz > size:
            raise UserError(f"{name}: a segment at {paddr:#x} does not fit in {size >> 20} MiB")
        mem.write(base + paddr, blob)
        mem.ram[base + paddr + len(blob):base + paddr + memsz] = bytes(memsz - len(blob))
        kernel_end = max(kernel_end, paddr + memsz)

    def take(nbytes: int) -> int:
        nonlocal cursor
        at = cursor
        cursor += (nbytes + PAGE - 1) & ~(PAGE - 1)
        if cursor > size:
            raise UserError(f"{name}: {size >> 20} MiB is too little for the kernel and its boot area")
        mem.ram[base + at:base + cursor] = bytes(cursor - at)
        return at

    cursor = (kernel_end + PAGE - 1) & ~(PAGE - 1)
    mfn_list = take(4 * nr_pages)
    start_info = take(PAGE)
    console = take(PAGE)
    nr_l1 = (nr_pages + 1023) // 1024
    pt_base = take(PAGE * (1 + nr_l1))
    stack = take(PAGE)
    boot_end = cursor

    # p2m: the domain's pseudo-physical frames are contiguous machine frames here.
    mem.write(base + mfn_list, struct.pack(f"<{nr_pages}I", *range(first_mfn, first_mfn + nr_pages)))
    # Bootstrap page tables: identity, writable, except the page-table frames (read-only).
    pt_frames = range(pt_base // PAGE, pt_base // PAGE + 1 + nr_l1)
    for i in range(nr_l1):
        l1 = pt_base + PAGE * (1 + i)
        mem.write_u32(base + pt_base + 4 * i, (first_mfn + l1 // PAGE) << 12 | PTE_P | PTE_RW | PTE_US)
        ptes = []
        for j in range(1024):
            pfn = i * 1024 + j
            if pfn >= nr_pages:
                ptes.append(0)
                continue
            flags = PTE_P | PTE_US * 0 | (0 if pfn in pt_frames else PTE_RW)
            ptes.append((first_mfn + pfn) << 12 | flags)
        mem.write(base + l1, struct.pack("<1024I", *ptes))
    # The hypercall page (Xen's x86-32 stubs: mov $n, %eax; int $0x82; ret; iret pushes EAX).
    hc_va = int.from_bytes(notes[XEN_ELFNOTE_HYPERCALL_PAGE][:4], "little")
    if hc_va & 0xFFF or hc_va + PAGE > size:
        raise UserError(f"{name}: HYPERCALL_PAGE {hc_va:#x} is not a page of the kernel")
    page = bytearray(PAGE)
    for n in range(PAGE // HYPERCALL_SLOT):
        stub = b"\xb8" + n.to_bytes(4, "little") + bytes([0xCD, HYPERCALL_VECTOR, 0xC3])
        if n == HYPERVISOR_iret:
            stub = b"\x50" + stub[:-1]
        page[n * HYPERCALL_SLOT:n * HYPERCALL_SLOT + len(stub)] = stub
    mem.write(base + hc_va, bytes(page))
    return BootLayout(nr_pages=nr_pages, first_mfn=first_mfn, entry=entry, mfn_list=mfn_list,
                      start_info=start_info, console=console, pt_base=pt_base, nr_pt_frames=1 + nr_l1,
                      stack_top=stack + PAGE, boot_end=boot_end, kernel_end=kernel_end,
                      hypercall_page=hc_va, guest_os=notes.get(XEN_ELFNOTE_GUEST_OS, b"").rstrip(b"\0"))


def write_start_info(mem, base: int, lay: BootLayout, *, shared_info_ma: int, console_evtchn: int,
                     cmdline: str) -> None:
    si = base + lay.start_info
    mem.write(si, START_INFO_MAGIC.ljust(32, b"\0"))
    mem.write_u32(si + SI_NR_PAGES, lay.nr_pages)
    mem.write_u32(si + SI_SHARED_INFO, shared_info_ma)
    mem.write_u32(si + SI_STORE_MFN, 0)
    mem.write_u32(si + SI_STORE_EVTCHN, 0)
    mem.write_u32(si + SI_CONSOLE_MFN, lay.first_mfn + lay.console // PAGE)
    mem.write_u32(si + SI_CONSOLE_EVTCHN, console_evtchn)
    mem.write_u32(si + SI_PT_BASE, lay.pt_base)
    mem.write_u32(si + SI_NR_PT_FRAMES, lay.nr_pt_frames)
    mem.write_u32(si + SI_MFN_LIST, lay.mfn_list)
    mem.write_u32(si + SI_MOD_START, 0)
    mem.write_u32(si + SI_MOD_LEN, 0)
    raw = cmdline.encode("latin-1", "replace")[:MAX_GUEST_CMDLINE - 1]
    mem.write(si + SI_CMD_LINE, raw + b"\0")


class HypervisorHole:
    """The top 64 MiB of every address space: the M2P table (read-only to the guest
    kernel) and the per-domain GDT area, on frames of the monitor region."""

    def __init__(self, mem, alloc, partitions):
        self.mem = mem
        host_frames = mem.size // PAGE
        m2p = [INVALID_M2P] * host_frames
        for p in partitions:
            for i in range(p.size // PAGE):
                m2p[p.base // PAGE + i] = i
        raw = struct.pack(f"<{host_frames}I", *m2p)
        self.m2p_l1 = alloc.alloc_frame()
        for i in range(0, len(raw), PAGE):
            f = alloc.alloc_frame()
            mem.write(f, raw[i:i + PAGE])
            mem.write_u32(self.m2p_l1 + 4 * (i // PAGE), f | PTE_P | PTE_A)     # read-only
        # GDT area: the guest's frames (set_gdt), then the hypervisor's reserved page.
        self.gdt_l1 = alloc.alloc_frame()
        self.zero_frame = alloc.alloc_frame()
        self.reserved = alloc.alloc_frame()
        for i in range(GDT_AREA_PAGES):
            self.map_gdt_page(i, self.reserved if i == FIRST_RESERVED_GDT_PAGE else self.zero_frame)
        for sel, d in ((FLAT_RING1_CS, flat(1, True)), (FLAT_RING1_DS, flat(1, False)),
                       (FLAT_RING3_CS, flat(3, True)), (FLAT_RING3_DS, flat(3, False))):
            index = (sel >> 3) - FIRST_RESERVED_GDT_ENTRY
            mem.write(self.reserved + 8 * index, (d | 1 << 40).to_bytes(8, "little"))
        self.l2_slots = {MACH2PHYS_VIRT_START >> 22: self.m2p_l1 | HYPERVISOR_PDE & ~PTE_RW | PTE_P,
                         HYPERVISOR_GDT_VIRT >> 22: self.gdt_l1 | HYPERVISOR_PDE}
        self.frames = {self.m2p_l1, self.gdt_l1, self.zero_frame, self.reserved}

    def map_gdt_page(self, i: int, machine_frame: int) -> None:
        """The CPU writes accessed bits through this mapping: writable, supervisor (the
        guest's segments end below the hole, so ring 1 cannot reach it)."""
        self.mem.write_u32(self.gdt_l1 + 4 * i, machine_frame | PTE_P | PTE_RW | PTE_A | PTE_D)

    def snapshot(self) -> bytes:
        """Every byte of the hole's frames (tests: a hostile guest changed nothing)."""
        return b"".join(bytes(self.mem.ram[f:f + PAGE]) for f in sorted(self.frames))
