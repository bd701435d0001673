import io

from hypothesis import given, settings, strategies as st

from trapvisor.machine.bus import IoBus
from trapvisor.machine.devices.uart16550 import Uart16550
from trapvisor.machine.irq import IrqRouter

from .timeline import IrqRecorder, Timeline

COM1 = 0x3F8


def make(**kw):
    out = bytearray()
    router = IrqRouter()
    rec = IrqRecorder()
    router.connect(rec)
    uart = Uart16550(router.line(4), out.extend, **kw)
    bus = IoBus()
    bus.register(COM1, 8, uart)
    return uart, bus, out, rec


def test_thr_bytes_reach_the_backend():
    uart, bus, out, rec = make()
    for b in b"hello\n":
        assert bus.read(COM1 + 5, 1) & 0x60 == 0x60    # THRE and TEMT
        bus.write(COM1, 1, b)
    assert bytes(out) == b"hello\n"
    assert uart.transmitted == 6


def test_writer_object_backend_is_flushed():
    buf = io.BytesIO()
    uart = Uart16550(None, buf)
    uart.io_write(COM1, 1, ord("x"))
    assert buf.getvalue() == b"x"


def test_divisor_latch_and_lcr():
    uart, bus, out, rec = make()
    bus.write(COM1 + 3, 1, 0x80)                        # DLAB
    bus.write(COM1 + 0, 1, 0x01)
    bus.write(COM1 + 1, 1, 0x00)                        # 115200 baud
    assert bus.read(COM1, 1) == 0x01 and bus.read(COM1 + 1, 1) == 0x00
    bus.write(COM1 + 3, 1, 0x03)                        # 8N1, DLAB off
    assert uart.divisor == 1
    assert bus.read(COM1 + 3, 1) == 0x03
    bus.write(COM1, 1, ord("A"))                        # THR again, not DLL
    assert bytes(out) == b"A"


def test_rx_interrupt_and_data():
    uart, bus, out, rec = make()
    bus.write(COM1 + 1, 1, 0x01)                        # ERBFI
    assert bus.read(COM1 + 2, 1) == 0x01                # nothing pending
    uart.feed(b"ab")
    assert rec.level[4]
    assert bus.read(COM1 + 2, 1) == 0x04                # received data available
    assert bus.read(COM1 + 5, 1) & 0x01
    assert bus.read(COM1, 1) == ord("a")
    assert rec.level[4]                                 # 'b' moved into RBR
    assert bus.read(COM1, 1) == ord("b")
    assert not rec.level[4]
    assert bus.read(COM1 + 5, 1) & 0x01 == 0
    assert rec.rising(4) == [0]


def test_fifo_trigger_level_and_timeout():
    uart, bus, out, rec = make()
    bus.write(COM1 + 2, 1, 0x47)                        # FIFO on, clear, trigger 4
    bus.write(COM1 + 1, 1, 0x01)
    uart.feed(b"xy")
    assert bus.read(COM1 + 2, 1) == 0xCC                # FIFOs enabled, character timeout
    uart.feed(b"zw")
    assert bus.read(COM1 + 2, 1) == 0xC4                # trigger level reached
    assert bytes(bus.read(COM1, 1) for _ in range(4)) == b"xyzw"
    assert bus.read(COM1 + 2, 1) == 0xC1


def test_host_queue_never_overruns():
    uart, bus, out, rec = make()
    data = bytes(range(100))
    uart.feed(data)
    got = bytearray()
    while bus.read(COM1 + 5, 1) & 1:
        got.append(bus.read(COM1, 1))
    assert bytes(got) == data


def test_thre_interrupt_cleared_by_iir_read_and_rearmed_by_write():
    uart, bus, out, rec = make()
    bus.write(COM1 + 1, 1, 0x02)                        # ETBEI with THR empty: interrupt
    assert rec.level[4]
    assert bus.read(COM1 + 2, 1) == 0x02
    assert not rec.level[4]
    assert bus.read(COM1 + 2, 1) == 0x01
    bus.write(COM1, 1, ord("q"))
    assert rec.level[4]
    assert len(rec.rising(4)) == 2


def test_rx_has_priority_over_thre():
    uart, bus, out, rec = make()
    bus.write(COM1 + 1, 1, 0x03)
    uart.feed(b"k")
    assert bus.read(COM1 + 2, 1) == 0x04
    bus.read(COM1, 1)
    assert bus.read(COM1 + 2, 1) == 0x02


def test_loopback():
    uart, bus, out, rec = make()
    bus.write(COM1 + 4, 1, 0x1B)                        # LOOP | OUT2 | RTS | DTR
    bus.write(COM1, 1, 0x5A)
    assert bytes(out) == b""
    assert bus.read(COM1, 1) == 0x5A
    assert bus.read(COM1 + 6, 1) & 0xF0 == 0xB0         # DCD, DSR, CTS from OUT2, DTR, RTS


def test_scratch_register():
    uart, bus, out, rec = make()
    bus.write(COM1 + 7, 1, 0xA5)
    assert bus.read(COM1 + 7, 1) == 0xA5


def test_out2_gating_option():
    uart, bus, out, rec = make(out2_gates_irq=True)
    bus.write(COM1 + 4, 1, 0x00)
    bus.write(COM1 + 1, 1, 0x01)
    uart.feed(b"1")
    assert not rec.level[4]
    bus.write(COM1 + 4, 1, 0x08)
    assert rec.level[4]


def test_input_source_is_polled_by_a_clock_timer():
    tl = Timeline()
    chunks = [b"", b"hi", b""]
    src = lambda: chunks.pop(0) if chunks else b""
    uart = Uart16550(None, None, clock=tl.clock, input_source=src, poll_ns=1000)
    tl.advance(3500)
    assert bytes([uart.io_read(COM1, 1), uart.io_read(COM1, 1)]) == b"hi"
    uart.close()
    assert tl.clock.next_deadline() == tl.clock.NEVER


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 8), st.integers(0, 255), st.booleans(), st.binary(max_size=3)),
                max_size=60))
def test_any_guest_input_is_safe(ops):
    uart, bus, out, rec = make()
    for off, value, read, feed in ops:
        if read:
            assert 0 <= bus.read(COM1 + off, 1) <= 255
        else:
            bus.write(COM1 + off, 1, value)
        uart.feed(feed)
    bus.read(COM1, 4)
    bus.write(COM1, 2, 0xFFFF)


def test_broken_backend_does_not_reach_the_guest():
    def broken(data):
        raise BrokenPipeError
    uart = Uart16550(None, broken)
    uart.io_write(COM1, 1, 0x41)
    assert uart.dropped == 1
