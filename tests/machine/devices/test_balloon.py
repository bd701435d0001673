"""The balloon device (machine/devices/balloon.py): the register block a driver sees.

Driven through an I/O bus as a guest's IN and OUT reach it: the ID and
target read back byte by byte and whole, a staged frame is handed to the
monitor's callback, a refused command reads back 0, an unknown command is
refused, and nothing the guest writes reaches the callbacks but a frame
number it staged.
"""

from trapvisor.machine.bus import IoBus
from trapvisor.machine.devices.balloon import (
    BALLOON_BASE, BALLOON_SIZE, CMD_DEFLATE, CMD_INFLATE, BalloonDevice,
)


def board(accept=lambda frame: frame < 100):
    calls = []

    def inflate(frame):
        calls.append(("inflate", frame))
        return accept(frame)

    def deflate(frame):
        calls.append(("deflate", frame))
        return accept(frame)
    dev = BalloonDevice(inflate, deflate)
    bus = IoBus()
    bus.register(BALLOON_BASE, BALLOON_SIZE, dev)
    return bus, dev, calls


def stage(bus, frame):
    for i in range(4):
        bus.write(BALLOON_BASE + 8 + i, 1, (frame >> (8 * i)) & 0xFF)


def test_id_and_target_read_as_bytes_and_as_a_word():
    bus, dev, _ = board()
    assert bytes(bus.read(BALLOON_BASE + i, 1) for i in range(4)) == b"BALN"
    dev.target = 0x01020304
    assert bus.read(BALLOON_BASE + 4, 4) == 0x01020304
    assert [bus.read(BALLOON_BASE + 4 + i, 1) for i in range(4)] == [4, 3, 2, 1]


def test_commands_hand_the_staged_frame_to_the_monitor_and_report_its_answer():
    bus, dev, calls = board()
    stage(bus, 42)
    assert bus.read(BALLOON_BASE + 8, 4) == 42
    bus.write(BALLOON_BASE + 12, 1, CMD_INFLATE)
    assert bus.read(BALLOON_BASE + 12, 1) == 1 and dev.inflates == 1
    stage(bus, 0x12345)                        # the monitor refuses this one
    bus.write(BALLOON_BASE + 12, 1, CMD_DEFLATE)
    assert bus.read(BALLOON_BASE + 12, 1) == 0 and dev.deflates == 0 and dev.refused == 1
    bus.write(BALLOON_BASE + 12, 1, 7)        # no such command: refused, no callback
    assert bus.read(BALLOON_BASE + 12, 1) == 0
    assert calls == [("inflate", 42), ("deflate", 0x12345)]


def test_writes_to_read_only_registers_change_nothing():
    bus, dev, calls = board()
    dev.target = 5
    bus.write(BALLOON_BASE, 4, 0xFFFFFFFF)
    bus.write(BALLOON_BASE + 4, 4, 0xFFFFFFFF)
    assert bytes(bus.read(BALLOON_BASE + i, 1) for i in range(4)) == b"BALN"
    assert bus.read(BALLOON_BASE + 4, 4) == 5 and calls == []
