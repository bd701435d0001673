"""The PC's device wiring: the one place that says which device sits where.

``board.build_board`` calls :func:`build_devices` for the simulated PC, the
monitor's VMs and the KVM backend alike; the host ends of COM1 (terminal,
file, socket) are in ``host_serial.py``.  The layout is the IBM PC/AT's (ports) plus the APICs of an Intel MP 1.4 system:

=================  ===========  ======  ==============================
device             ports/MMIO   IRQ     module
=================  ===========  ======  ==============================
8259A pair         0x20-0x21,   -       devices/pic8259.py
                   0xA0-0xA1,
                   0x4D0-0x4D1
8254 PIT           0x40-0x43    0       devices/pit8254.py
i8042 keyboard     0x60, 0x64   1, 12   devices/ps2.py
port B (speaker)   0x61         -       devices/port61.py
MC146818 RTC       0x70-0x71    8       devices/cmos_rtc.py
POST code          0x80         -       devices/post_code.py
port A (A20/reset) 0x92         -       devices/port92.py
isa-debug-exit     0xF4-0xF7    -       devices/debug_exit.py
ATA primary        0x1F0-0x1F7, 14      devices/ata_pio.py
                   0x3F6
16550A COM1        0x3F8-0x3FF  4       devices/uart16550.py
I/O APIC           0xFEC00000   -       devices/ioapic.py
HPET               0xFED00000   0, 8,   devices/hpet.py
                                5,10,11
local APIC         0xFEE00000   -       devices/lapic.py
=================  ===========  ======  ==============================

Every ISA IRQ line goes through the :class:`IrqRouter` to both the 8259A pair
and the I/O APIC (the I/O APIC sends to the local APIC, whose EOIs come back
for level-triggered vectors); the CPU asks :class:`PcInterruptSource`.

With ``in_kernel_irqchip=True`` (KVM with KVM_CREATE_IRQCHIP and
KVM_CREATE_PIT2) the kernel provides the PICs, the PIT, port 0x61's speaker
bits and the APICs: those devices are neither built nor registered, their
fields are None, and the caller connects its own IrqSink (KVM_IRQ_LINE) to
the router.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from . import bios
from .devices.ata_pio import PRIMARY_BASE, PRIMARY_CTRL, PRIMARY_IRQ, AtaPio
from .devices.cmos_rtc import RTC_IRQ, CmosRtc
from .devices.debug_exit import DEBUG_EXIT_BASE, DEBUG_EXIT_SIZE, IsaDebugExit
from .devices.hpet import HPET_BASE, HPET_SIZE, Hpet
from .devices.intc import PcInterruptSource
from .devices.ioapic import IOAPIC_BASE, IOAPIC_SIZE, IoApic
from .devices.lapic import LAPIC_BASE, LAPIC_SIZE, LocalApic
from .devices.pic8259 import Pic8259Pair
from .devices.pit8254 import Pit8254
from .devices.port61 import PORT_B, SystemControlPortB
from .devices.port92 import PORT_A, SystemControlPortA
from .devices.post_code import POST_PORT, PostCodePort
from .devices.ps2 import AUX_IRQ, KEYBOARD_IRQ, I8042
from .devices.uart16550 import COM1_BASE, COM1_IRQ, Uart16550

PIT_IRQ = 0


@dataclass
class PcDevices:
    pic: Pic8259Pair | None
    pit: Pit8254 | None
    port61: SystemControlPortB | None
    lapic: LocalApic | None
    ioapic: IoApic | None
    interrupts: PcInterruptSource | None
    uart: Uart16550
    rtc: CmosRtc
    ata: AtaPio
    ps2: I8042
    port92: SystemControlPortA
    debug_exit: IsaDebugExit
    post: PostCodePort
    hpet: Hpet | None = None

    @property
    def intc(self) -> PcInterruptSource | None:
        """The CPU-facing interrupt source (alias of ``interrupts``)."""
        return self.interrupts

    def close(self) -> None:
        """Release host resources (the disk image, the serial poll timer)."""
        self.uart.close()
        self.ata.close()

    def __iter__(self):
        for f in fields(self):
            dev = getattr(self, f.name)
            if dev is not None:
                yield f.name, dev


def build_devices(memory, clock, io_bus, mmio_bus, irq_router, *, serial_out, serial_in=None,
                  disk: str | None = None, on_exit=None, on_reset=None, rtc_start=None,
                  in_kernel_irqchip: bool = False, bios_state: bool = True) -> PcDevices:
    """Build the PC's devices, register them on the buses and wire their IRQs.

    ``serial_out``: COM1's output, a callable taking bytes or a writer object.
    ``serial_in``: optional callable returning received bytes without blocking
    (polled every millisecond of guest time).  ``disk``: path of a raw image
    for the primary master, or None (the channel floats).  ``on_exit(code)``:
    called by isa-debug-exit; if None it raises ``GuestExit``.  ``on_reset()``:
    called on a keyboard-controller or port-0x92 reset pulse.  ``rtc_start``:
    a datetime for the RTC (default a fixed date, so runs are deterministic).
    ``bios_state``: program the PIC and PIT as a BIOS leaves them.
    """
    pic = pit = port61 = lapic = ioapic = intc = None
    if not in_kernel_irqchip:
        pic = Pic8259Pair()
        irq_router.connect(pic)
        lapic = LocalApic(clock, apic_id=bios.BSP_APIC_ID)
        ioapic = IoApic(lapic, ioapic_id=bios.IOAPIC_ID)
        lapic.ioapic_eoi = ioapic.eoi
        irq_router.connect(ioapic)
        intc = PcInterruptSource(pic, lapic)
        pit = Pit8254(clock, irq_router.line(PIT_IRQ))
        port61 = SystemControlPortB(pit, clock)

        io_bus.register(0x20, 2, pic)
        io_bus.register(0xA0, 2, pic)
        io_bus.register(0x4D0, 2, pic)
        io_bus.register(0x40, 4, pit)
        io_bus.register(PORT_B, 1, port61)
        mmio_bus.register(LAPIC_BASE, LAPIC_SIZE, lapic)
        mmio_bus.register(IOAPIC_BASE, IOAPIC_SIZE, ioapic)

    uart = Uart16550(irq_router.line(COM1_IRQ), serial_out, clock=clock, input_source=serial_in)
    rtc = CmosRtc(clock, irq_router.line(RTC_IRQ), start_time=rtc_start, memory_size=memory.size)
    ata = AtaPio(disk, irq_router.line(PRIMARY_IRQ))
    ps2 = I8042(irq_router.line(KEYBOARD_IRQ), irq_router.line(AUX_IRQ), on_reset=on_reset)
    port92 = SystemControlPortA(on_reset=on_reset)
    debug_exit = IsaDebugExit(on_exit)
    post = PostCodePort()
    hpet = Hpet(clock, irq_router.line)
    if disk is not None:
        rtc.ram[0x12] = 0xF0                 # hard disk 0: type 15 = "see extended type"
        rtc.ram[0x19] = 47                   # extended type 47: user-defined geometry
        rtc._update_checksum()

    io_bus.register(0x60, 1, ps2)
    io_bus.register(0x64, 1, ps2)
    io_bus.register(0x70, 2, rtc)
    io_bus.register(POST_PORT, 1, post)
    io_bus.register(PORT_A, 1, port92)
    io_bus.register(DEBUG_EXIT_BASE, DEBUG_EXIT_SIZE, debug_exit)
    io_bus.register(PRIMARY_BASE, 8, ata)
    io_bus.register(PRIMARY_CTRL, 1, ata)
    io_bus.register(COM1_BASE, 8, uart)
    mmio_bus.register(HPET_BASE, HPET_SIZE, hpet)

    devices = PcDevices(pic=pic, pit=pit, port61=port61, lapic=lapic, ioapic=ioapic,
                        interrupts=intc, uart=uart, rtc=rtc, ata=ata, ps2=ps2, port92=port92,
                        debug_exit=debug_exit, post=post, hpet=hpet)
    if bios_state:
        bios.program_devices(devices)
    return devices
