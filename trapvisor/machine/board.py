"""The PC's mainboard: RAM, buses, IRQ routing, devices and the BIOS-left tables, in one call.

The bare simulated PC (``machine/pc.py``), each virtual machine of the
monitor (``vmm/vm.py``) and the KVM backend (``kvm/runner.py``) are the same
PC around a different processor, so all three assemble it here with
:func:`build_board`: the caller brings the memory (a plain bytearray, a
partition of the monitor's host memory, an mmap KVM maps into the guest) and
the clock (guest time driven by instructions, or host time), and gets back
the buses with every device registered (``platform.build_devices``), the
IRQ router that wires them, the ACPI PM registers (``devices/acpi_pm.py``),
and the BIOS data area, EBDA, MP tables and ACPI tables written into memory
(``bios.install``), all describing the board's ``firmware`` (its CPUs by
APIC ID and its interrupt controllers: ``bios.Firmware``).

The devices know nothing of the processor: the caller builds its CPU over
``board.io_bus``, ``board.mmio_bus`` and ``board.devices.intc``, or, for
KVM, connects the in-kernel irqchip to ``board.irq``.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import bios
from .bus import IoBus, MmioBus
from .devices.acpi_pm import PM_SIZE, AcpiPm
from .devices.fw_cfg import FW_CFG_PORT_SEL, FW_CFG_PORTS, FwCfg
from .irq import IrqRouter
from .platform import PcDevices, build_devices


@dataclass
class Board:
    memory: object
    clock: object
    io_bus: IoBus
    mmio_bus: MmioBus
    irq: IrqRouter
    devices: PcDevices
    firmware: bios.Firmware = bios.Firmware()
    rsdp: int = 0                       # where the ACPI RSDP is (boot_params.acpi_rsdp_addr)
    acpi_pm: AcpiPm | None = None
    fw_cfg: FwCfg | None = None

    def close(self) -> None:
        """Release the devices' host resources (the disk image, the serial poll timer)."""
        self.devices.close()


def build_board(memory, clock, *, serial_out, serial_in=None, disk: str | None = None,
                on_exit=None, on_reset=None, in_kernel_irqchip: bool = False,
                rtc_start=None, firmware: bios.Firmware | None = None) -> Board:
    """Wire the PC's devices over ``memory`` and ``clock`` and leave the BIOS's tables in memory.

    The keyword arguments are :func:`~.platform.build_devices`'s.  The BIOS
    data area counts the hard disk when ``disk`` is given, as the CMOS
    does (``platform.build_devices``), so both places a kernel may look agree.
    ``firmware``: what the MP and ACPI tables describe (default: one CPU).
    """
    io_bus, mmio_bus, irq = IoBus(), MmioBus(), IrqRouter()
    devices = build_devices(memory, clock, io_bus, mmio_bus, irq, serial_out=serial_out,
                            serial_in=serial_in, disk=disk, on_exit=on_exit, on_reset=on_reset,
                            in_kernel_irqchip=in_kernel_irqchip, rtc_start=rtc_start)
    fw = firmware or bios.Firmware()
    pm = AcpiPm(fw.pm_base)
    io_bus.register(fw.pm_base, PM_SIZE, pm)
    # QEMU's fw_cfg: what firmware and test kernels ask the machine (its RAM, its CPUs)
    fw_cfg = FwCfg(ram_size=memory.size, cpus=len(fw.apic_ids))
    io_bus.register(FW_CFG_PORT_SEL, FW_CFG_PORTS, fw_cfg)
    rsdp = bios.install(memory, hard_disks=1 if disk else 0, firmware=fw)
    return Board(memory, clock, io_bus, mmio_bus, irq, devices, fw, rsdp, pm, fw_cfg)
