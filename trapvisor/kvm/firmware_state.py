"""The in-kernel PIC, PIT and I/O APIC left in the state the simulated PC's firmware leaves them.

On the simulated PC, ``machine.bios.program_devices`` programs the 8259A
pair and the 8254 through their ports as a BIOS does before it boots an OS
(vectors 0x08/0x70, only IRQ 0, 1 and 2 unmasked; counter 0 in mode 3 at
18.2 Hz, counter 1 in mode 2), and the I/O APIC has the ID the MP table and
MADT give it.  KVM creates its chips in their reset state instead (IMR 0,
PIT channels unprogrammed, I/O APIC ID 0), so the same guest would meet a
different machine.  Here the project's own device models are programmed by
that same BIOS routine, their state is read off and written into KVM's chips
with KVM_SET_IRQCHIP and KVM_SET_PIT2 (KVM api.rst 4.27 and 4.73-4.74; the
fields are those of asm/kvm.h ``struct kvm_pic_state``, ``struct
kvm_ioapic_state`` and ``struct kvm_pit_channel_state``, whose meanings are
the 8259A and 8254 datasheets' as KVM's i8259.c and i8254.c implement them).
"""

from __future__ import annotations

from types import SimpleNamespace

from ..machine import bios
from ..machine.clock import VirtualClock
from ..machine.devices.ioapic import IoApic
from ..machine.devices.pic8259 import Pic8259, Pic8259Pair
from ..machine.devices.pit8254 import Pit8254
from . import ioctls


def firmware_models():
    """The simulated PC's PIC pair and PIT, programmed by the BIOS routine at time 0."""
    pic, pit = Pic8259Pair(), Pit8254(VirtualClock(counter=lambda: 0))
    bios.program_devices(SimpleNamespace(pic=pic, pit=pit))
    return pic, pit


def pic_state(chip: Pic8259) -> ioctls.kvm_pic_state:
    s = ioctls.kvm_pic_state()
    s.last_irr, s.irr, s.imr, s.isr = chip.edge_seen, chip.irr, chip.imr, chip.isr
    s.priority_add, s.irq_base = chip.priority_add, chip.vector_base
    s.read_reg_select, s.poll, s.special_mask = int(chip.read_isr), int(chip.poll), int(chip.special_mask)
    s.init_state, s.auto_eoi, s.rotate_on_auto_eoi = chip.init_step, int(chip.auto_eoi), int(chip.rotate_on_aeoi)
    s.special_fully_nested_mode, s.init4 = int(chip.special_fully_nested), int(chip.icw4_needed)
    s.elcr, s.elcr_mask = chip.elcr, chip.elcr_mask
    return s


def pit_state(pit: Pit8254) -> ioctls.kvm_pit_state2:
    st = ioctls.kvm_pit_state2()
    for i, c in enumerate(pit.counters):
        ch = st.channels[i]
        ch.count = c.count
        ch.read_state, ch.write_state, ch.write_latch = c.read_state, c.write_state, c.write_latch
        ch.rw_mode, ch.mode, ch.bcd, ch.gate = c.rw_mode, c.mode, int(c.bcd), int(c.gate)
    return st


def ioapic_state(current: ioctls.kvm_ioapic_state, fw: bios.Firmware) -> ioctls.kvm_ioapic_state:
    """KVM's I/O APIC with the firmware's ID and base and the model's (reset) redirection table."""
    model = IoApic(None, ioapic_id=fw.ioapic_id)
    s = ioctls.kvm_ioapic_state.from_buffer_copy(current)
    s.id, s.base_address = model.id, fw.ioapic_base
    for pin, entry in enumerate(model.redir[:ioctls.KVM_IOAPIC_NUM_PINS]):
        s.redirtbl[pin] = entry
    return s


def apply(vm, fw: bios.Firmware) -> None:
    """Write the firmware state into the VM's in-kernel irqchip and PIT."""
    pic, pit = firmware_models()
    for chip_id, chip in ((ioctls.KVM_IRQCHIP_PIC_MASTER, pic.master), (ioctls.KVM_IRQCHIP_PIC_SLAVE, pic.slave)):
        state = vm.get_irqchip(chip_id)
        state.chip.pic = pic_state(chip)
        vm.set_irqchip(state)
    state = vm.get_irqchip(ioctls.KVM_IRQCHIP_IOAPIC)
    state.chip.ioapic = ioapic_state(state.chip.ioapic, fw)
    vm.set_irqchip(state)
    vm.set_pit2(pit_state(pit))
