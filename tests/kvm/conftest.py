import pytest

from tests.hosttools_gate import need_kvm
from trapvisor.kvm.hostinfo import probe_kvm


@pytest.fixture(scope="session")
def kvm_host():
    info = probe_kvm()
    need_kvm(info)
    return info


def multiboot_image(code: bytes, load: int = 0x100000) -> bytes:
    """A minimal a.out-kludge Multiboot kernel: header at 0, data at +0x40, code at +0x20."""
    import struct
    magic, flags = 0x1BADB002, 0x00010000
    header = struct.pack("<8I", magic, flags, (-(magic + flags)) & 0xFFFFFFFF,
                         load, load, 0, 0, load + 0x20)
    image = bytearray(0x80)
    image[:len(header)] = header
    image[0x20:0x20 + len(code)] = code
    return bytes(image)


def interrupt_after(machine, seconds: float = 1.0, **run):
    """Run ``machine`` with a SIGINT (Python's default handler, as a terminal's Ctrl-C) after ``seconds``."""
    import os
    import signal
    import threading
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        return machine.run(**run)
    finally:
        timer.cancel()
