"""Interrupt lines between devices and interrupt controllers.

A device raises and lowers an ISA IRQ line (0-15) through an
:class:`IrqRouter`; the router forwards the level to every controller wired
to it: on the simulated PC the 8259A pair and the I/O APIC, under KVM with an
in-kernel irqchip a KVM_IRQ_LINE ioctl.  Devices never see who listens.

The CPU side is :class:`InterruptSource`: the PC's combination of PIC and
local APIC that answers "is a maskable interrupt pending?" and, on INTA,
"which vector?".
"""

from __future__ import annotations

from typing import Protocol


class IrqSink(Protocol):
    def set_irq(self, irq: int, level: bool) -> None: ...


class IrqRouter:
    def __init__(self) -> None:
        self.sinks: list[IrqSink] = []
        self.levels = [False] * 24

    def connect(self, sink: IrqSink) -> None:
        self.sinks.append(sink)

    def set_level(self, irq: int, level: bool) -> None:
        self.levels[irq] = level
        for s in self.sinks:
            s.set_irq(irq, level)

    def raise_irq(self, irq: int) -> None:
        self.set_level(irq, True)

    def lower_irq(self, irq: int) -> None:
        self.set_level(irq, False)

    def pulse(self, irq: int) -> None:
        """An edge: raise then lower (ISA devices are edge-triggered on the 8259)."""
        self.set_level(irq, True)
        self.set_level(irq, False)

    def line(self, irq: int) -> "IrqLine":
        return IrqLine(self, irq)


class IrqLine:
    """One IRQ line handed to one device."""

    __slots__ = ("router", "irq")

    def __init__(self, router: IrqRouter, irq: int):
        self.router, self.irq = router, irq

    def raise_(self) -> None:
        self.router.set_level(self.irq, True)

    def lower(self) -> None:
        self.router.set_level(self.irq, False)

    def pulse(self) -> None:
        self.router.pulse(self.irq)


class InterruptSource(Protocol):
    """What the CPU asks between instructions when EFLAGS.IF = 1."""

    def interrupt_pending(self) -> bool: ...

    def acknowledge(self) -> int:
        """INTA cycle: return the vector and mark it in service."""
        ...
