from hypothesis import given, settings, strategies as st

from trapvisor.machine.bus import IoBus
from trapvisor.machine.devices.pic8259 import Pic8259Pair
from trapvisor.machine.irq import IrqRouter


def make(master_base=0x20, slave_base=0x28, master_imr=0x00, slave_imr=0x00):
    pic = Pic8259Pair()
    bus = IoBus()
    bus.register(0x20, 2, pic)
    bus.register(0xA0, 2, pic)
    bus.register(0x4D0, 2, pic)
    router = IrqRouter()
    router.connect(pic)
    for cmd, data, base, icw3, imr in ((0x20, 0x21, master_base, 4, master_imr),
                                       (0xA0, 0xA1, slave_base, 2, slave_imr)):
        bus.write(cmd, 1, 0x11)
        bus.write(data, 1, base)
        bus.write(data, 1, icw3)
        bus.write(data, 1, 0x01)
        bus.write(data, 1, imr)
    return pic, bus, router


def eoi(bus, slave=False):
    if slave:
        bus.write(0xA0, 1, 0x20)
    bus.write(0x20, 1, 0x20)


def test_edge_irq_delivers_vector_and_goes_in_service():
    pic, bus, router = make()
    assert not pic.interrupt_pending()
    router.pulse(0)
    assert pic.interrupt_pending()
    assert pic.acknowledge() == 0x20
    assert not pic.interrupt_pending()
    bus.write(0x20, 1, 0x0B)                 # OCW3: read ISR
    assert bus.read(0x20, 1) == 0x01
    bus.write(0x20, 1, 0x0A)                 # OCW3: read IRR
    assert bus.read(0x20, 1) == 0x00
    eoi(bus)
    bus.write(0x20, 1, 0x0B)
    assert bus.read(0x20, 1) == 0x00


def test_priority_and_nesting():
    pic, bus, router = make()
    router.pulse(3)
    router.pulse(1)
    assert pic.acknowledge() == 0x21         # IRQ1 before IRQ3
    # IRQ3 is lower priority than IRQ1 in service: blocked
    assert not pic.interrupt_pending()
    router.pulse(0)                          # higher priority nests
    assert pic.acknowledge() == 0x20
    eoi(bus)                                 # non-specific EOI ends IRQ0 (highest in service)
    assert not pic.interrupt_pending()       # IRQ1 still in service
    eoi(bus)
    assert pic.acknowledge() == 0x23


def test_mask_and_unmask():
    pic, bus, router = make(master_imr=0xFF)
    router.pulse(5)
    assert not pic.interrupt_pending()
    assert bus.read(0x21, 1) == 0xFF
    bus.write(0x21, 1, 0xDF)
    assert pic.interrupt_pending()
    assert pic.acknowledge() == 0x25


def test_cascade_through_irq2():
    pic, bus, router = make(master_base=0x08, slave_base=0x70)
    router.pulse(14)
    assert pic.interrupt_pending()
    assert pic.acknowledge() == 0x76
    bus.write(0xA0, 1, 0x0B)
    assert bus.read(0xA0, 1) == 0x40
    bus.write(0x20, 1, 0x0B)
    assert bus.read(0x20, 1) == 0x04
    router.pulse(15)                         # lower priority than 14 in service on the slave
    assert not pic.interrupt_pending()
    eoi(bus, slave=True)
    assert pic.acknowledge() == 0x77


def test_specific_eoi():
    pic, bus, router = make()
    router.pulse(6)
    router.pulse(4)
    assert pic.acknowledge() == 0x24
    bus.write(0x20, 1, 0x64)                 # specific EOI for IR4
    assert pic.acknowledge() == 0x26
    bus.write(0x20, 1, 0x66)
    bus.write(0x20, 1, 0x0B)
    assert bus.read(0x20, 1) == 0


def test_spurious_irq7_and_irq15():
    pic, bus, router = make()
    assert pic.acknowledge() == 0x27         # nothing pending: IR7, ISR untouched
    bus.write(0x20, 1, 0x0B)
    assert bus.read(0x20, 1) == 0
    # Slave request that goes away after the cascade input latched: spurious IRQ 15.
    bus.write(0x4D1, 1, 0x04)                # IRQ 10 level-triggered
    router.raise_irq(10)
    router.lower_irq(10)
    assert pic.interrupt_pending()           # master IR2 edge stays latched
    assert pic.acknowledge() == 0x2F
    bus.write(0xA0, 1, 0x0B)
    assert bus.read(0xA0, 1) == 0
    assert pic.spurious == 2


def test_level_triggered_via_elcr_stays_pending_after_eoi():
    pic, bus, router = make()
    bus.write(0x4D0, 1, 0xFF)
    assert bus.read(0x4D0, 1) == 0xF8        # IRQ 0-2 cannot be level-triggered
    router.raise_irq(5)
    assert pic.acknowledge() == 0x25
    eoi(bus)
    assert pic.interrupt_pending()           # line still high
    router.lower_irq(5)
    assert not pic.interrupt_pending()


def test_edge_needs_new_rising_edge():
    pic, bus, router = make()
    router.raise_irq(3)
    assert pic.acknowledge() == 0x23
    eoi(bus)
    router.raise_irq(3)                      # still high: no new edge
    assert not pic.interrupt_pending()
    router.lower_irq(3)
    router.raise_irq(3)
    assert pic.interrupt_pending()


def test_auto_eoi():
    pic = Pic8259Pair()
    router = IrqRouter()
    router.connect(pic)
    pic.io_write(0x20, 1, 0x13)              # single, ICW4
    pic.io_write(0x21, 1, 0x40)
    pic.io_write(0x21, 1, 0x03)              # AEOI
    router.pulse(2)
    router.pulse(1)
    assert pic.acknowledge() == 0x41
    assert pic.master.isr == 0
    assert pic.acknowledge() == 0x42         # single mode: IR2 is an ordinary input


def test_poll_command():
    pic, bus, router = make()
    router.pulse(4)
    bus.write(0x20, 1, 0x0C)                 # OCW3 poll
    assert bus.read(0x20, 1) == 0x84
    assert pic.master.isr == 0x10
    bus.write(0x20, 1, 0x0C)
    assert bus.read(0x20, 1) == 0x00


def test_rotate_on_nonspecific_eoi():
    pic, bus, router = make()
    router.pulse(0)
    assert pic.acknowledge() == 0x20
    bus.write(0x20, 1, 0xA0)                 # rotate on non-specific EOI: IR0 now lowest
    router.pulse(0)
    router.pulse(7)
    assert pic.acknowledge() == 0x27


def test_on_output_callback():
    pic, bus, router = make(master_imr=0xFF)
    calls = []
    pic.on_output = lambda: calls.append(1)
    router.pulse(1)
    assert calls == []
    bus.write(0x21, 1, 0x00)
    assert calls


def test_word_access_splits_into_bytes():
    pic, bus, router = make()
    bus.write(0x20, 2, 0xFF0B)               # OCW3 read ISR to 0x20, IMR 0xFF to 0x21
    assert bus.read(0x21, 1) == 0xFF


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0x20, 0x21, 0xA0, 0xA1, 0x4D0, 0x4D1, 0x22]),
                          st.integers(0, 255), st.booleans(), st.integers(0, 15)), max_size=60))
def test_any_guest_input_is_safe(ops):
    pic = Pic8259Pair()
    router = IrqRouter()
    router.connect(pic)
    for port, value, read, irq in ops:
        if read:
            pic.io_read(port, 1)
        else:
            pic.io_write(port, 1, value)
        router.pulse(irq)
        if pic.interrupt_pending():
            assert 0 <= pic.acknowledge() <= 255
