"""The one exit handler, driven by synthetic exits against the shared buses and devices."""
import struct

from trapvisor.kvm import ioctls
from trapvisor.kvm.exits import (CONTINUE, STOP, WAIT, FailEntryExit, HltExit, InternalErrorExit, IntrExit,
                                 IoExit, MmioExit, ShutdownExit, SystemEventExit, decode_exit, handle_exit)
from trapvisor.machine.bus import IoBus, MmioBus
from trapvisor.machine.devices.debug_exit import IsaDebugExit
from trapvisor.machine.devices.uart16550 import Uart16550


class Recorder:
    def __init__(self):
        self.writes, self.reads = [], []

    def io_read(self, port, size):
        self.reads.append((port, size))
        return 0x12345678

    def io_write(self, port, size, value):
        self.writes.append((port, size, value))

    def mmio_read(self, off, size):
        self.reads.append((off, size))
        return 0xAABBCCDD

    def mmio_write(self, off, size, value):
        self.writes.append((off, size, value))


def buses(dev):
    io, mmio = IoBus(), MmioBus()
    io.register(0x500, 4, dev)
    mmio.register(0xFEE00000, 0x1000, dev)
    return io, mmio


def test_out_goes_to_the_device():
    dev = Recorder()
    io, mmio = buses(dev)
    out = handle_exit(IoExit(0x501, 2, True, 1, b"\x34\x12"), io, mmio)
    assert out.action == CONTINUE and out.reply is None
    assert dev.writes == [(0x501, 2, 0x1234)]


def test_rep_outs_writes_each_element():
    dev = Recorder()
    io, mmio = buses(dev)
    handle_exit(IoExit(0x500, 1, True, 3, b"abc"), io, mmio)
    assert [v for _, _, v in dev.writes] == [ord("a"), ord("b"), ord("c")]


def test_in_replies_with_the_device_value():
    dev = Recorder()
    io, mmio = buses(dev)
    out = handle_exit(IoExit(0x502, 4, False, 2), io, mmio)
    assert out.reply == struct.pack("<II", 0x12345678, 0x12345678)


def test_unclaimed_port_reads_all_ones():
    io, mmio = IoBus(), MmioBus()
    assert handle_exit(IoExit(0x1234, 1, False), io, mmio).reply == b"\xff"


def test_mmio_read_and_write():
    dev = Recorder()
    io, mmio = buses(dev)
    assert handle_exit(MmioExit(0xFEE00030, 4, False), io, mmio).reply == struct.pack("<I", 0xAABBCCDD)
    handle_exit(MmioExit(0xFEE000B0, 4, True, b"\0\0\0\0"), io, mmio)
    assert dev.writes == [(0xB0, 4, 0)]


def test_uart_output_through_the_real_device_model():
    got = []
    io, mmio = IoBus(), MmioBus()
    io.register(0x3F8, 8, Uart16550(None, got.append))
    handle_exit(IoExit(0x3F8, 1, True, 1, b"K"), io, mmio)
    lsr = handle_exit(IoExit(0x3FD, 1, False), io, mmio).reply[0]
    assert b"".join(got) == b"K" and lsr & 0x20


def test_debug_exit_device_is_reached():
    codes = []
    io, mmio = IoBus(), MmioBus()
    io.register(0xF4, 4, IsaDebugExit(codes.append))
    handle_exit(IoExit(0xF4, 1, True, 1, b"\x03"), io, mmio)
    assert codes == [7]


def test_faults_stop_with_decoded_reasons():
    io, mmio = IoBus(), MmioBus()
    out = handle_exit(ShutdownExit(), io, mmio)
    assert out.action == STOP and out.problem and "triple fault" in out.stop_reason
    out = handle_exit(FailEntryExit(0x80000021), io, mmio)
    assert out.problem and "invalid guest state" in out.stop_reason
    out = handle_exit(InternalErrorExit(1, (1,)), io, mmio)
    assert out.problem and "emulation failure" in out.stop_reason
    out = handle_exit(InternalErrorExit(3, ()), io, mmio)
    assert "delivering an event" in out.stop_reason
    out = handle_exit(SystemEventExit(ioctls.KVM_SYSTEM_EVENT_RESET), io, mmio)
    assert out.action == STOP and not out.problem and "reset" in out.stop_reason


def test_hlt_waits_and_intr_continues():
    io, mmio = IoBus(), MmioBus()
    assert handle_exit(HltExit(), io, mmio).action == WAIT
    assert handle_exit(IntrExit(), io, mmio).action == CONTINUE


def run_page(reason_union: bytes, size: int = 4096) -> bytearray:
    page = bytearray(size)
    page[ioctls.RUN_UNION:ioctls.RUN_UNION + len(reason_union)] = reason_union
    return page


def test_decode_io_exit_from_a_run_page():
    page = run_page(struct.pack("<BBHIQ", ioctls.KVM_EXIT_IO_OUT, 1, 0x3F8, 2, 0x1000), 8192)
    page[0x1000:0x1002] = b"hi"
    ex = decode_exit(page, ioctls.KVM_EXIT_IO)
    assert ex == IoExit(0x3F8, 1, True, 2, b"hi", 0x1000)
    page = run_page(struct.pack("<BBHIQ", ioctls.KVM_EXIT_IO_IN, 4, 0x71, 1, 0x1000), 8192)
    ex = decode_exit(page, ioctls.KVM_EXIT_IO)
    assert not ex.is_write and ex.size == 4 and ex.port == 0x71


def test_decode_mmio_and_errors():
    page = run_page(struct.pack("<Q8sIB", 0xFEC00010, b"\x01\x02\x03\x04\0\0\0\0", 4, 1))
    assert decode_exit(page, ioctls.KVM_EXIT_MMIO) == MmioExit(0xFEC00010, 4, True, b"\x01\x02\x03\x04")
    # An emulation failure carrying the instruction bytes (flags bit 0).
    union = struct.pack("<IIQ", 1, 3, 1) + bytes([2, 0x0F, 0xAE]) + bytes(13)
    ex = decode_exit(run_page(union), ioctls.KVM_EXIT_INTERNAL_ERROR)
    assert ex.suberror == 1 and ex.insn_bytes == b"\x0f\xae"
    ex = decode_exit(run_page(struct.pack("<QI", 0x80000021, 0)), ioctls.KVM_EXIT_FAIL_ENTRY)
    assert ex.hardware_reason == 0x80000021
    assert decode_exit(run_page(b""), ioctls.KVM_EXIT_SHUTDOWN).reason == "KVM_EXIT_SHUTDOWN"
