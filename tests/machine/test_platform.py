import pytest

from trapvisor.errors import UserError
from trapvisor.machine.bus import IoBus, MmioBus
from trapvisor.machine.devices.debug_exit import GuestExit
from trapvisor.machine.irq import IrqRouter
from trapvisor.machine.memory import PhysicalMemory
from trapvisor.machine.platform import build_devices

from .devices.timeline import Timeline


def make(**kw):
    tl = Timeline()
    mem = PhysicalMemory(4 << 20)
    io, mmio, router = IoBus(), MmioBus(), IrqRouter()
    out = bytearray()
    kw.setdefault("serial_out", out.extend)
    devs = build_devices(mem, tl.clock, io, mmio, router, **kw)
    return tl, io, mmio, router, devs, out


def test_ports_and_mmio_are_claimed():
    tl, io, mmio, router, devs, out = make()
    for port in (0x20, 0x21, 0xA0, 0xA1, 0x4D0, 0x40, 0x43, 0x60, 0x61, 0x64, 0x70, 0x71, 0x80,
                 0x92, 0xF4, 0xF7, 0x1F0, 0x1F7, 0x3F6, 0x3F8, 0x3FF):
        assert io.device_at(port) is not None, hex(port)
    assert mmio.find(0xFEE00020).device is devs.lapic
    assert mmio.find(0xFEC00010).device is devs.ioapic
    assert devs.intc is devs.interrupts
    assert dict(devs)["uart"] is devs.uart


def test_bios_state_pic_vectors_and_pit_tick_reach_the_cpu():
    tl, io, mmio, router, devs, out = make()
    assert devs.pic.vector_bases == (0x08, 0x70)
    pending = []
    devs.interrupts.on_pending = lambda: pending.append(tl.ns)
    tl.advance(60_000_000)                       # one 18.2 Hz tick
    assert pending
    assert devs.interrupts.interrupt_pending()
    assert devs.interrupts.acknowledge() == 0x08


def test_guest_reprograms_pic_and_pit_through_ports():
    tl, io, mmio, router, devs, out = make()
    for cmd, data, base, icw3 in ((0x20, 0x21, 0x20, 4), (0xA0, 0xA1, 0x28, 2)):
        io.write(cmd, 1, 0x11)
        io.write(data, 1, base)
        io.write(data, 1, icw3)
        io.write(data, 1, 0x01)
    io.write(0x21, 1, 0xFE)                      # only IRQ0
    io.write(0xA1, 1, 0xFF)
    io.write(0x43, 1, 0x34)                      # counter 0, mode 2
    io.write(0x40, 1, 1193 & 0xFF)
    io.write(0x40, 1, 1193 >> 8)
    ticks = 0
    for _ in range(5):
        tl.advance(1_000_000)
        if devs.interrupts.interrupt_pending():
            assert devs.interrupts.acknowledge() == 0x20
            io.write(0x20, 1, 0x20)
            ticks += 1
    assert ticks == 5


def test_rtc_irq8_through_the_cascade():
    tl, io, mmio, router, devs, out = make()
    io.write(0xA1, 1, 0xFE)                      # unmask IRQ 8
    io.write(0x70, 1, 0x0B)
    io.write(0x71, 1, 0x42)                      # PIE
    tl.advance(1_000_000)
    assert devs.interrupts.acknowledge() == 0x70


def test_ioapic_path_with_apic_enabled():
    tl, io, mmio, router, devs, out = make()
    io.write(0x21, 1, 0xFF)                      # PIC fully masked
    mmio.write(0xFEE000F0, 4, 0x1FF)             # APIC on
    mmio.write(0xFEC00000, 4, 0x10 + 2 * 4)
    mmio.write(0xFEC00010, 4, 0x44)              # COM1 -> vector 0x44
    io.write(0x3F9, 1, 0x01)                     # UART RX interrupt
    devs.uart.feed(b"x")
    assert devs.interrupts.acknowledge() == 0x44


def test_serial_and_debug_exit_through_the_bus():
    tl, io, mmio, router, devs, out = make()
    for b in b"ok":
        io.write(0x3F8, 1, b)
    assert bytes(out) == b"ok"
    with pytest.raises(GuestExit) as e:
        io.write(0xF4, 4, 3)
    assert e.value.code == 7


def test_callbacks_for_exit_and_reset():
    codes, resets = [], []
    tl, io, mmio, router, devs, out = make(on_exit=codes.append, on_reset=lambda: resets.append(1))
    io.write(0xF4, 1, 0)
    io.write(0x64, 1, 0xFE)
    io.write(0x92, 1, 0x01)
    assert codes == [1] and resets == [1, 1]


def test_disk_and_no_disk(tmp_path):
    tl, io, *_ = make()
    assert io.read(0x1F7, 1) == 0xFF
    img = tmp_path / "d.img"
    img.write_bytes(bytes(1024))
    tl, io, mmio, router, devs, out = make(disk=str(img))
    assert io.read(0x1F7, 1) == 0x50
    devs.close()
    with pytest.raises(UserError):
        make(disk=str(tmp_path / "nope.img"))


def test_in_kernel_irqchip_leaves_out_the_controllers():
    tl, io, mmio, router, devs, out = make(in_kernel_irqchip=True)
    assert devs.pic is None and devs.pit is None and devs.lapic is None and devs.interrupts is None
    assert io.device_at(0x20) is None and io.device_at(0x40) is None and io.device_at(0x61) is None
    assert mmio.find(0xFEE00000) is None
    assert io.device_at(0x3F8) is devs.uart
    assert router.sinks == []


def test_serial_input_source():
    chunks = [b"in"]
    tl, io, mmio, router, devs, out = make(serial_in=lambda: chunks.pop() if chunks else b"")
    tl.advance(2_000_000)
    assert io.read(0x3F8, 1) == ord("i")
