from hypothesis import given, settings, strategies as st

from trapvisor.machine.bus import MmioBus
from trapvisor.machine.devices.intc import PcInterruptSource
from trapvisor.machine.devices.ioapic import IOAPIC_BASE, IoApic
from trapvisor.machine.devices.lapic import LAPIC_BASE, LocalApic
from trapvisor.machine.devices.pic8259 import Pic8259Pair
from trapvisor.machine.irq import IrqRouter

from .timeline import Timeline

L = LAPIC_BASE


def make():
    tl = Timeline()
    lapic = LocalApic(tl.clock)
    ioapic = IoApic(lapic, ioapic_id=1)
    lapic.ioapic_eoi = ioapic.eoi
    pic = Pic8259Pair()
    router = IrqRouter()
    router.connect(pic)
    router.connect(ioapic)
    intc = PcInterruptSource(pic, lapic)
    bus = MmioBus()
    bus.register(L, 0x1000, lapic)
    bus.register(IOAPIC_BASE, 0x1000, ioapic)
    for cmd, data, base, icw3 in ((0x20, 0x21, 0x20, 4), (0xA0, 0xA1, 0x28, 2)):
        pic.io_write(cmd, 1, 0x11)
        pic.io_write(data, 1, base)
        pic.io_write(data, 1, icw3)
        pic.io_write(data, 1, 0x01)
        pic.io_write(data, 1, 0x00)
    return tl, bus, lapic, ioapic, pic, router, intc


def enable_apic(bus):
    bus.write(L + 0xF0, 4, 0x1FF)


def ioapic_write(bus, index, value):
    bus.write(IOAPIC_BASE, 4, index)
    bus.write(IOAPIC_BASE + 0x10, 4, value)


def ioapic_read(bus, index):
    bus.write(IOAPIC_BASE, 4, index)
    return bus.read(IOAPIC_BASE + 0x10, 4)


def test_lapic_reset_registers():
    tl, bus, lapic, *_ = make()
    assert bus.read(L + 0x20, 4) == 0
    assert bus.read(L + 0x30, 4) == 0x00050014
    assert bus.read(L + 0xF0, 4) == 0xFF
    assert bus.read(L + 0xE0, 4) == 0xFFFFFFFF
    assert bus.read(L + 0x350, 4) == 0x700         # LINT0 ExtINT (virtual wire)
    assert bus.read(L + 0x320, 4) == 0x10000
    assert not lapic.software_enabled


def test_fixed_interrupt_priority_tpr_and_eoi():
    tl, bus, lapic, *_ = make()
    enable_apic(bus)
    lapic.accept(0x41)
    lapic.accept(0x62)
    assert lapic.interrupt_pending()
    assert lapic.acknowledge() == 0x62
    assert bus.read(L + 0x100 + 0x30, 4) == 1 << 2   # ISR bit 0x62
    assert bus.read(L + 0xA0, 4) == 0x60             # PPR
    assert not lapic.interrupt_pending()             # 0x41 is a lower class
    bus.write(L + 0xB0, 4, 0)                        # EOI
    assert lapic.interrupt_pending()
    bus.write(L + 0x80, 4, 0x50)                     # TPR blocks class 4
    assert not lapic.interrupt_pending()
    assert lapic.acknowledge() == 0xFF               # spurious vector
    bus.write(L + 0x80, 4, 0x00)
    assert lapic.acknowledge() == 0x41


def test_software_disabled_apic_drops_and_masks():
    tl, bus, lapic, *_ = make()
    lapic.accept(0x40)
    assert lapic.irr == 0
    bus.write(L + 0x320, 4, 0x30)                    # cannot unmask while disabled
    assert bus.read(L + 0x320, 4) & 0x10000


def test_illegal_vector_sets_esr():
    tl, bus, lapic, *_ = make()
    enable_apic(bus)
    lapic.accept(5)
    bus.write(L + 0x280, 4, 0)                       # latch
    assert bus.read(L + 0x280, 4) == 0x40


def test_timer_one_shot_and_current_count():
    tl, bus, lapic, *_ = make()
    enable_apic(bus)
    bus.write(L + 0x3E0, 4, 0x0B)                    # divide by 1
    bus.write(L + 0x320, 4, 0x30)                    # one-shot, vector 0x30
    bus.write(L + 0x380, 4, 1000)                    # 1000 ticks at 1 GHz = 1 us
    tl.advance(400)
    assert bus.read(L + 0x390, 4) == 600
    assert not lapic.interrupt_pending()
    tl.advance(600)
    assert lapic.acknowledge() == 0x30
    assert bus.read(L + 0x390, 4) == 0
    tl.advance(10_000)
    assert lapic.timer_fired == 1


def test_timer_periodic_with_divider():
    tl, bus, lapic, *_ = make()
    enable_apic(bus)
    bus.write(L + 0x3E0, 4, 0x03)                    # divide by 16
    bus.write(L + 0x320, 4, 0x20031)                 # periodic, vector 0x31
    bus.write(L + 0x380, 4, 625)                     # 10 us
    tl.advance(35_000)
    assert lapic.timer_fired == 3
    assert bus.read(L + 0x390, 4) == 625 - (5_000 // 16)
    bus.write(L + 0x380, 4, 0)                       # stop
    tl.advance(100_000)
    assert lapic.timer_fired == 3


def test_self_ipi():
    tl, bus, lapic, *_ = make()
    enable_apic(bus)
    bus.write(L + 0x300, 4, (1 << 18) | 0x55)        # shorthand self, fixed
    assert lapic.acknowledge() == 0x55


def test_ioapic_identity_and_version():
    tl, bus, lapic, ioapic, *_ = make()
    assert ioapic_read(bus, 0) == 1 << 24
    assert ioapic_read(bus, 1) == 0x00170011
    assert ioapic_read(bus, 0x10) == 0x10000         # masked at reset
    ioapic_write(bus, 0, 0x0F000000)
    assert ioapic_read(bus, 0) == 0x0F000000


def test_ioapic_routes_isa_irq_to_lapic_with_irq0_on_pin2():
    tl, bus, lapic, ioapic, pic, router, intc = make()
    enable_apic(bus)
    ioapic_write(bus, 0x10 + 2 * 2, 0x30)            # pin 2 -> vector 0x30, unmasked, fixed
    ioapic_write(bus, 0x10 + 2 * 2 + 1, 0)           # destination APIC 0
    ioapic_write(bus, 0x10 + 2 * 4, 0x34)
    router.pulse(0)
    router.pulse(4)
    assert lapic.acknowledge() == 0x34
    assert lapic.acknowledge() == 0xFF               # 0x30 is in the class in service
    bus.write(L + 0xB0, 4, 0)
    assert lapic.acknowledge() == 0x30
    assert ioapic.delivered[2] == 1 and ioapic.delivered[4] == 1


def test_ioapic_masked_edge_is_discarded():
    tl, bus, lapic, ioapic, pic, router, intc = make()
    enable_apic(bus)
    ioapic_write(bus, 0x10 + 2 * 3, 0x10033)         # masked
    router.pulse(3)
    ioapic_write(bus, 0x10 + 2 * 3, 0x33)
    assert lapic.irr == 0


def test_ioapic_level_remote_irr_and_eoi_redelivery():
    tl, bus, lapic, ioapic, pic, router, intc = make()
    enable_apic(bus)
    ioapic_write(bus, 0x10 + 2 * 9, 0x8039)          # level-triggered, vector 0x39
    router.raise_irq(9)
    assert ioapic_read(bus, 0x10 + 2 * 9) & 0x4000   # remote IRR
    assert lapic.acknowledge() == 0x39
    assert bus.read(L + 0x190, 4) & (1 << (0x39 - 0x20))   # TMR
    bus.write(L + 0xB0, 4, 0)                        # EOI, line still high: again
    assert lapic.acknowledge() == 0x39
    router.lower_irq(9)
    bus.write(L + 0xB0, 4, 0)
    assert not ioapic_read(bus, 0x10 + 2 * 9) & 0x4000
    assert not lapic.interrupt_pending()


def test_ioapic_logical_destination():
    tl, bus, lapic, ioapic, pic, router, intc = make()
    enable_apic(bus)
    bus.write(L + 0xD0, 4, 0x01000000)               # LDR: logical ID bit 0
    ioapic_write(bus, 0x10 + 2 * 5, 0x800 | 0x45)    # logical
    ioapic_write(bus, 0x11 + 2 * 5, 0x02000000)      # not us
    router.pulse(5)
    assert lapic.irr == 0
    ioapic_write(bus, 0x11 + 2 * 5, 0x01000000)
    router.pulse(5)
    assert lapic.acknowledge() == 0x45


def test_intc_virtual_wire_and_apic_first():
    tl, bus, lapic, ioapic, pic, router, intc = make()
    pending = []
    intc.on_pending = lambda: pending.append(1)
    router.pulse(1)                                  # PIC only (I/O APIC pins masked)
    assert pending and intc.interrupt_pending()
    assert intc.acknowledge() == 0x21                # APIC disabled: straight from the PIC
    pic.io_write(0x20, 1, 0x20)
    enable_apic(bus)                                 # LINT0 still ExtINT: PIC passes
    router.pulse(1)
    assert intc.interrupt_pending()
    lapic.accept(0x80)
    assert intc.acknowledge() == 0x80                # APIC vectors first
    assert intc.acknowledge() == 0x21
    pic.io_write(0x20, 1, 0x20)
    bus.write(L + 0x350, 4, 0x10700)                 # mask LINT0
    router.pulse(1)
    assert not intc.interrupt_pending()
    assert intc.acknowledge() == 0xFF                # nothing deliverable: APIC spurious


def test_sub_dword_access():
    tl, bus, lapic, *_ = make()
    assert bus.read(L + 0x30, 1) == 0x14
    assert bus.read(L + 0x32, 1) == 0x05
    bus.write(L + 0x80, 1, 0xFF)                     # ignored, as QEMU
    assert bus.read(L + 0x80, 4) == 0


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 0xFFF), st.sampled_from([1, 2, 4]),
                          st.integers(0, 0xFFFFFFFF), st.integers(0, 23), st.integers(0, 50_000)),
                max_size=60))
def test_any_guest_input_is_safe(ops):
    tl, bus, lapic, ioapic, pic, router, intc = make()
    for to_ioapic, off, size, value, irq, dt in ops:
        base = IOAPIC_BASE if to_ioapic else L
        off &= ~(size - 1)
        bus.write(base + off, size, value & ((1 << (8 * size)) - 1))
        bus.read(base + off, size)
        router.pulse(irq)
        if intc.interrupt_pending():
            assert 0 <= intc.acknowledge() <= 255
        tl.advance(dt)
