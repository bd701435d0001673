"""QEMU's isa-debug-exit device: a guest ends the run with a status of its choosing.

As QEMU's ``-device isa-debug-exit,iobase=0xf4,iosize=0x04`` (hw/misc/
debugexit.c; reference facts, section 6): four ports at 0xF4-0xF7; a write of
value ``v`` (of the access's width) ends the machine with exit code
``(v << 1) | 1``, so a guest can never produce 0 (an odd code is "the guest
asked to stop", whatever it means by the value).  Reads return 0.

How the run stops.  The device records the code in ``exit_code`` and then:

* if the machine passed ``on_exit``, calls ``on_exit(code)`` and returns, and
  the machine stops at its next check (the flag is the device's
  ``exit_code``, or whatever the callback sets);
* otherwise raises :class:`GuestExit`, which unwinds out of the bus write,
  the OUT instruction and the run loop.  The simulated CPU loop and the KVM
  exit loop both call the I/O bus from their own thread, so both can catch
  it around their loop: it is the default because it needs no polling.
"""

from __future__ import annotations

DEBUG_EXIT_BASE = 0xF4
DEBUG_EXIT_SIZE = 4


class GuestExit(Exception):
    """The guest wrote to isa-debug-exit: the run ends with ``code``."""

    def __init__(self, code: int, value: int | None = None):
        super().__init__(f"guest requested exit with code {code}")
        self.code = code
        self.value = value


def exit_code_for(value: int) -> int:
    return (value << 1) | 1


class IsaDebugExit:
    def __init__(self, on_exit=None):
        self.on_exit = on_exit
        self.exit_code: int | None = None
        self.value: int | None = None

    def io_read(self, port: int, size: int) -> int:
        return 0

    def io_write(self, port: int, size: int, value: int) -> None:
        self.value = value
        self.exit_code = exit_code_for(value)
        if self.on_exit is not None:
            self.on_exit(self.exit_code)
        else:
            raise GuestExit(self.exit_code, value)
