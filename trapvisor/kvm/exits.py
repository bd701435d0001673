"""VM exits as typed values, and the one function that handles them.

:func:`decode_exit` turns the kvm_run page (linux/kvm.h ``struct kvm_run``)
into one of the small exit classes below; :func:`handle_exit` acts on it
against the *same* I/O-port and MMIO buses, and so the same device objects,
that the simulated PC uses.  The handler never touches the run page itself:
what a read returns comes back in :class:`Outcome.reply` and the exit loop
copies it into the page.  That keeps it testable with synthetic exits.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from . import ioctls

_IO = struct.Struct("<BBHIQ")          # direction, size, port, count, data_offset
_MMIO = struct.Struct("<Q8sIB")        # phys_addr, data[8], len, is_write
_U32x2 = struct.Struct("<II")
_U64 = struct.Struct("<Q")
_DEBUG = struct.Struct("<IIQQQ")       # exception, pad, pc, dr6, dr7 (kvm_debug_exit_arch)
U = ioctls.RUN_UNION


# -- the typed exits -----------------------------------------------------------
@dataclass(slots=True)
class IoExit:
    port: int
    size: int
    is_write: bool
    count: int = 1
    data: bytes = b""          # OUT: size*count bytes written by the guest
    data_offset: int = 0       # where IN data goes in the run page
    reason = "KVM_EXIT_IO"


@dataclass(slots=True)
class MmioExit:
    address: int
    size: int
    is_write: bool
    data: bytes = b""
    reason = "KVM_EXIT_MMIO"


@dataclass(slots=True)
class HltExit:
    reason = "KVM_EXIT_HLT"


@dataclass(slots=True)
class IntrExit:
    """KVM_RUN returned early: a signal (our timer tick, Ctrl-C) or immediate_exit."""
    reason = "KVM_EXIT_INTR"


@dataclass(slots=True)
class IrqWindowExit:
    reason = "KVM_EXIT_IRQ_WINDOW_OPEN"


@dataclass(slots=True)
class ShutdownExit:
    """The guest triple-faulted (or otherwise hit a shutdown condition)."""
    reason = "KVM_EXIT_SHUTDOWN"


@dataclass(slots=True)
class SystemEventExit:
    type: int
    reason = "KVM_EXIT_SYSTEM_EVENT"


@dataclass(slots=True)
class FailEntryExit:
    hardware_reason: int
    cpu: int = 0
    reason = "KVM_EXIT_FAIL_ENTRY"


@dataclass(slots=True)
class InternalErrorExit:
    suberror: int
    data: tuple = ()
    insn_bytes: bytes = b""    # from KVM when it supplied them (emulation failure)
    reason = "KVM_EXIT_INTERNAL_ERROR"


@dataclass(slots=True)
class DebugExit:
    """KVM_EXIT_DEBUG (a host debugger's breakpoint or single step: struct
    kvm_debug_exit_arch): the exception (1 #DB, 3 #BP), the linear PC, DR6, DR7."""
    exception: int
    pc: int
    dr6: int
    dr7: int
    reason = "KVM_EXIT_DEBUG"


@dataclass(slots=True)
class OtherExit:
    code: int
    detail: int = 0

    @property
    def reason(self) -> str:
        return ioctls.EXIT_REASON_NAMES.get(self.code, f"KVM_EXIT_{self.code}")


# -- decoding the run page --------------------------------------------------------
def decode_exit(page, exit_reason: int):
    """Read the exit-specific part of the kvm_run page into a typed exit."""
    if exit_reason == ioctls.KVM_EXIT_IO:
        direction, size, port, count, off = _IO.unpack_from(page, U)
        if direction == ioctls.KVM_EXIT_IO_OUT:
            return IoExit(port, size, True, count, page[off:off + size * count], off)
        return IoExit(port, size, False, count, b"", off)
    if exit_reason == ioctls.KVM_EXIT_MMIO:
        addr, data, length, is_write = _MMIO.unpack_from(page, U)
        return MmioExit(addr, length, bool(is_write), data[:length] if is_write else b"")
    if exit_reason == ioctls.KVM_EXIT_HLT:
        return HltExit()
    if exit_reason == ioctls.KVM_EXIT_DEBUG:
        exception, _pad, pc, dr6, dr7 = _DEBUG.unpack_from(page, U)
        return DebugExit(exception, pc, dr6, dr7)
    if exit_reason == ioctls.KVM_EXIT_INTR:
        return IntrExit()
    if exit_reason == ioctls.KVM_EXIT_IRQ_WINDOW_OPEN:
        return IrqWindowExit()
    if exit_reason == ioctls.KVM_EXIT_SHUTDOWN:
        return ShutdownExit()
    if exit_reason == ioctls.KVM_EXIT_SYSTEM_EVENT:
        return SystemEventExit(_U32x2.unpack_from(page, U)[0])
    if exit_reason == ioctls.KVM_EXIT_FAIL_ENTRY:
        reason = _U64.unpack_from(page, U)[0]
        return FailEntryExit(reason, _U32x2.unpack_from(page, U + 8)[0])
    if exit_reason == ioctls.KVM_EXIT_INTERNAL_ERROR:
        suberror, ndata = _U32x2.unpack_from(page, U)
        data = struct.unpack_from(f"<{min(ndata, 16)}Q", page, U + 8)
        insn = b""
        if (suberror == ioctls.KVM_INTERNAL_ERROR_EMULATION and ndata >= 3
                and data[0] & ioctls.KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES):
            n = page[U + 16]
            insn = bytes(page[U + 17:U + 17 + min(n, 15)])
        return InternalErrorExit(suberror, data, insn)
    return OtherExit(exit_reason, _U64.unpack_from(page, U)[0])


# -- handling --------------------------------------------------------------------
# What the exit loop should do after an exit.
CONTINUE = "continue"
WAIT = "wait"       # HLT with no in-kernel irqchip: sleep until a timer or input
STOP = "stop"
DEBUG = "debug"     # a host debugger's breakpoint or step: the machine pauses for it


@dataclass(slots=True)
class Outcome:
    action: str = CONTINUE
    reply: bytes | None = None        # IN / MMIO-read data to put back in the run page
    stop_reason: str = ""             # for STOP: why the VM ended (a problem, or a guest request)
    problem: bool = False             # True: the guest died (fault, KVM error); False: it asked to end
    detail: dict = field(default_factory=dict)


_CONTINUE = Outcome()


def io_detail(ex: IoExit) -> dict:
    return {"port": ex.port, "size": ex.size, "direction": "out" if ex.is_write else "in", "count": ex.count}


def handle_exit(ex, io_bus, mmio_bus) -> Outcome:
    """Dispatch one exit to the shared buses; decide whether the VM goes on.

    Faults (shutdown, entry failure, internal error) become STOP outcomes with
    the KVM reason decoded; the runner adds the registers and the decoded
    instruction, which need the vCPU.
    """
    if type(ex) is IoExit:
        size = ex.size
        if ex.is_write:
            data = ex.data
            if ex.count == 1:
                io_bus.write(ex.port, size, int.from_bytes(data, "little"))
                return _CONTINUE
            for i in range(0, size * ex.count, size):
                io_bus.write(ex.port, size, int.from_bytes(data[i:i + size], "little"))
            return _CONTINUE
        reply = b"".join(io_bus.read(ex.port, size).to_bytes(size, "little") for _ in range(ex.count))
        return Outcome(reply=reply)
    if type(ex) is MmioExit:
        if ex.is_write:
            mmio_bus.write(ex.address, ex.size, int.from_bytes(ex.data, "little"))
            return _CONTINUE
        return Outcome(reply=mmio_bus.read(ex.address, ex.size).to_bytes(ex.size, "little"))
    if type(ex) in (IntrExit, IrqWindowExit):
        return _CONTINUE
    if type(ex) is HltExit:
        return Outcome(action=WAIT)
    if type(ex) is DebugExit:
        return Outcome(action=DEBUG)
    if type(ex) is ShutdownExit:
        return Outcome(STOP, stop_reason="guest shutdown (triple fault): KVM_EXIT_SHUTDOWN", problem=True)
    if type(ex) is SystemEventExit:
        kind = {ioctls.KVM_SYSTEM_EVENT_SHUTDOWN: "power-off", ioctls.KVM_SYSTEM_EVENT_RESET: "reset",
                ioctls.KVM_SYSTEM_EVENT_CRASH: "crash"}.get(ex.type, f"type {ex.type}")
        return Outcome(STOP, stop_reason=f"guest system event: {kind}",
                       problem=ex.type == ioctls.KVM_SYSTEM_EVENT_CRASH)
    if type(ex) is FailEntryExit:
        return Outcome(STOP, problem=True, stop_reason=(
            f"KVM_EXIT_FAIL_ENTRY: the CPU refused to enter the guest "
            f"({describe_entry_failure(ex.hardware_reason)})"))
    if type(ex) is InternalErrorExit:
        name = ioctls.INTERNAL_ERROR_NAMES.get(ex.suberror, f"suberror {ex.suberror}")
        return Outcome(STOP, problem=True,
                       stop_reason=f"KVM_EXIT_INTERNAL_ERROR: {name}",
                       detail={"suberror": ex.suberror, "data": [hex(d) for d in ex.data]})
    return Outcome(STOP, problem=True, stop_reason=f"unhandled exit {ex.reason} ({ex.detail:#x})")


# Intel SDM Vol. 3C, Appendix C (basic exit reasons), for entry failures
# (bit 31 set): 33 invalid guest state, 34 MSR loading, 41 machine-check.
_ENTRY_FAILURE = {33: "invalid guest state", 34: "MSR loading failed", 41: "machine-check event"}


def describe_entry_failure(hw: int) -> str:
    basic = hw & 0xFFFF
    if hw & 0x8000_0000 or basic in _ENTRY_FAILURE:
        return f"hardware reason {hw:#x}: VM-entry failure, {_ENTRY_FAILURE.get(basic, f'basic reason {basic}')}"
    return f"hardware reason {hw:#x}"
