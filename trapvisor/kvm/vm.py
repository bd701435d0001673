"""A KVM virtual machine: the /dev/kvm handle, the VM fd, its memory and irqchip.

Order of creation follows the KVM API documentation (Documentation/virt/kvm/
api.rst): create the VM, set the TSS and identity-map addresses (needed by
Intel real-mode emulation; harmless elsewhere), create the in-kernel irqchip
before any vCPU, then the PIT, then memory and vCPUs.
"""

from __future__ import annotations

import ctypes
import os

from ..errors import UserError
from ..machine import bios
from . import ioctls
from .guestmem import KvmGuestMemory
from .hostinfo import KVM_DEVICE

# Four pages just below the BIOS ROM alias at the top of 4 GiB: the EPT identity
# map page and the three TSS pages that VT-x without unrestricted guest needs for
# real mode (KVM api.rst 4.47 KVM_SET_TSS_ADDR: "three pages ... must not conflict
# with any memory slot or any mmio address"; 4.58 KVM_SET_IDENTITY_MAP_ADDR: one
# page).  The firmware's E820 map reserves exactly these (bios.HYPERVISOR_PAGES_*).
IDENTITY_MAP_ADDRESS = bios.HYPERVISOR_PAGES_BASE
IDENTITY_MAP_SIZE = 0x1000
TSS_ADDRESS = IDENTITY_MAP_ADDRESS + IDENTITY_MAP_SIZE
TSS_SIZE = 0x3000
assert TSS_ADDRESS + TSS_SIZE == bios.HYPERVISOR_PAGES_BASE + bios.HYPERVISOR_PAGES_SIZE


class KvmSystem:
    """The open /dev/kvm: system ioctls."""

    def __init__(self, device: str = KVM_DEVICE):
        try:
            self.fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise UserError(f"{device} does not exist: KVM is not available on this host",
                            hint="run with --accel sim (the default)") from None
        except PermissionError:
            raise UserError(f"no permission to open {device}",
                            hint="add yourself to the 'kvm' group or run as root; or use --accel sim") from None

    def check_extension(self, cap: int) -> int:
        return ioctls.ioctl(self.fd, ioctls.KVM_CHECK_EXTENSION, cap)

    def vcpu_mmap_size(self) -> int:
        return ioctls.ioctl(self.fd, ioctls.KVM_GET_VCPU_MMAP_SIZE)

    def supported_cpuid(self) -> list[ioctls.kvm_cpuid_entry2]:
        """KVM_GET_SUPPORTED_CPUID, growing the buffer on E2BIG."""
        nent = 64
        while True:
            buf = ioctls.cpuid2_buffer(nent)
            try:
                ioctls.ioctl(self.fd, ioctls.KVM_GET_SUPPORTED_CPUID, buf)
            except ioctls.KvmIoctlError as e:
                if e.errno == ioctls.E2BIG and nent < 4096:
                    nent *= 2
                    continue
                raise
            return [ioctls.kvm_cpuid_entry2.from_buffer_copy(buf.entries[i]) for i in range(buf.nent)]

    def create_vm(self) -> int:
        return ioctls.ioctl(self.fd, ioctls.KVM_CREATE_VM, 0)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class KvmVm:
    """One VM: fd, guest RAM slot, optional in-kernel irqchip and PIT."""

    def __init__(self, system: KvmSystem, memory: KvmGuestMemory, *, irqchip: bool = True):
        self.system = system
        self.memory = memory
        self.fd = system.create_vm()
        self.vcpus: list = []
        self.has_irqchip = False
        self.has_pit = False
        self._closed = False
        self._irq_level = ioctls.kvm_irq_level()
        self.given_pages: list[tuple[int, int, str]] = []     # (address, size, ioctl): guest-physical pages KVM uses
        self.set_tss_address(TSS_ADDRESS)
        if system.check_extension(ioctls.KVM_CAP_SET_IDENTITY_MAP_ADDR):
            self.set_identity_map_address(IDENTITY_MAP_ADDRESS)
        # The platform has one switch for "PICs, PIT and APICs in the kernel",
        # so the in-kernel irqchip is used only together with the in-kernel PIT.
        if (irqchip and system.check_extension(ioctls.KVM_CAP_IRQCHIP)
                and system.check_extension(ioctls.KVM_CAP_PIT2)):
            self.create_irqchip()
            self.route_isa_irqs_like_the_mp_table()
            self.create_pit()
        self.map_ram(slot=0, guest_phys=0, memory=memory)

    # -- set-up ---------------------------------------------------------------
    def set_tss_address(self, addr: int) -> None:
        # An address argument above 2 GiB: ioctls.ioctl passes it as unsigned long.
        ioctls.ioctl(self.fd, ioctls.KVM_SET_TSS_ADDR, addr)
        self.given_pages.append((addr, TSS_SIZE, "KVM_SET_TSS_ADDR"))

    def set_identity_map_address(self, addr: int) -> None:
        ioctls.ioctl(self.fd, ioctls.KVM_SET_IDENTITY_MAP_ADDR, ctypes.c_uint64(addr))
        self.given_pages.append((addr, IDENTITY_MAP_SIZE, "KVM_SET_IDENTITY_MAP_ADDR"))

    def create_irqchip(self) -> None:
        """In-kernel 8259 pair, I/O APIC and local APIC: ports 0x20/0xA0 and the APIC pages never exit."""
        ioctls.ioctl(self.fd, ioctls.KVM_CREATE_IRQCHIP)
        self.has_irqchip = True

    def route_isa_irqs_like_the_mp_table(self) -> None:
        """KVM_SET_GSI_ROUTING: ISA IRQ n to PIC input n and I/O APIC pin n, IRQ 0 to pin 2.

        KVM's default routing sends GSI 0 (the in-kernel PIT) to I/O APIC pin
        0, but the MP table trapvisor writes (bios.py, as SeaBIOS) says the
        8254 drives pin 2; this is QEMU's kvm_pc_setup_irq_routing.
        """
        routes = []
        for irq in range(16):
            if irq != 2:
                chip = ioctls.KVM_IRQCHIP_PIC_MASTER if irq < 8 else ioctls.KVM_IRQCHIP_PIC_SLAVE
                routes.append((irq, chip, irq % 8))
        for pin in range(24):
            if pin == 0:
                routes.append((0, ioctls.KVM_IRQCHIP_IOAPIC, 2))
            elif pin != 2:
                routes.append((pin, ioctls.KVM_IRQCHIP_IOAPIC, pin))
        ioctls.ioctl(self.fd, ioctls.KVM_SET_GSI_ROUTING, ioctls.irq_routing_buffer(routes))

    def create_pit(self) -> None:
        """In-kernel 8254 on ports 0x40-0x43 (and a dummy speaker port 0x61)."""
        cfg = ioctls.kvm_pit_config(flags=ioctls.KVM_PIT_SPEAKER_DUMMY)
        ioctls.ioctl(self.fd, ioctls.KVM_CREATE_PIT2, cfg)
        self.has_pit = True

    def get_irqchip(self, chip_id: int) -> ioctls.kvm_irqchip:
        chip = ioctls.kvm_irqchip(chip_id=chip_id)
        ioctls.ioctl(self.fd, ioctls.KVM_GET_IRQCHIP, chip)
        return chip

    def set_irqchip(self, chip: ioctls.kvm_irqchip) -> None:
        ioctls.ioctl(self.fd, ioctls.KVM_SET_IRQCHIP, chip)

    def get_pit2(self) -> ioctls.kvm_pit_state2:
        st = ioctls.kvm_pit_state2()
        ioctls.ioctl(self.fd, ioctls.KVM_GET_PIT2, st)
        return st

    def set_pit2(self, st: ioctls.kvm_pit_state2) -> None:
        ioctls.ioctl(self.fd, ioctls.KVM_SET_PIT2, st)

    def map_ram(self, *, slot: int, guest_phys: int, memory: KvmGuestMemory) -> None:
        region = ioctls.kvm_userspace_memory_region(
            slot=slot, flags=0, guest_phys_addr=guest_phys,
            memory_size=memory.size, userspace_addr=memory.host_address)
        ioctls.ioctl(self.fd, ioctls.KVM_SET_USER_MEMORY_REGION, region)

    def create_vcpu(self, vcpu_id: int = 0):
        """KVM_CREATE_VCPU: the id is also the in-kernel local APIC's ID (api.rst 4.7), so
        trapvisor passes the vCPU's APIC ID; id 0 is the bootstrap processor."""
        from .vcpu import KvmVcpu
        vcpu = KvmVcpu(self, vcpu_id)
        self.vcpus.append(vcpu)
        return vcpu

    # -- interrupts -------------------------------------------------------------
    def irq_line(self, irq: int, level: bool) -> None:
        """KVM_IRQ_LINE: drive an input of the in-kernel PIC and I/O APIC."""
        self._irq_level.irq = irq
        self._irq_level.level = 1 if level else 0
        ioctls.ioctl(self.fd, ioctls.KVM_IRQ_LINE, self._irq_level)

    # -- teardown ---------------------------------------------------------------
    def close(self) -> None:
        """Close vCPU fds, then the VM fd; guest RAM is unmapped last."""
        if self._closed:
            return
        self._closed = True
        for vcpu in self.vcpus:
            vcpu.close()
        os.close(self.fd)
        self.fd = -1


class KvmIrqSink:
    """Connects the project's IrqRouter to the in-kernel irqchip (an IrqSink)."""

    def __init__(self, vm: KvmVm):
        self.vm = vm
        self.levels = [False] * 24

    def set_irq(self, irq: int, level: bool) -> None:
        if self.levels[irq] == level:
            return
        self.levels[irq] = level
        self.vm.irq_line(irq, level)
