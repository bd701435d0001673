"""The KVM ABI: ioctl numbers and structures, transcribed from the uapi headers.

Nothing here calls the kernel except :func:`ioctl`; everything else is the
shape of the data that crosses the boundary.  Each structure and number names
the header that defines it (as installed by linux-libc-dev at
``/usr/include/linux/kvm.h`` and ``/usr/include/x86_64-linux-gnu/asm/kvm.h``),
so a reader can check the layout against the source of truth.

ioctl numbers are computed with the same ``_IO``/``_IOR``/``_IOW``/``_IOWR``
encoding as ``asm-generic/ioctl.h`` (dir << 30 | size << 16 | type << 8 | nr)
from ``ctypes.sizeof`` of the structure, so a wrong structure size shows up
as a wrong number (the tests pin both).
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os

# --- asm-generic/ioctl.h ----------------------------------------------------
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2


def _IOC(direction: int, type_: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (type_ << 8) | nr


def _IO(type_: int, nr: int) -> int:
    return _IOC(_IOC_NONE, type_, nr, 0)


def _IOR(type_: int, nr: int, struct) -> int:
    return _IOC(_IOC_READ, type_, nr, ctypes.sizeof(struct))


def _IOW(type_: int, nr: int, struct) -> int:
    return _IOC(_IOC_WRITE, type_, nr, ctypes.sizeof(struct))


def _IOWR(type_: int, nr: int, struct) -> int:
    return _IOC(_IOC_READ | _IOC_WRITE, type_, nr, ctypes.sizeof(struct))


u8, u16, u32, u64, s32 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_int32

# --- linux/kvm.h: structures of the VM and system ioctls --------------------

class kvm_userspace_memory_region(ctypes.Structure):
    """linux/kvm.h ``struct kvm_userspace_memory_region`` (KVM_SET_USER_MEMORY_REGION)."""
    _fields_ = [("slot", u32), ("flags", u32), ("guest_phys_addr", u64),
                ("memory_size", u64), ("userspace_addr", u64)]


class kvm_irq_level(ctypes.Structure):
    """linux/kvm.h ``struct kvm_irq_level`` (KVM_IRQ_LINE); ``irq`` shares a union with ``status``."""
    _fields_ = [("irq", u32), ("level", u32)]


class kvm_pit_config(ctypes.Structure):
    """linux/kvm.h ``struct kvm_pit_config`` (KVM_CREATE_PIT2)."""
    _fields_ = [("flags", u32), ("pad", u32 * 15)]


KVM_PIT_SPEAKER_DUMMY = 1   # linux/kvm.h: port 0x61 handled in-kernel as a dummy speaker


class kvm_interrupt(ctypes.Structure):
    """linux/kvm.h ``struct kvm_interrupt`` (KVM_INTERRUPT: inject a vector, userspace irqchip only)."""
    _fields_ = [("irq", u32)]


class kvm_translation(ctypes.Structure):
    """linux/kvm.h ``struct kvm_translation`` (KVM_TRANSLATE: guest linear -> physical)."""
    _fields_ = [("linear_address", u64), ("physical_address", u64), ("valid", u8),
                ("writeable", u8), ("usermode", u8), ("pad", u8 * 5)]


class kvm_irq_routing_irqchip(ctypes.Structure):
    """linux/kvm.h ``struct kvm_irq_routing_irqchip``."""
    _fields_ = [("irqchip", u32), ("pin", u32)]


class kvm_irq_routing_entry(ctypes.Structure):
    """linux/kvm.h ``struct kvm_irq_routing_entry``: 48 bytes (the union is padded to 8 u32)."""
    _fields_ = [("gsi", u32), ("type", u32), ("flags", u32), ("pad", u32),
                ("irqchip", kvm_irq_routing_irqchip), ("upad", u32 * 6)]


class kvm_irq_routing(ctypes.Structure):
    """linux/kvm.h ``struct kvm_irq_routing``: an 8-byte header followed by ``nr`` entries."""
    _fields_ = [("nr", u32), ("flags", u32)]


def irq_routing_buffer(routes: list[tuple[int, int, int]]):
    """A ``struct kvm_irq_routing`` from (gsi, irqchip, pin) triples."""
    class _Routing(ctypes.Structure):
        _fields_ = [("nr", u32), ("flags", u32), ("entries", kvm_irq_routing_entry * len(routes))]
    buf = _Routing()
    buf.nr = len(routes)
    for i, (gsi, chip, pin) in enumerate(routes):
        e = buf.entries[i]
        e.gsi, e.type = gsi, KVM_IRQ_ROUTING_IRQCHIP
        e.irqchip.irqchip, e.irqchip.pin = chip, pin
    return buf


KVM_IRQ_ROUTING_IRQCHIP = 1     # linux/kvm.h
KVM_IRQCHIP_PIC_MASTER = 0      # asm/kvm.h
KVM_IRQCHIP_PIC_SLAVE = 1       # asm/kvm.h
KVM_IRQCHIP_IOAPIC = 2          # asm/kvm.h


class kvm_mp_state(ctypes.Structure):
    """linux/kvm.h ``struct kvm_mp_state`` (KVM_GET_MP_STATE)."""
    _fields_ = [("mp_state", u32)]


KVM_MP_STATE_RUNNABLE = 0       # linux/kvm.h
KVM_MP_STATE_UNINITIALIZED = 1  # an AP that has not received INIT yet
KVM_MP_STATE_INIT_RECEIVED = 2  # an AP waiting for its SIPI
KVM_MP_STATE_HALTED = 3         # linux/kvm.h


class kvm_pic_state(ctypes.Structure):
    """asm/kvm.h ``struct kvm_pic_state``: one 8259A (KVM_GET_IRQCHIP / KVM_SET_IRQCHIP)."""
    _fields_ = [(n, u8) for n in ("last_irr", "irr", "imr", "isr", "priority_add", "irq_base",
                                  "read_reg_select", "poll", "special_mask", "init_state", "auto_eoi",
                                  "rotate_on_auto_eoi", "special_fully_nested_mode", "init4", "elcr",
                                  "elcr_mask")]


KVM_IOAPIC_NUM_PINS = 24        # asm/kvm.h


class kvm_ioapic_state(ctypes.Structure):
    """asm/kvm.h ``struct kvm_ioapic_state``; ``redirtbl`` entries as raw u64 (the union's ``bits``)."""
    _fields_ = [("base_address", u64), ("ioregsel", u32), ("id", u32), ("irr", u32), ("pad", u32),
                ("redirtbl", u64 * KVM_IOAPIC_NUM_PINS)]


class _irqchip_union(ctypes.Union):
    _fields_ = [("dummy", ctypes.c_char * 512), ("pic", kvm_pic_state), ("ioapic", kvm_ioapic_state)]


class kvm_irqchip(ctypes.Structure):
    """linux/kvm.h ``struct kvm_irqchip``: chip_id (KVM_IRQCHIP_*), pad, then a 512-byte union."""
    _fields_ = [("chip_id", u32), ("pad", u32), ("chip", _irqchip_union)]


class kvm_pit_channel_state(ctypes.Structure):
    """asm/kvm.h ``struct kvm_pit_channel_state``: 24 bytes."""
    _fields_ = [("count", u32), ("latched_count", u16), ("count_latched", u8), ("status_latched", u8),
                ("status", u8), ("read_state", u8), ("write_state", u8), ("write_latch", u8),
                ("rw_mode", u8), ("mode", u8), ("bcd", u8), ("gate", u8), ("count_load_time", ctypes.c_int64)]


class kvm_pit_state2(ctypes.Structure):
    """asm/kvm.h ``struct kvm_pit_state2`` (KVM_GET_PIT2 / KVM_SET_PIT2): 112 bytes."""
    _fields_ = [("channels", kvm_pit_channel_state * 3), ("flags", u32), ("reserved", u32 * 9)]


class kvm_vcpu_events(ctypes.Structure):
    """asm/kvm.h ``struct kvm_vcpu_events`` (KVM_GET/SET_VCPU_EVENTS): 64 bytes."""
    _fields_ = [("exception_injected", u8), ("exception_nr", u8), ("exception_has_error_code", u8),
                ("exception_pending", u8), ("exception_error_code", u32),
                ("interrupt_injected", u8), ("interrupt_nr", u8), ("interrupt_soft", u8),
                ("interrupt_shadow", u8),
                ("nmi_injected", u8), ("nmi_pending", u8), ("nmi_masked", u8), ("nmi_pad", u8),
                ("sipi_vector", u32), ("flags", u32),
                ("smi_smm", u8), ("smi_pending", u8), ("smi_inside_nmi", u8), ("smi_latched_init", u8),
                ("triple_fault_pending", u8), ("reserved", u8 * 26), ("exception_has_payload", u8),
                ("exception_payload", u64)]


KVM_APIC_REG_SIZE = 0x400       # asm/kvm.h


class kvm_lapic_state(ctypes.Structure):
    """asm/kvm.h ``struct kvm_lapic_state``: the APIC register page's first 1 KiB."""
    _fields_ = [("regs", u8 * KVM_APIC_REG_SIZE)]


# --- asm/kvm.h (x86): vCPU state -------------------------------------------

class kvm_regs(ctypes.Structure):
    """asm/kvm.h ``struct kvm_regs`` (KVM_GET_REGS / KVM_SET_REGS)."""
    _fields_ = [(n, u64) for n in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
                                   "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
                                   "rip", "rflags")]


class kvm_segment(ctypes.Structure):
    """asm/kvm.h ``struct kvm_segment``: a segment register with its hidden descriptor part."""
    _fields_ = [("base", u64), ("limit", u32), ("selector", u16), ("type", u8),
                ("present", u8), ("dpl", u8), ("db", u8), ("s", u8), ("l", u8),
                ("g", u8), ("avl", u8), ("unusable", u8), ("padding", u8)]


class kvm_dtable(ctypes.Structure):
    """asm/kvm.h ``struct kvm_dtable`` (GDTR / IDTR)."""
    _fields_ = [("base", u64), ("limit", u16), ("padding", u16 * 3)]


KVM_NR_INTERRUPTS = 256   # asm/kvm.h


class kvm_sregs(ctypes.Structure):
    """asm/kvm.h ``struct kvm_sregs`` (KVM_GET_SREGS / KVM_SET_SREGS): 312 bytes."""
    _fields_ = [("cs", kvm_segment), ("ds", kvm_segment), ("es", kvm_segment),
                ("fs", kvm_segment), ("gs", kvm_segment), ("ss", kvm_segment),
                ("tr", kvm_segment), ("ldt", kvm_segment),
                ("gdt", kvm_dtable), ("idt", kvm_dtable),
                ("cr0", u64), ("cr2", u64), ("cr3", u64), ("cr4", u64), ("cr8", u64),
                ("efer", u64), ("apic_base", u64),
                ("interrupt_bitmap", u64 * ((KVM_NR_INTERRUPTS + 63) // 64))]


class kvm_guest_debug(ctypes.Structure):
    """linux/kvm.h ``struct kvm_guest_debug`` with x86's ``kvm_guest_debug_arch``
    (DR0-DR7 as the host debugger wants them; api.rst 4.61 KVM_SET_GUEST_DEBUG)."""
    _fields_ = [("control", u32), ("pad", u32), ("debugreg", u64 * 8)]


# kvm_guest_debug.control (linux/kvm.h, asm/kvm.h)
KVM_GUESTDBG_ENABLE = 0x1
KVM_GUESTDBG_SINGLESTEP = 0x2
KVM_GUESTDBG_USE_SW_BP = 0x10000
KVM_GUESTDBG_USE_HW_BP = 0x20000
KVM_GUESTDBG_BLOCKIRQ = 0x100000


class kvm_fpu(ctypes.Structure):
    """asm/kvm.h ``struct kvm_fpu`` (KVM_GET_FPU / KVM_SET_FPU): 416 bytes, mxcsr at 408."""
    _fields_ = [("fpr", (u8 * 16) * 8), ("fcw", u16), ("fsw", u16), ("ftwx", u8),
                ("pad1", u8), ("last_opcode", u16), ("last_ip", u64), ("last_dp", u64),
                ("xmm", (u8 * 16) * 16), ("mxcsr", u32), ("pad2", u32)]


class kvm_msr_entry(ctypes.Structure):
    """asm/kvm.h ``struct kvm_msr_entry``."""
    _fields_ = [("index", u32), ("reserved", u32), ("data", u64)]


class kvm_msrs(ctypes.Structure):
    """asm/kvm.h ``struct kvm_msrs``: a header followed by ``nmsrs`` entries (flexible array)."""
    _fields_ = [("nmsrs", u32), ("pad", u32)]


class kvm_cpuid_entry2(ctypes.Structure):
    """asm/kvm.h ``struct kvm_cpuid_entry2``: 40 bytes."""
    _fields_ = [("function", u32), ("index", u32), ("flags", u32), ("eax", u32),
                ("ebx", u32), ("ecx", u32), ("edx", u32), ("padding", u32 * 3)]


class kvm_cpuid2(ctypes.Structure):
    """asm/kvm.h ``struct kvm_cpuid2``: an 8-byte header followed by ``nent`` entries."""
    _fields_ = [("nent", u32), ("padding", u32)]


KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1   # asm/kvm.h (sic: the header's spelling)


def msrs_buffer(entries: list[tuple[int, int]]):
    """A ``struct kvm_msrs`` with its entries, as one ctypes object."""
    class _Msrs(ctypes.Structure):
        _fields_ = [("nmsrs", u32), ("pad", u32), ("entries", kvm_msr_entry * max(1, len(entries)))]
    buf = _Msrs()
    buf.nmsrs = len(entries)
    for i, (index, data) in enumerate(entries):
        buf.entries[i].index = index
        buf.entries[i].data = data
    return buf


def cpuid2_buffer(nent: int):
    """A ``struct kvm_cpuid2`` with room for ``nent`` entries."""
    class _Cpuid2(ctypes.Structure):
        _fields_ = [("nent", u32), ("padding", u32), ("entries", kvm_cpuid_entry2 * nent)]
    buf = _Cpuid2()
    buf.nent = nent
    return buf


# --- linux/kvm.h: ioctl numbers ---------------------------------------------
KVMIO = 0xAE

# system ioctls (on /dev/kvm)
KVM_GET_API_VERSION = _IO(KVMIO, 0x00)
KVM_CREATE_VM = _IO(KVMIO, 0x01)
KVM_CHECK_EXTENSION = _IO(KVMIO, 0x03)
KVM_GET_VCPU_MMAP_SIZE = _IO(KVMIO, 0x04)
# _IOWR(KVMIO, 0x05, struct kvm_cpuid2): the size field covers only the header.
KVM_GET_SUPPORTED_CPUID = _IOWR(KVMIO, 0x05, kvm_cpuid2)

# VM ioctls
KVM_CREATE_VCPU = _IO(KVMIO, 0x41)
KVM_SET_USER_MEMORY_REGION = _IOW(KVMIO, 0x46, kvm_userspace_memory_region)
KVM_SET_TSS_ADDR = _IO(KVMIO, 0x47)
KVM_SET_IDENTITY_MAP_ADDR = _IOW(KVMIO, 0x48, u64)
KVM_CREATE_IRQCHIP = _IO(KVMIO, 0x60)
KVM_IRQ_LINE = _IOW(KVMIO, 0x61, kvm_irq_level)
KVM_CREATE_PIT2 = _IOW(KVMIO, 0x77, kvm_pit_config)
KVM_SET_GSI_ROUTING = _IOW(KVMIO, 0x6A, kvm_irq_routing)
KVM_GET_IRQCHIP = _IOWR(KVMIO, 0x62, kvm_irqchip)
KVM_SET_IRQCHIP = _IOR(KVMIO, 0x63, kvm_irqchip)     # sic: _IOR in linux/kvm.h
KVM_GET_PIT2 = _IOR(KVMIO, 0x9F, kvm_pit_state2)
KVM_SET_PIT2 = _IOW(KVMIO, 0xA0, kvm_pit_state2)

# vCPU ioctls
KVM_RUN = _IO(KVMIO, 0x80)
KVM_GET_REGS = _IOR(KVMIO, 0x81, kvm_regs)
KVM_SET_REGS = _IOW(KVMIO, 0x82, kvm_regs)
KVM_GET_SREGS = _IOR(KVMIO, 0x83, kvm_sregs)
KVM_SET_SREGS = _IOW(KVMIO, 0x84, kvm_sregs)
KVM_TRANSLATE = _IOWR(KVMIO, 0x85, kvm_translation)
KVM_INTERRUPT = _IOW(KVMIO, 0x86, kvm_interrupt)
KVM_GET_MSRS = _IOWR(KVMIO, 0x88, kvm_msrs)
KVM_SET_MSRS = _IOW(KVMIO, 0x89, kvm_msrs)
KVM_GET_FPU = _IOR(KVMIO, 0x8C, kvm_fpu)
KVM_SET_FPU = _IOW(KVMIO, 0x8D, kvm_fpu)
KVM_SET_CPUID2 = _IOW(KVMIO, 0x90, kvm_cpuid2)
KVM_GET_MP_STATE = _IOR(KVMIO, 0x98, kvm_mp_state)
KVM_SET_MP_STATE = _IOW(KVMIO, 0x99, kvm_mp_state)
KVM_GET_CPUID2 = _IOWR(KVMIO, 0x91, kvm_cpuid2)
KVM_GET_LAPIC = _IOR(KVMIO, 0x8E, kvm_lapic_state)
KVM_SET_GUEST_DEBUG = _IOW(KVMIO, 0x9B, kvm_guest_debug)
KVM_GET_VCPU_EVENTS = _IOR(KVMIO, 0x9F, kvm_vcpu_events)
KVM_SET_VCPU_EVENTS = _IOW(KVMIO, 0xA0, kvm_vcpu_events)

# --- linux/kvm.h: capabilities (KVM_CHECK_EXTENSION) -----------------------
KVM_CAP_IRQCHIP = 0
KVM_CAP_HLT = 1
KVM_CAP_USER_MEMORY = 3
KVM_CAP_SET_TSS_ADDR = 4
KVM_CAP_EXT_CPUID = 7
KVM_CAP_NR_VCPUS = 9
KVM_CAP_NR_MEMSLOTS = 10
KVM_CAP_PIT = 11
KVM_CAP_PIT2 = 33
KVM_CAP_SET_IDENTITY_MAP_ADDR = 37
KVM_CAP_VCPU_EVENTS = 41
KVM_CAP_XSAVE = 55
KVM_CAP_MAX_VCPUS = 66
KVM_CAP_IMMEDIATE_EXIT = 136
KVM_CAP_SET_GUEST_DEBUG = 23
KVM_CAP_SET_GUEST_DEBUG2 = 195    # its value: the KVM_GUESTDBG_* flags this KVM supports

CAPABILITIES = {
    "IRQCHIP": KVM_CAP_IRQCHIP, "HLT": KVM_CAP_HLT, "USER_MEMORY": KVM_CAP_USER_MEMORY,
    "SET_TSS_ADDR": KVM_CAP_SET_TSS_ADDR, "EXT_CPUID": KVM_CAP_EXT_CPUID,
    "NR_VCPUS": KVM_CAP_NR_VCPUS, "NR_MEMSLOTS": KVM_CAP_NR_MEMSLOTS, "PIT": KVM_CAP_PIT,
    "PIT2": KVM_CAP_PIT2, "SET_IDENTITY_MAP_ADDR": KVM_CAP_SET_IDENTITY_MAP_ADDR,
    "VCPU_EVENTS": KVM_CAP_VCPU_EVENTS, "XSAVE": KVM_CAP_XSAVE,
    "MAX_VCPUS": KVM_CAP_MAX_VCPUS, "IMMEDIATE_EXIT": KVM_CAP_IMMEDIATE_EXIT,
}
# Without these trapvisor cannot build a VM at all.
REQUIRED_CAPABILITIES = ("USER_MEMORY", "EXT_CPUID", "SET_TSS_ADDR")

# --- linux/kvm.h: struct kvm_run (the page shared with the kernel) -----------
# Offsets into the mapping, read with struct.unpack_from on the hot path.
RUN_REQUEST_INTERRUPT_WINDOW = 0   # __u8
RUN_IMMEDIATE_EXIT = 1             # __u8
RUN_EXIT_REASON = 8                # __u32
RUN_READY_FOR_INJECTION = 12       # __u8
RUN_IF_FLAG = 13                   # __u8
RUN_CR8 = 16                       # __u64
RUN_APIC_BASE = 24                 # __u64
RUN_UNION = 32                     # the per-exit-reason union starts here (x86: no psw fields)

KVM_EXIT_UNKNOWN = 0
KVM_EXIT_EXCEPTION = 1
KVM_EXIT_IO = 2
KVM_EXIT_HYPERCALL = 3
KVM_EXIT_DEBUG = 4
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_IRQ_WINDOW_OPEN = 7
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTR = 10
KVM_EXIT_SET_TPR = 11
KVM_EXIT_TPR_ACCESS = 12
KVM_EXIT_NMI = 16
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_SYSTEM_EVENT = 24
KVM_EXIT_X86_RDMSR = 29
KVM_EXIT_X86_WRMSR = 30

EXIT_REASON_NAMES = {v: k for k, v in globals().items()
                     if k.startswith("KVM_EXIT_") and isinstance(v, int) and not k.startswith("KVM_EXIT_IO_")}

KVM_EXIT_IO_IN = 0
KVM_EXIT_IO_OUT = 1

# linux/kvm.h: KVM_EXIT_INTERNAL_ERROR suberrors
KVM_INTERNAL_ERROR_EMULATION = 1
KVM_INTERNAL_ERROR_SIMUL_EX = 2
KVM_INTERNAL_ERROR_DELIVERY_EV = 3
KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON = 4
INTERNAL_ERROR_NAMES = {
    1: "emulation failure (KVM's instruction emulator could not run the instruction)",
    2: "exception raised while simulating an exception",
    3: "exception raised while delivering an event (bad IDT/GDT/stack?)",
    4: "unexpected hardware exit reason",
}
# linux/kvm.h: flag in internal.data[0] of an emulation failure: instruction bytes follow
KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES = 1

# linux/kvm.h: KVM_EXIT_SYSTEM_EVENT types
KVM_SYSTEM_EVENT_SHUTDOWN = 1
KVM_SYSTEM_EVENT_RESET = 2
KVM_SYSTEM_EVENT_CRASH = 3

# --- calling the kernel ------------------------------------------------------
# fcntl.ioctl passes its argument as a signed C int and copies immutable
# buffers only up to 1024 bytes (Python's Modules/fcntlmodule.c: IOCTL_BUFSZ);
# libc's ioctl through ctypes with an unsigned long has neither limit.
_libc = ctypes.CDLL(None, use_errno=True)
_ioctl = _libc.ioctl
_ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
_ioctl.restype = ctypes.c_int


class KvmIoctlError(OSError):
    """An ioctl on /dev/kvm, a VM or a vCPU failed."""


def ioctl(fd: int, request: int, arg=None) -> int:
    """Issue one ioctl; ``arg`` is None, an int, or a ctypes object passed by reference."""
    if arg is None:
        ptr = None
    elif isinstance(arg, int):
        ptr = arg
    else:
        ptr = ctypes.addressof(arg)
    ret = _ioctl(fd, request, ptr)
    if ret < 0:
        err = ctypes.get_errno()
        raise KvmIoctlError(err, f"{ioctl_name(request)}: {os.strerror(err)}")
    return ret


def ioctl_raw(fd: int, request: int, ptr) -> int:
    """The hot-path variant: returns -errno instead of raising (KVM_RUN and EINTR)."""
    ret = _ioctl(fd, request, ptr)
    return ret if ret >= 0 else -ctypes.get_errno()


def ioctl_name(request: int) -> str:
    for k, v in globals().items():
        if k.startswith("KVM_") and v == request and not k.startswith("KVM_CAP_") and not k.startswith("KVM_EXIT"):
            return k
    return f"ioctl {request:#x}"


EINTR = _errno.EINTR
EAGAIN = _errno.EAGAIN
E2BIG = _errno.E2BIG
