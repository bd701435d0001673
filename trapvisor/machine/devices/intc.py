"""What the CPU's INTR pin sees on this PC: the local APIC in front of the 8259A pair.

This implements :class:`~trapvisor.machine.irq.InterruptSource`.  The rules
come from the Intel SDM Vol. 3A chapter 10 (10.1: the local APIC receives
external interrupts through its LINT0 pin) and the Intel MultiProcessor
Specification 1.4, section 3.6.2.2 ("Virtual Wire Mode"): the 8259A's INTR
output is wired to LINT0, which the BIOS programs as ExtINT; the CPU then
fetches the vector from the 8259A with an ordinary INTA cycle.

* APIC software-disabled (SVR bit 8 clear, the reset state) or globally
  disabled: the APIC delivers nothing and INTR comes straight from the 8259A.
* APIC enabled: its own deliverable vectors come first (I/O APIC, timer,
  IPIs); then the 8259A's request, if LINT0 is an unmasked ExtINT input.

``on_pending`` may be set by the CPU (or a monitor) to a callable with no
arguments.  It is called whenever a change on either controller may have made
an interrupt pending (never when none can be), from whatever is running the
device: the CPU's own thread (an OUT to a device, a Clock timer in
``run_due``).  The CPU uses it to leave HLT and to re-check between blocks;
it must not deliver the interrupt from inside the callback.
"""

from __future__ import annotations


class PcInterruptSource:
    def __init__(self, pic, lapic=None):
        self.pic = pic
        self.lapic = lapic
        self.on_pending = None
        pic.on_output = self._changed
        if lapic is not None:
            lapic.on_change = self._changed

    def _changed(self) -> None:
        cb = self.on_pending
        if cb is not None:
            cb()

    def _pic_passes(self) -> bool:
        lapic = self.lapic
        return lapic is None or not lapic.software_enabled or lapic.extint_enabled()

    def interrupt_pending(self) -> bool:
        lapic = self.lapic
        if lapic is not None and lapic.software_enabled and lapic.interrupt_pending():
            return True
        return self.pic.output and self._pic_passes()

    def nmi_pending(self) -> bool:
        """An NMI is latched (delivered through the local APIC: an ICR or I/O APIC message)."""
        lapic = self.lapic
        return lapic is not None and lapic.nmi_pending

    def acknowledge_nmi(self) -> None:
        """The CPU takes the latched NMI (it goes through IDT vector 2, SDM Vol. 3A §6.7)."""
        self.lapic.nmi_pending = False

    def acknowledge(self) -> int:
        """INTA: the vector to deliver (the caller delivers it through the IDT)."""
        lapic = self.lapic
        if lapic is not None and lapic.software_enabled and lapic.interrupt_pending():
            return lapic.acknowledge()
        if self.pic.output and self._pic_passes():
            return self.pic.acknowledge()
        if lapic is not None and lapic.software_enabled:
            return lapic.svr & 0xFF            # the request went away: APIC spurious vector
        return self.pic.acknowledge()          # 8259A answers IR7: spurious IRQ 7
