import pytest
from hypothesis import given, settings, strategies as st

from trapvisor.machine.bus import IoBus
from trapvisor.machine.devices.debug_exit import GuestExit, IsaDebugExit
from trapvisor.machine.devices.port92 import SystemControlPortA
from trapvisor.machine.devices.post_code import PostCodePort
from trapvisor.machine.devices.ps2 import I8042
from trapvisor.machine.irq import IrqRouter

from .timeline import IrqRecorder


def make_kbc():
    resets = []
    router = IrqRouter()
    rec = IrqRecorder()
    router.connect(rec)
    kbc = I8042(router.line(1), router.line(12), on_reset=lambda: resets.append(1))
    bus = IoBus()
    bus.register(0x60, 1, kbc)
    bus.register(0x64, 1, kbc)
    return kbc, bus, rec, resets


def test_status_has_no_data_and_is_not_busy():
    kbc, bus, rec, resets = make_kbc()
    st_ = bus.read(0x64, 1)
    assert st_ & 0x03 == 0                # output empty, input not full: probes do not hang
    assert st_ & 0x04                     # system flag


def test_self_test_and_command_byte():
    kbc, bus, rec, resets = make_kbc()
    bus.write(0x64, 1, 0xAA)
    assert bus.read(0x64, 1) & 0x01
    assert bus.read(0x60, 1) == 0x55
    bus.write(0x64, 1, 0x60)
    bus.write(0x60, 1, 0x47)
    bus.write(0x64, 1, 0x20)
    assert bus.read(0x60, 1) == 0x47
    bus.write(0x64, 1, 0xAB)
    assert bus.read(0x60, 1) == 0x00


def test_reset_pulse_calls_back():
    kbc, bus, rec, resets = make_kbc()
    bus.write(0x64, 1, 0xFE)
    assert resets == [1]
    bus.write(0x64, 1, 0xD1)              # write output port with the reset line low
    bus.write(0x60, 1, 0x00)
    assert resets == [1, 1]
    assert not kbc.a20


def test_keyboard_commands_and_irq1():
    kbc, bus, rec, resets = make_kbc()
    bus.write(0x60, 1, 0xFF)              # keyboard reset
    assert rec.level[1]
    assert bus.read(0x60, 1) == 0xFA
    assert bus.read(0x60, 1) == 0xAA
    assert not rec.level[1]
    bus.write(0x60, 1, 0xF2)
    assert [bus.read(0x60, 1) for _ in range(3)] == [0xFA, 0xAB, 0x83]
    bus.write(0x60, 1, 0xED)
    bus.write(0x60, 1, 0x07)
    assert [bus.read(0x60, 1) for _ in range(2)] == [0xFA, 0xFA]
    kbc.key_input(b"\x1e\x9e")
    assert bus.read(0x60, 1) == 0x1E
    assert bus.read(0x60, 1) == 0x9E
    assert bus.read(0x60, 1) == 0x9E      # empty: last byte again


def test_no_mouse_answers_resend():
    kbc, bus, rec, resets = make_kbc()
    bus.write(0x64, 1, 0xD4)
    bus.write(0x60, 1, 0xF2)
    assert bus.read(0x64, 1) & 0x21 == 0x21
    assert bus.read(0x60, 1) == 0xFE


def test_debug_exit_raises_guest_exit_with_qemu_code():
    bus = IoBus()
    bus.register(0xF4, 4, IsaDebugExit())
    with pytest.raises(GuestExit) as e:
        bus.write(0xF4, 1, 0x10)
    assert e.value.code == 0x21
    assert bus.read(0xF4, 4) == 0


def test_debug_exit_callback_instead_of_exception():
    codes = []
    dev = IsaDebugExit(codes.append)
    dev.io_write(0xF4, 4, 0)
    assert codes == [1] and dev.exit_code == 1


def test_post_port_reads_ff_like_qemu():
    post = PostCodePort()
    post.io_write(0x80, 1, 0x42)
    assert post.io_read(0x80, 1) == 0xFF
    assert post.last_code == 0x42 and post.writes == 1


def test_port92_fast_reset_and_a20():
    resets = []
    p = SystemControlPortA(on_reset=lambda: resets.append(1))
    assert p.io_read(0x92, 1) == 0x02
    p.io_write(0x92, 1, 0x00)
    assert not p.a20
    p.io_write(0x92, 1, 0x03)
    assert resets == [1] and p.a20


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0x60, 0x64]), st.integers(0, 255), st.booleans()), max_size=80))
def test_kbc_any_guest_input_is_safe(ops):
    kbc, bus, rec, resets = make_kbc()
    for port, value, read in ops:
        if read:
            assert 0 <= bus.read(port, 1) <= 255
        else:
            bus.write(port, 1, value)
