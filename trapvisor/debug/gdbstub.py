"""A gdb remote stub: the GDB Remote Serial Protocol's commands over a :class:`Target`.

What is implemented (GDB manual, appendix E; section numbers are the manual's):
``qSupported`` with ``swbreak+ hwbreak+ qXfer:features:read+
QStartNoAckMode+ vContSupported+`` (E.4), the i386 target description by
``qXfer:features:read:target.xml`` (appendix G), ``?`` and the stop replies
``T05 swbreak:/hwbreak:/watch:/rwatch:/awatch:``, ``T02`` after Ctrl-C, ``W``
when the guest exits and ``X`` when the machine stops for good (E.3); ``g G p P``
registers, ``m M X`` memory at linear addresses, ``Z0-Z4``/``z0-z4``
breakpoints and watchpoints, ``c s C S`` and ``vCont`` (``c s t``), ``H``,
``T``, ``qC``, ``qfThreadInfo``/``qsThreadInfo`` (one thread per vCPU),
``qThreadExtraInfo``, ``qAttached``, ``qRcmd`` (``monitor ...``), ``D`` and ``k``
(E.2).  Anything else gets the empty reply that means "not supported".

The stub is single-threaded: while the target runs, :meth:`Target.resume`
polls the connection for Ctrl-C (``packets.Connection.poll_interrupt``).
"""

from __future__ import annotations

import select
import socket

from .packets import MAX_PACKET, Connection, ProtocolError, from_hex, le_hex
from .target import REGISTERS, TARGET_XML, Stop, Target, Unmapped

SIGINT, SIGTRAP, SIGABRT = 2, 5, 6
FEATURES = (f"PacketSize={MAX_PACKET:x};qXfer:features:read+;swbreak+;hwbreak+;"
            "QStartNoAckMode+;vContSupported+")
WATCH_REPLY = {"write": "watch", "read": "rwatch", "access": "awatch"}
MAX_READ = MAX_PACKET // 2 - 16


def stop_reply(stop: Stop) -> str:
    """The stop reply packet for ``stop`` (E.3)."""
    t = f"thread:{stop.thread:x};"
    if stop.kind == "breakpoint":
        return f"T{SIGTRAP:02x}swbreak:;{t}"
    if stop.kind == "hw-breakpoint":
        return f"T{SIGTRAP:02x}hwbreak:;{t}"
    if stop.kind == "watchpoint":
        return f"T{SIGTRAP:02x}{WATCH_REPLY[stop.access]}:{stop.address:x};{t}"
    if stop.kind == "step":
        return f"T{SIGTRAP:02x}{t}"
    if stop.kind == "interrupt":
        return f"T{SIGINT:02x}{t}"
    if stop.kind == "exited":
        return f"W{stop.exit_code & 0xFF:02x}"
    return f"X{SIGABRT:02x}"


class Listener:
    """The listening socket of ``--gdb tcp::PORT``."""

    def __init__(self, host: str, port: int):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]

    def pending(self) -> bool:
        """Is a gdb waiting to be accepted?  (Does not block.)"""
        ready, _, _ = select.select([self.sock], [], [], 0)
        return bool(ready)

    def accept(self) -> Connection:
        conn, _ = self.sock.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return Connection(conn)

    def close(self) -> None:
        self.sock.close()


class GdbStub:
    """One gdb session on one target.  :meth:`serve` returns how it ended: "detached",
    "killed", "disconnected" or "ended" (the machine is gone: W or X was sent)."""

    def __init__(self, target: Target, conn: Connection, stop: Stop | None = None):
        self.target = target
        self.conn = conn
        self.last = stop or Stop("interrupt")
        self.g_thread = target.threads()[0]      # H g: the thread of register and memory accesses
        self.c_thread = None                     # H c: the thread to step (None: any)
        self.done: str | None = None

    # -- the loop ------------------------------------------------------------------------
    def serve(self) -> str:
        try:
            while self.done is None:
                packet = self.conn.receive()
                reply = self.handle(packet.decode("latin-1"), packet)
                if reply is not None:
                    self.conn.send(reply)
        except ProtocolError:
            if self.done is None:
                self.done = "disconnected"
        finally:
            self.conn.close()
        return self.done

    def handle(self, text: str, raw: bytes) -> str | None:
        """One packet's reply ("" = not supported; None = the reply was already sent)."""
        head = text[:1]
        try:
            if text.startswith("q") or text.startswith("Q"):
                return self.query(text)
            if text.startswith("v"):
                return self.v_packet(text)
            handler = getattr(self, "cmd_" + {"?": "why"}.get(head, head), None) \
                if head.isalpha() or head == "?" else None
            if handler is None:
                return ""
            return handler(text[1:], raw)
        except Unmapped:
            return "E14"            # EFAULT: gdb says "Cannot access memory"
        except (ValueError, IndexError, KeyError):
            return "E16"            # EINVAL: a malformed request

    # -- stop and resume -------------------------------------------------------------------
    def cmd_why(self, args, raw):
        return stop_reply(self.last)

    def _resume(self, step_thread) -> str | None:
        stop = self.target.resume(step_thread, self.conn.poll_interrupt)
        self.last = stop
        if stop.kind == "ended" and stop.detail:
            self.conn.send("O" + (f"trapvisor: the machine stopped: {stop.detail}\n").encode().hex())
        if stop.kind in ("exited", "ended"):
            self.done = "ended"
        return stop_reply(stop)

    def _step_thread(self, thread=None) -> int:
        if thread is not None:
            return thread
        return self.c_thread if self.c_thread not in (None, 0, -1) else self.g_thread

    def _set_pc(self, args: str) -> None:
        if args:
            self.target.write_registers(self._step_thread(), {"eip": int(args, 16)})

    def cmd_c(self, args, raw):
        self._set_pc(args)
        return self._resume(None)

    def cmd_s(self, args, raw):
        self._set_pc(args)
        return self._resume(self._step_thread())

    def cmd_C(self, args, raw):          # continue "with signal": no signals to deliver
        return self._resume(None)

    def cmd_S(self, args, raw):
        return self._resume(self._step_thread())

    def v_packet(self, text: str) -> str | None:
        if text == "vCont?":
            return "vCont;c;C;s;S;t"
        if text.startswith("vCont;"):
            step = None
            for action in text[6:].split(";"):
                verb, _, thread = action.partition(":")
                if verb[:1] in ("s", "S"):
                    tid = int(thread, 16) if thread and thread not in ("-1", "0") else self._step_thread()
                    step = tid
                    break
            if all(a.partition(":")[0] == "t" for a in text[6:].split(";")):
                return stop_reply(Stop("interrupt", thread=self.g_thread))
            return self._resume(step)
        if text.startswith("vKill"):
            self.target.kill()
            self.done = "killed"
            return "OK"
        return ""           # vMustReplyEmpty and every other v packet

    def cmd_D(self, args, raw):
        self.target.detach()
        self.conn.send("OK")
        self.done = "detached"
        return None

    def cmd_k(self, args, raw):
        self.target.kill()
        self.done = "killed"
        return None         # k has no reply

    # -- threads ---------------------------------------------------------------------------
    def cmd_H(self, args, raw):
        op, tid = args[:1], int(args[1:], 16) if args[1:] not in ("-1", "") else -1
        if tid not in (0, -1) and tid not in self.target.threads():
            return "E02"
        if op == "g":
            self.g_thread = tid if tid > 0 else self.target.threads()[0]
        else:
            self.c_thread = tid
        return "OK"

    def cmd_T(self, args, raw):
        return "OK" if int(args, 16) in self.target.threads() else "E02"

    # -- registers -------------------------------------------------------------------------
    def cmd_g(self, args, raw):
        values = self.target.read_registers(self.g_thread)
        return "".join(le_hex(values[name], size) for name, size in REGISTERS)

    def cmd_G(self, args, raw):
        data, values, off = from_hex(args), {}, 0
        for name, size in REGISTERS:
            if off + size > len(data):
                break
            values[name] = int.from_bytes(data[off:off + size], "little")
            off += size
        old = self.target.read_registers(self.g_thread)
        self.target.write_registers(self.g_thread, {k: v for k, v in values.items() if old.get(k) != v})
        return "OK"

    def cmd_p(self, args, raw):
        n = int(args, 16)
        if n >= len(REGISTERS):
            return "E16"
        name, size = REGISTERS[n]
        return le_hex(self.target.read_registers(self.g_thread)[name], size)

    def cmd_P(self, args, raw):
        num, _, value = args.partition("=")
        n = int(num, 16)
        if n >= len(REGISTERS):
            return "E16"
        name, size = REGISTERS[n]
        v = int.from_bytes(from_hex(value)[:size], "little")
        if self.target.read_registers(self.g_thread)[name] != v:
            self.target.write_registers(self.g_thread, {name: v})
        return "OK"

    # -- memory ----------------------------------------------------------------------------
    def cmd_m(self, args, raw):
        addr, length = (int(x, 16) for x in args.split(","))
        return self.target.read_memory(self.g_thread, addr, min(length, MAX_READ)).hex()

    def cmd_M(self, args, raw):
        where, _, data = args.partition(":")
        addr, length = (int(x, 16) for x in where.split(","))
        self.target.write_memory(self.g_thread, addr, from_hex(data)[:length])
        return "OK"

    def cmd_X(self, args, raw):
        colon = raw.index(b":")
        addr, length = (int(x, 16) for x in raw[1:colon].decode().split(","))
        if length:
            self.target.write_memory(self.g_thread, addr, raw[colon + 1:colon + 1 + length])
        return "OK"

    # -- breakpoints -----------------------------------------------------------------------
    def _z(self, args, insert: bool) -> str:
        kind, addr, length = args.split(";")[0].split(",")
        op = self.target.insert_breakpoint if insert else self.target.remove_breakpoint
        return "OK" if op(int(kind), int(addr, 16), int(length, 16)) else ""

    def cmd_Z(self, args, raw):
        return self._z(args, True)

    def cmd_z(self, args, raw):
        return self._z(args, False)

    # -- queries ---------------------------------------------------------------------------
    def query(self, text: str) -> str:
        name, _, args = text.partition(":")
        if name == "qSupported":
            return FEATURES
        if name == "QStartNoAckMode":
            self.conn.send("OK")
            self.conn.ack = False
            return None
        if text.startswith("qXfer:features:read:"):
            annex, _, span = text[len("qXfer:features:read:"):].partition(":")
            if annex != "target.xml":
                return "E00"
            off, length = (int(x, 16) for x in span.split(","))
            chunk = TARGET_XML[off:off + length]
            return ("l" if off + length >= len(TARGET_XML) else "m") + chunk
        if name == "qAttached":
            return "1"
        if name == "qC":
            return f"QC{self.g_thread:x}"
        if name == "qfThreadInfo":
            return "m" + ",".join(f"{t:x}" for t in self.target.threads())
        if name == "qsThreadInfo":
            return "l"
        if text.startswith("qThreadExtraInfo,"):
            return self.target.thread_name(int(text.split(",")[1], 16)).encode().hex()
        if text.startswith("qRcmd,"):
            return self.monitor_command(from_hex(text[6:]).decode("latin-1"))
        if name == "qSymbol":
            return "OK"
        return ""

    def monitor_command(self, command: str) -> str:
        """``monitor CMD``: the output as console packets, then OK (E.2 qRcmd)."""
        out = self.target.monitor(command.strip())
        if out is None:
            out = (f"unknown monitor command {command.strip()!r}; known: "
                   f"{', '.join(self.monitor_commands())}\n")
        for i in range(0, len(out), MAX_READ // 2):
            self.conn.send("O" + out[i:i + MAX_READ // 2].encode().hex())
        return "OK"

    def monitor_commands(self) -> list[str]:
        return getattr(self.target, "MONITOR_COMMANDS", ["info registers", "techniques"])
