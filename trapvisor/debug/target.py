"""What a debugger needs of a machine: the backend interface the gdb stub drives.

One :class:`Target` per machine, whatever runs it: the bare simulated PC, a
technique of the monitor, or /dev/kvm (``sim_target.py``, ``kvm_target.py``).
The stub (``gdbstub.py``) speaks only to this interface, so every backend gets
the same protocol.  Registers are exchanged in the i386 layout of gdb's
``org.gnu.gdb.i386.core`` feature (:data:`REGISTERS`, :data:`TARGET_XML`): the
eight general registers, EIP, EFLAGS, the six segment selectors, then the x87
state.  Under a technique the target presents the guest's view (the monitor's
virtual CPU: the guest's CPL, selectors and descriptor tables), never the host
CPU's compressed one.

Memory is read and written at *linear* addresses through the guest's own
paging (``paging_walk.py``), without side effects (no accessed or dirty bits
set); an address that does not translate is an error (gdb shows "Cannot access
memory").
"""

from __future__ import annotations

from dataclasses import dataclass

# (name, size in bytes, gdb type) in the order of the g packet.
GENERAL = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
SEGMENTS = ("cs", "ss", "ds", "es", "fs", "gs")
X87_CONTROL = ("fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop")
REGISTERS = ([(n, 4) for n in GENERAL] + [("eip", 4), ("eflags", 4)] + [(n, 4) for n in SEGMENTS]
             + [(f"st{i}", 10) for i in range(8)] + [(n, 4) for n in X87_CONTROL])
REGISTER_INDEX = {name: i for i, (name, _) in enumerate(REGISTERS)}
# The x87 state a processor has after FNINIT (SDM Vol. 1 §8.1.10, Table 8-10): what
# the debugger shows of a machine whose CPU model has no x87 state to show.
X87_RESET = {"fctrl": 0x37F, "ftag": 0xFFFF}

_TYPES = {"esp": "data_ptr", "ebp": "data_ptr", "eip": "code_ptr", "eflags": "i386_eflags"}
_EFLAGS_BITS = ((0, "CF"), (1, ""), (2, "PF"), (4, "AF"), (6, "ZF"), (7, "SF"), (8, "TF"),
                (9, "IF"), (10, "DF"), (11, "OF"), (14, "NT"), (16, "RF"), (17, "VM"),
                (18, "AC"), (19, "VIF"), (20, "VIP"), (21, "ID"))


def _reg_xml(n: int, name: str, size: int) -> str:
    if size == 10:
        return f'  <reg name="{name}" bitsize="80" type="i387_ext" regnum="{n}"/>'
    typ = _TYPES.get(name, "int32")
    group = ' group="float"' if name in X87_CONTROL else ""
    return f'  <reg name="{name}" bitsize="32" type="{typ}" regnum="{n}"{group}/>'


def target_xml() -> str:
    """The target description (GDB manual, appendix G "Target Descriptions"; the
    i386 core feature's registers in gdb's order, G.5.6 "i386 Features")."""
    flags = "\n".join(f'    <field name="{name}" start="{bit}" end="{bit}"/>' for bit, name in _EFLAGS_BITS)
    regs = "\n".join(_reg_xml(i, name, size) for i, (name, size) in enumerate(REGISTERS))
    return ('<?xml version="1.0"?>\n<!DOCTYPE target SYSTEM "gdb-target.dtd">\n'
            '<target version="1.0">\n<architecture>i386</architecture>\n'
            '<feature name="org.gnu.gdb.i386.core">\n'
            f'  <flags id="i386_eflags" size="4">\n{flags}\n  </flags>\n{regs}\n'
            '</feature>\n</target>\n')


TARGET_XML = target_xml()


@dataclass
class Stop:
    """Why the target stopped, as the stub reports it (E.3 "Stop Reply Packets").

    ``kind``: "breakpoint", "hw-breakpoint", "watchpoint" (``address``, ``access``),
    "step", "interrupt" (Ctrl-C or a stop asked for), "exited" (``exit_code``), or
    "ended" (the machine stopped for good: ``detail`` says why)."""

    kind: str
    thread: int = 1
    address: int | None = None
    access: str | None = None
    exit_code: int | None = None
    detail: str = ""


class Unmapped(Exception):
    """A linear address the guest's paging does not map (or outside RAM)."""


class Target:
    """The interface every backend implements.  Threads are numbered from 1 (gdb's
    thread ids; one per vCPU)."""

    name = "target"

    def threads(self) -> list[int]:
        return [1]

    def read_registers(self, thread: int) -> dict[str, int]:
        """Every name of :data:`REGISTERS` -> its value (st0-st7 as 80-bit integers)."""
        raise NotImplementedError

    def write_registers(self, thread: int, values: dict[str, int]) -> None:
        """Set the named registers (others unchanged)."""
        raise NotImplementedError

    def read_memory(self, thread: int, addr: int, length: int) -> bytes:
        """Bytes at a linear address; raises Unmapped if the first byte cannot be read
        (a shorter result when a later page cannot)."""
        raise NotImplementedError

    def write_memory(self, thread: int, addr: int, data: bytes) -> None:
        raise NotImplementedError

    # Breakpoints: kind 0 software, 1 hardware, 2 write, 3 read, 4 access watchpoint.
    def insert_breakpoint(self, kind: int, addr: int, length: int) -> bool:
        """False: this kind is not supported (the stub answers with an empty packet)."""
        raise NotImplementedError

    def remove_breakpoint(self, kind: int, addr: int, length: int) -> bool:
        raise NotImplementedError

    def resume(self, step_thread: int | None, interrupted) -> Stop:
        """Run until something stops the machine; ``step_thread`` set: one instruction of
        that vCPU.  ``interrupted()`` is polled often: True means gdb sent Ctrl-C."""
        raise NotImplementedError

    def monitor(self, command: str) -> str | None:
        """A ``monitor`` command's output, or None for a command this target lacks."""
        return None

    def thread_name(self, thread: int) -> str:
        return f"vCPU {thread - 1}"

    def detach(self) -> None:
        """gdb left: clear every breakpoint and let the machine run on."""

    def kill(self) -> None:
        """gdb killed the target: stop the machine."""
