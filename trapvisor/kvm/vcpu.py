"""A KVM vCPU: its fd, the shared kvm_run page, and its register state.

The kvm_run page (linux/kvm.h ``struct kvm_run``) is mapped once; after each
KVM_RUN the exit reason and the per-reason union are read from it at the
offsets in :mod:`.ioctls`.

Kicking (:meth:`KvmVcpu.kick`) is the protocol of KVM api.rst section 5
("immediate_exit"): set ``kvm_run.immediate_exit``, then signal the vCPU's
thread.  A signal that arrives inside KVM_RUN makes it return EINTR; one that
arrives between the thread's last look at its requests and KVM_RUN is not
lost, because KVM_RUN then sees immediate_exit and returns EINTR at once.
The thread clears the flag after every return.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import signal
import struct
import threading

from . import ioctls

# Intel SDM Vol. 4 / AMD APM: MSR numbers used when setting up a vCPU.
MSR_IA32_TSC = 0x10
MSR_IA32_SYSENTER_CS = 0x174
MSR_IA32_SYSENTER_ESP = 0x175
MSR_IA32_SYSENTER_EIP = 0x176
MSR_IA32_MISC_ENABLE = 0x1A0
MSR_IA32_MISC_ENABLE_FAST_STRING = 1 << 0
MSR_STAR = 0xC000_0081
MSR_LSTAR = 0xC000_0082
MSR_CSTAR = 0xC000_0083
MSR_SYSCALL_MASK = 0xC000_0084
MSR_KERNEL_GS_BASE = 0xC000_0102

_U32 = struct.Struct("<I")


# The signal that kicks a vCPU thread out of KVM_RUN (QEMU uses SIGUSR1 too: SIG_IPI).
SIG_KICK = signal.SIGUSR1


def _no_op(signum, frame) -> None:
    """The kick's handler: the signal only has to interrupt KVM_RUN."""


def install_kick_handler() -> bool:
    """Give SIG_KICK a handler (its default action ends the process).  Python lets only the
    main thread install one, so this is done when this module is first imported there, and
    again by every run on the main thread; returns whether a handler is in place."""
    if callable(signal.getsignal(SIG_KICK)):
        return True
    if threading.current_thread() is not threading.main_thread():
        return False
    signal.signal(SIG_KICK, _no_op)
    return True


install_kick_handler()


class KvmVcpu:
    def __init__(self, vm, vcpu_id: int):
        self.vm = vm
        self.index = vcpu_id            # the KVM vCPU id, which is also its APIC ID
        self.thread_id: int | None = None
        self.fd = ioctls.ioctl(vm.fd, ioctls.KVM_CREATE_VCPU, vcpu_id)
        size = vm.system.vcpu_mmap_size()
        self.run_page = mmap.mmap(self.fd, size, flags=mmap.MAP_SHARED,
                                  prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self._closed = False

    # -- running ----------------------------------------------------------------
    def run(self) -> int:
        """One KVM_RUN; returns 0 or -errno (EINTR when a signal kicked us out)."""
        return ioctls.ioctl_raw(self.fd, ioctls.KVM_RUN, None)

    def exit_reason(self) -> int:
        return _U32.unpack_from(self.run_page, ioctls.RUN_EXIT_REASON)[0]

    def set_immediate_exit(self, flag: bool) -> None:
        self.run_page[ioctls.RUN_IMMEDIATE_EXIT] = 1 if flag else 0

    def bind_thread(self) -> None:
        """Record the calling thread as the one that runs this vCPU (the target of kicks)."""
        self.thread_id = threading.get_ident()

    def kick(self) -> None:
        """Make the vCPU's KVM_RUN return (now, or at once when it next starts)."""
        if self._closed:
            return
        self.run_page[ioctls.RUN_IMMEDIATE_EXIT] = 1
        tid = self.thread_id
        # Without a handler (run() not on the main thread) SIGUSR1 would end the process:
        # then only immediate_exit acts, at the thread's next KVM_RUN.
        if tid is not None and tid != threading.get_ident() and callable(signal.getsignal(SIG_KICK)):
            try:
                signal.pthread_kill(tid, SIG_KICK)
            except ProcessLookupError:      # the thread has ended
                pass

    def request_interrupt_window(self, flag: bool) -> None:
        self.run_page[ioctls.RUN_REQUEST_INTERRUPT_WINDOW] = 1 if flag else 0

    def ready_for_interrupt_injection(self) -> bool:
        return bool(self.run_page[ioctls.RUN_READY_FOR_INJECTION]) and bool(self.run_page[ioctls.RUN_IF_FLAG])

    def inject_interrupt(self, vector: int) -> None:
        """KVM_INTERRUPT: only meaningful without an in-kernel irqchip."""
        ioctls.ioctl(self.fd, ioctls.KVM_INTERRUPT, ioctls.kvm_interrupt(irq=vector))

    # -- state ----------------------------------------------------------------
    def get_regs(self) -> ioctls.kvm_regs:
        r = ioctls.kvm_regs()
        ioctls.ioctl(self.fd, ioctls.KVM_GET_REGS, r)
        return r

    def set_regs(self, regs: ioctls.kvm_regs) -> None:
        ioctls.ioctl(self.fd, ioctls.KVM_SET_REGS, regs)

    def get_sregs(self) -> ioctls.kvm_sregs:
        s = ioctls.kvm_sregs()
        ioctls.ioctl(self.fd, ioctls.KVM_GET_SREGS, s)
        return s

    def set_sregs(self, sregs: ioctls.kvm_sregs) -> None:
        ioctls.ioctl(self.fd, ioctls.KVM_SET_SREGS, sregs)

    def get_fpu(self) -> ioctls.kvm_fpu:
        f = ioctls.kvm_fpu()
        ioctls.ioctl(self.fd, ioctls.KVM_GET_FPU, f)
        return f

    def set_fpu(self, fpu: ioctls.kvm_fpu) -> None:
        ioctls.ioctl(self.fd, ioctls.KVM_SET_FPU, fpu)

    def get_msrs(self, indices: list[int]) -> dict[int, int]:
        buf = ioctls.msrs_buffer([(i, 0) for i in indices])
        n = ioctls.ioctl(self.fd, ioctls.KVM_GET_MSRS, buf)
        return {buf.entries[i].index: buf.entries[i].data for i in range(n)}

    def set_msrs(self, values: dict[int, int]) -> int:
        """KVM_SET_MSRS; returns how many were set (it stops at the first it refuses)."""
        return ioctls.ioctl(self.fd, ioctls.KVM_SET_MSRS, ioctls.msrs_buffer(list(values.items())))

    def set_cpuid(self, entries: list[ioctls.kvm_cpuid_entry2]) -> None:
        # 8 + 40*n bytes: a ctypes buffer, never an immutable bytes (1 KiB copy limit).
        buf = ioctls.cpuid2_buffer(len(entries))
        for i, e in enumerate(entries):
            buf.entries[i] = e
        ioctls.ioctl(self.fd, ioctls.KVM_SET_CPUID2, buf)

    def set_initial_fpu(self) -> None:
        """FNINIT state and the default MXCSR, as after a processor reset."""
        fpu = ioctls.kvm_fpu()
        fpu.fcw = 0x37F
        fpu.mxcsr = 0x1F80
        self.set_fpu(fpu)

    def get_cpuid(self, nent: int = 256) -> list[ioctls.kvm_cpuid_entry2]:
        """KVM_GET_CPUID2: the table KVM_SET_CPUID2 gave this vCPU."""
        buf = ioctls.cpuid2_buffer(nent)
        ioctls.ioctl(self.fd, ioctls.KVM_GET_CPUID2, buf)
        return [ioctls.kvm_cpuid_entry2.from_buffer_copy(buf.entries[i]) for i in range(buf.nent)]

    def mp_state(self) -> int:
        """KVM_GET_MP_STATE (in-kernel irqchip only): RUNNABLE, UNINITIALIZED, HALTED, ..."""
        st = ioctls.kvm_mp_state()
        ioctls.ioctl(self.fd, ioctls.KVM_GET_MP_STATE, st)
        return st.mp_state

    def is_halted(self) -> bool:
        """Is the vCPU sitting in HLT (in-kernel irqchip only)?"""
        return self.mp_state() == ioctls.KVM_MP_STATE_HALTED

    def get_lapic_register(self, offset: int) -> int:
        """One 32-bit register of the in-kernel local APIC (KVM_GET_LAPIC, api.rst 4.57)."""
        st = ioctls.kvm_lapic_state()
        ioctls.ioctl(self.fd, ioctls.KVM_GET_LAPIC, st)
        return struct.unpack_from("<I", bytes(st.regs), offset)[0]

    def get_events(self) -> ioctls.kvm_vcpu_events:
        ev = ioctls.kvm_vcpu_events()
        ioctls.ioctl(self.fd, ioctls.KVM_GET_VCPU_EVENTS, ev)
        return ev

    def inject_exception(self, vector: int) -> None:
        """KVM_SET_VCPU_EVENTS with an injected exception without error code (api.rst 4.32)."""
        ev = self.get_events()
        ev.exception_injected, ev.exception_nr, ev.exception_has_error_code = 1, vector, 0
        ev.exception_pending, ev.exception_has_payload = 0, 0
        ev.flags = 0
        ioctls.ioctl(self.fd, ioctls.KVM_SET_VCPU_EVENTS, ev)

    def set_guest_debug(self, control: int, debugreg=(0,) * 8) -> None:
        """KVM_SET_GUEST_DEBUG (api.rst 4.61): a host debugger's breakpoints and single step;
        control 0 turns them off."""
        d = ioctls.kvm_guest_debug(control=control)
        for i, v in enumerate(debugreg):
            d.debugreg[i] = v
        ioctls.ioctl(self.fd, ioctls.KVM_SET_GUEST_DEBUG, d)

    def translate(self, linear: int) -> int | None:
        """KVM_TRANSLATE: the guest-physical address of a linear address, or None."""
        t = ioctls.kvm_translation(linear_address=linear)
        try:
            ioctls.ioctl(self.fd, ioctls.KVM_TRANSLATE, t)
        except OSError:
            return None
        return t.physical_address if t.valid else None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.run_page.close()
        os.close(self.fd)
        self.fd = -1
