"""A KVM vCPU: its fd, the shared kvm_run page, and its register state.

The kvm_run page (linux/kvm.h ``struct kvm_run``) is mapped once; after each
KVM_RUN the exit reason and the per-reason union are read from it at the
offsets in :mod:`.ioctls`.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct

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


class KvmVcpu:
    def __init__(self, vm, index: int):
        self.vm = vm
        self.index = index
        self.fd = ioctls.ioctl(vm.fd, ioctls.KVM_CREATE_VCPU, index)
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

    def is_halted(self) -> bool:
        """KVM_GET_MP_STATE: is the vCPU sitting in HLT (in-kernel irqchip only)?"""
        st = ioctls.kvm_mp_state()
        ioctls.ioctl(self.fd, ioctls.KVM_GET_MP_STATE, st)
        return st.mp_state == ioctls.KVM_MP_STATE_HALTED

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
