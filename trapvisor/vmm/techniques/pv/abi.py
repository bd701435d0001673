"""The paravirtual interface's numbers and layouts, after Xen's x86-32 public ABI.

Facts taken from Xen's public headers (xen/include/public/xen.h,
arch-x86/xen-x86_32.h, arch-x86/xen.h, event_channel.h, sched.h, vcpu.h,
physdev.h, version.h, io/console.h, errno.h) and from Barham et al., "Xen
and the Art of Virtualization", SOSP 2003, section 3: the numbers and the
shapes are Xen's, the code is ours.  This is the 32-bit, two-level (non-PAE)
flavour of the ABI: page-table entries are 32 bits, the hypervisor owns the
top 64 MiB of every address space.
"""

from __future__ import annotations

import struct

# -- hypercalls (xen.h, "HYPERCALLS"); x86-32: INT 0x82, EAX = number, EBX ECX EDX ESI EDI
HYPERCALL_VECTOR = 0x82
HYPERCALL_SLOT = 32                   # bytes per entry of the hypercall page
HYPERVISOR_set_trap_table = 0
HYPERVISOR_mmu_update = 1
HYPERVISOR_set_gdt = 2
HYPERVISOR_stack_switch = 3
HYPERVISOR_set_callbacks = 4
HYPERVISOR_fpu_taskswitch = 5
HYPERVISOR_update_descriptor = 10
HYPERVISOR_multicall = 13
HYPERVISOR_update_va_mapping = 14
HYPERVISOR_set_timer_op = 15
HYPERVISOR_xen_version = 17
HYPERVISOR_console_io = 18
HYPERVISOR_grant_table_op = 20
HYPERVISOR_vm_assist = 21
HYPERVISOR_iret = 23
HYPERVISOR_vcpu_op = 24
HYPERVISOR_mmuext_op = 26
HYPERVISOR_sched_op = 29
HYPERVISOR_event_channel_op = 32
HYPERVISOR_physdev_op = 33

HYPERCALL_NAMES = {
    0: "set_trap_table", 1: "mmu_update", 2: "set_gdt", 3: "stack_switch", 4: "set_callbacks",
    5: "fpu_taskswitch", 10: "update_descriptor", 13: "multicall", 14: "update_va_mapping",
    15: "set_timer_op", 17: "xen_version", 18: "console_io", 20: "grant_table_op",
    21: "vm_assist", 23: "iret", 24: "vcpu_op", 26: "mmuext_op", 29: "sched_op",
    32: "event_channel_op", 33: "physdev_op",
}

# -- errno values returned negated in EAX (xen/include/public/errno.h)
EPERM, ENOENT, ESRCH, EFAULT, EBUSY, EEXIST, EINVAL, ENOSPC, ENOSYS = 1, 2, 3, 14, 16, 17, 22, 28, 38
EAGAIN, ENOMEM, EACCES, E2BIG = 11, 12, 13, 7

# -- address space (arch-x86/xen-x86_32.h, non-PAE): the hypervisor's hole
HYPERVISOR_VIRT_START = 0xFC000000
MACH2PHYS_VIRT_START = 0xFC000000     # the read-only machine-to-physical table
MACH2PHYS_VIRT_END = 0xFC400000
GUEST_SEGMENT_MAX = MACH2PHYS_VIRT_END - 1   # guest segments are truncated here
HYPERVISOR_GDT_VIRT = 0xFFC00000      # our per-domain GDT area (the last 4 MiB)
FIRST_RESERVED_GDT_PAGE = 14
FIRST_RESERVED_GDT_ENTRY = FIRST_RESERVED_GDT_PAGE * 512
FLAT_RING1_CS = 0xE019
FLAT_RING1_DS = 0xE021
FLAT_RING3_CS = 0xE02B
FLAT_RING3_DS = 0xE033
GUEST_KERNEL_RPL = 1

# -- mmu_update (xen.h): ptr's low two bits are the command
MMU_NORMAL_PT_UPDATE = 0
MMU_MACHPHYS_UPDATE = 1
MMU_PT_UPDATE_PRESERVE_AD = 2
MMU_UPDATE = struct.Struct("<QQ")     # struct mmu_update { uint64_t ptr, val; }
DOMID_SELF = 0x7FF0

# -- mmuext_op commands (xen.h)
MMUEXT_PIN_L1_TABLE = 0
MMUEXT_PIN_L2_TABLE = 1
MMUEXT_PIN_L3_TABLE = 2
MMUEXT_PIN_L4_TABLE = 3
MMUEXT_UNPIN_TABLE = 4
MMUEXT_NEW_BASEPTR = 5
MMUEXT_TLB_FLUSH_LOCAL = 6
MMUEXT_INVLPG_LOCAL = 7
MMUEXT_TLB_FLUSH_MULTI = 8
MMUEXT_INVLPG_MULTI = 9
MMUEXT_TLB_FLUSH_ALL = 10
MMUEXT_INVLPG_ALL = 11
MMUEXT_SET_LDT = 13
MMUEXT_OP = struct.Struct("<III")     # cmd; arg1 (mfn | linear_addr); arg2 (nr_ents | ...)

# -- update_va_mapping flags (xen.h)
UVMF_NONE = 0
UVMF_TLB_FLUSH = 1
UVMF_INVLPG = 2
UVMF_FLUSHTYPE_MASK = 3

# -- trap_info (arch-x86/xen.h): { uint8 vector; uint8 flags; uint16 cs; unsigned long address }
TRAP_INFO = struct.Struct("<BBHI")
TI_DPL_MASK = 3
TI_CLEAR_EVENTS = 4                   # TI_SET_IF: entering masks event delivery (an interrupt gate)

# -- sched_op (sched.h)
SCHEDOP_yield = 0
SCHEDOP_block = 1
SCHEDOP_shutdown = 2
SHUTDOWN_poweroff = 0
SHUTDOWN_reboot = 1
SHUTDOWN_suspend = 2
SHUTDOWN_crash = 3
SHUTDOWN_NAMES = {0: "poweroff", 1: "reboot", 2: "suspend", 3: "crash", 4: "watchdog"}

# -- event_channel_op (event_channel.h)
EVTCHNOP_bind_virq = 1
EVTCHNOP_close = 3
EVTCHNOP_send = 4
EVTCHNOP_status = 5
EVTCHNOP_alloc_unbound = 6
EVTCHNOP_unmask = 9
NR_EVENT_CHANNELS = 1024              # 32 words of 32 bits (x86-32)
VIRQ_TIMER = 0
VIRQ_DEBUG = 1
VIRQ_CONSOLE = 2
NR_VIRQS = 24

# -- vcpu_op (vcpu.h)
VCPUOP_is_up = 3
VCPUOP_set_periodic_timer = 10
VCPUOP_stop_periodic_timer = 11
VCPUOP_set_singleshot_timer = 12
VCPUOP_stop_singleshot_timer = 13

# -- physdev_op (physdev.h)
PHYSDEVOP_set_iopl = 6

# -- console_io (xen.h)
CONSOLEIO_write = 0
CONSOLEIO_read = 1

# -- xen_version (version.h)
XENVER_version = 0
XENVER_extraversion = 1
XENVER_capabilities = 3
XENVER_platform_parameters = 5
XENVER_get_features = 6
XENVER_pagesize = 7
XEN_MAJOR, XEN_MINOR = 3, 0
XEN_EXTRAVERSION = b"-trapvisor"
XEN_CAPABILITIES = b"xen-3.0-x86_32"

# -- shared_info (xen.h, arch-x86/xen.h; x86-32, MAX_VIRT_CPUS = 32)
VCPU_INFO_SIZE = 64
VI_UPCALL_PENDING = 0                 # uint8 evtchn_upcall_pending
VI_UPCALL_MASK = 1                    # uint8 evtchn_upcall_mask
VI_PENDING_SEL = 4                    # unsigned long evtchn_pending_sel
VI_CR2 = 8                            # arch_vcpu_info.cr2
VI_TIME = 32                          # struct vcpu_time_info
SI_EVTCHN_PENDING = 32 * VCPU_INFO_SIZE    # 2048: unsigned long evtchn_pending[32]
SI_EVTCHN_MASK = SI_EVTCHN_PENDING + 128   # 2176: unsigned long evtchn_mask[32]
SI_WC_VERSION = SI_EVTCHN_MASK + 128       # 2304

# -- start_info (xen.h), x86-32
START_INFO_MAGIC = b"xen-3.0-x86_32"
SI_MAGIC = 0
SI_NR_PAGES = 32
SI_SHARED_INFO = 36                   # machine address of the shared_info page
SI_FLAGS = 40
SI_STORE_MFN = 44
SI_STORE_EVTCHN = 48
SI_CONSOLE_MFN = 52
SI_CONSOLE_EVTCHN = 56
SI_PT_BASE = 60                       # virtual address of the bootstrap page directory
SI_NR_PT_FRAMES = 64
SI_MFN_LIST = 68                      # virtual address of the pfn -> mfn array
SI_MOD_START = 72
SI_MOD_LEN = 76
SI_CMD_LINE = 80
MAX_GUEST_CMDLINE = 1024
START_INFO_SIZE = SI_CMD_LINE + MAX_GUEST_CMDLINE + 8

# -- io/console.h: struct xencons_interface
CONS_IN = 0                           # char in[1024]
CONS_IN_SIZE = 1024
CONS_OUT = 1024                       # char out[2048]
CONS_OUT_SIZE = 2048
CONS_IN_CONS = 3072                   # XENCONS_RING_IDX in_cons, in_prod, out_cons, out_prod
CONS_IN_PROD = 3076
CONS_OUT_CONS = 3080
CONS_OUT_PROD = 3084

# -- ELF notes a PV kernel carries (xen/include/public/elfnote.h), name "Xen"
XEN_ELFNOTE_ENTRY = 1
XEN_ELFNOTE_HYPERCALL_PAGE = 2
XEN_ELFNOTE_VIRT_BASE = 3
XEN_ELFNOTE_GUEST_OS = 6
XEN_ELFNOTE_XEN_VERSION = 5
XEN_ELFNOTE_LOADER = 8
