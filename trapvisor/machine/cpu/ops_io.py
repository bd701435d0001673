"""Port I/O: IN and OUT, and the I/O permission check they share with INS and
OUTS (``ops_string.py``).

IOPL-sensitive (SDM Vol. 1 §18.2.1, Vol. 2 IN/OUT): at CPL > IOPL every port
the access touches must be allowed by the TSS I/O permission bitmap (SDM
Vol. 1 §18.5.2), else #GP(0).  The ports are ``cpu.io_bus``'s devices.
"""

from __future__ import annotations

import iced_x86 as iced

from .constants import CR0_PE, GP, SYS_TSS32_AVAIL, SYS_TSS32_BUSY
from .cpu import CpuFault, ExitFault
from .exits import IoExit
from .operands import K, op_size, reg_reader, reg_writer
from .registry import END, handles

M = iced.Mnemonic


# ------------------------------------------------------------------ IN/OUT
def check_io(cpu, port: int, size: int) -> None:
    """I/O permission: CPL <= IOPL, else every bit for the accessed ports in the
    TSS I/O permission bitmap must be clear (SDM Vol. 1 §18.5.2)."""
    if not cpu.cr0 & CR0_PE or cpu.cpl <= cpu.iopl:
        return
    if not cpu.tr_attr & 0x80 or (cpu.tr_attr & 0xF) not in (SYS_TSS32_AVAIL, SYS_TSS32_BUSY) \
            or cpu.tr_limit < 0x67:
        raise CpuFault(GP, 0)
    iomap = cpu.sys_read(cpu.tr_base + 0x66, 2)
    off = iomap + (port >> 3)
    if off + 1 > cpu.tr_limit:
        raise CpuFault(GP, 0)
    bits = cpu.sys_read(cpu.tr_base + off, 2)
    want = ((1 << size) - 1) << (port & 7)
    if bits & want:
        raise CpuFault(GP, 0)


def _port_operand(cpu, ins, i: int):
    """A closure giving the port of IN/OUT operand ``i``: DX or an imm8."""
    if ins.op_kind(i) == K.REGISTER:
        regs = cpu.regs
        return lambda: regs[2] & 0xFFFF
    port = ins.immediate8
    return lambda: port


@handles(M.IN)
def c_in(cpu, ins):
    size = op_size(ins, 0)
    dst = reg_writer(cpu, ins.op0_register)
    port_of = _port_operand(cpu, ins, 1)
    bus = cpu.io_bus

    ic, length = cpu.intercepts, ins.len

    def in_():
        port = port_of()
        check_io(cpu, port, size)
        if ic.io_exiting is not None and ic.exits_on_port(port):
            raise ExitFault(IoExit(port, size, False, length=length))
        dst(bus.read(port, size))
    return in_, END


@handles(M.OUT)
def c_out(cpu, ins):
    size = op_size(ins, 1)
    src = reg_reader(cpu, ins.op1_register)
    port_of = _port_operand(cpu, ins, 0)
    bus = cpu.io_bus

    ic, length = cpu.intercepts, ins.len

    def out():
        port = port_of()
        check_io(cpu, port, size)
        if ic.io_exiting is not None and ic.exits_on_port(port):
            raise ExitFault(IoExit(port, size, True, value=src(), length=length))
        bus.write(port, size, src())
    return out, END


