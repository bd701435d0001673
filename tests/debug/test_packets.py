"""The remote protocol's framing and the stub's commands, driven by a scripted client
over a socket pair (GDB manual appendix E: E.1 framing and acks, E.2 packets,
E.3 stop replies, E.11 interrupts).  Real gdb drives the stub in test_gdb.py."""

import socket
import threading
import time
import xml.etree.ElementTree as ET

import pytest

from trapvisor.debug import packets
from trapvisor.debug.gdbstub import GdbStub
from trapvisor.debug.packets import Connection, checksum, escape, frame, unescape
from trapvisor.debug.target import REGISTERS, TARGET_XML, Stop, Target, Unmapped


class FakeTarget(Target):
    """Two vCPUs, 64 bytes of memory at 0x1000, a PC that a step advances by one."""

    def __init__(self):
        self.regs = {1: {name: 0 for name, _ in REGISTERS}, 2: {name: 0 for name, _ in REGISTERS}}
        self.regs[1]["eip"], self.regs[2]["eip"] = 0x1000, 0x2000
        self.mem = bytearray(range(64))
        self.breakpoints = set()
        self.detached = self.killed = False

    def threads(self):
        return [1, 2]

    def read_registers(self, thread):
        return dict(self.regs[thread])

    def write_registers(self, thread, values):
        self.regs[thread].update(values)

    def read_memory(self, thread, addr, length):
        if not 0x1000 <= addr < 0x1040:
            raise Unmapped(hex(addr))
        return bytes(self.mem[addr - 0x1000:addr - 0x1000 + length])

    def write_memory(self, thread, addr, data):
        self.read_memory(thread, addr, len(data))
        self.mem[addr - 0x1000:addr - 0x1000 + len(data)] = data

    def insert_breakpoint(self, kind, addr, length):
        if kind > 1:
            return False
        self.breakpoints.add(addr)
        return True

    def remove_breakpoint(self, kind, addr, length):
        self.breakpoints.discard(addr)
        return True

    def resume(self, step_thread, interrupted):
        if step_thread is not None:
            self.regs[step_thread]["eip"] += 1
            return Stop("step", thread=step_thread)
        while True:                      # run: the PC climbs to a breakpoint, or Ctrl-C
            eip = self.regs[1]["eip"] = self.regs[1]["eip"] + 1
            if eip in self.breakpoints:
                return Stop("breakpoint", address=eip)
            if interrupted():
                return Stop("interrupt")
            time.sleep(0.001)

    def monitor(self, command):
        return "registers here\n" if command == "info registers" else None

    def detach(self):
        self.detached = True

    def kill(self):
        self.killed = True


class Client:
    """gdb's side, by hand."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.ack = True

    def read(self, n=1):
        while len(self.buf) < n:
            data = self.sock.recv(4096)
            assert data, "stub closed the connection"
            self.buf += data
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def packet(self):
        while self.read() != b"$":
            pass
        body = b""
        while (c := self.read()) != b"#":
            body += c
        cs = self.read(2)
        assert int(cs, 16) == checksum(body)
        if self.ack:
            self.sock.sendall(b"+")
        return unescape(body).decode("latin-1")

    def send(self, data: str, expect_ack=True):
        self.sock.sendall(frame(data.encode("latin-1")))
        if self.ack and expect_ack:
            assert self.read() == b"+"

    def ask(self, data: str) -> str:
        self.send(data)
        return self.packet()


@pytest.fixture
def session():
    a, b = socket.socketpair()
    target = FakeTarget()
    stub = GdbStub(target, Connection(a))
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("how", stub.serve()), daemon=True)
    t.start()
    b.settimeout(10)
    yield Client(b), target, result, t
    b.close()
    t.join(5)


def test_framing_escapes_and_run_lengths_round_trip():
    data = b"a#b$c}d*e"
    assert unescape(escape(data)) == data
    assert frame(b"OK") == b"$OK#9a"
    assert unescape(b"0*#") == b"0" * 7          # '#' is 35: six more repeats


def test_a_bad_checksum_is_refused_and_the_packet_sent_again(session):
    client, *_ = session
    client.sock.sendall(b"$qC#00")
    assert client.read() == b"-"
    assert client.ask("qC") == "QC1"


def test_qsupported_offers_the_features_gdb_needs(session):
    client, *_ = session
    reply = client.ask("qSupported:multiprocess+;swbreak+;hwbreak+;xmlRegisters=i386")
    for feature in ("qXfer:features:read+", "swbreak+", "hwbreak+", "QStartNoAckMode+", "vContSupported+"):
        assert feature in reply.split(";")


def test_the_target_description_reads_in_pieces_and_is_the_i386_core_feature(session):
    client, *_ = session
    text, off = "", 0
    while True:
        reply = client.ask(f"qXfer:features:read:target.xml:{off:x},80")
        text += reply[1:]
        off += len(reply) - 1
        if reply[0] == "l":
            break
        assert reply[0] == "m"
    assert text == TARGET_XML
    root = ET.fromstring(text)
    assert root.find("architecture").text == "i386"
    names = [r.get("name") for r in root.iter("reg")]
    assert names[:10] == ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "eip", "eflags"]
    assert len(names) == len(REGISTERS)


def test_registers_read_and_write_in_target_byte_order(session):
    client, target, *_ = session
    target.regs[1]["eax"] = 0x11223344
    g = client.ask("g")
    assert len(g) == 2 * sum(size for _, size in REGISTERS)
    assert g[:8] == "44332211" and g[64:72] == "00100000"        # eax, then eip 0x1000
    assert client.ask("P0=78563412") == "OK" and target.regs[1]["eax"] == 0x12345678
    assert client.ask("p8") == "00100000"
    assert client.ask("Hg2") == "OK" and client.ask("p8") == "00200000"   # thread 2's EIP
    assert client.ask("Hg3") == "E02"


def test_memory_read_write_and_an_unmapped_address(session):
    client, target, *_ = session
    assert client.ask("m1004,4") == "04050607"
    assert client.ask("M1004,2:aabb") == "OK" and target.mem[4:6] == b"\xaa\xbb"
    assert client.ask("X1008,2:#$") == "OK" and target.mem[8:10] == b"#$"     # binary, sent escaped
    assert client.ask("m9000,4") == "E14"


def test_threads_one_per_vcpu(session):
    client, *_ = session
    assert client.ask("qfThreadInfo") == "m1,2" and client.ask("qsThreadInfo") == "l"
    assert bytes.fromhex(client.ask("qThreadExtraInfo,2")) == b"vCPU 1"
    assert client.ask("T2") == "OK" and client.ask("T5") == "E02"


def test_breakpoint_continue_and_step_give_their_stop_replies(session):
    client, target, *_ = session
    assert client.ask("Z0,1005,1") == "OK" and 0x1005 in target.breakpoints
    assert client.ask("Z2,1005,4") == ""                 # not supported by this target: empty
    assert client.ask("vCont;c") == "T05swbreak:;thread:1;"
    assert client.ask("vCont;s:2;c") == "T05thread:2;" and target.regs[2]["eip"] == 0x2001
    assert client.ask("z0,1005,1") == "OK" and not target.breakpoints


def test_ctrl_c_stops_a_running_target(session):
    client, *_ = session
    client.send("c")
    time.sleep(0.05)
    client.sock.sendall(bytes([packets.INTERRUPT]))
    assert client.packet() == "T02thread:1;"


def test_monitor_commands_answer_in_console_packets(session):
    client, *_ = session
    client.send("qRcmd," + b"info registers".hex())
    assert client.packet() == "O" + b"registers here\n".hex()
    assert client.packet() == "OK"
    client.send("qRcmd," + b"frobnicate".hex())
    assert "unknown monitor command" in bytes.fromhex(client.packet()[1:]).decode()
    assert client.packet() == "OK"


def test_no_ack_mode_and_unknown_packets(session):
    client, *_ = session
    assert client.ask("QStartNoAckMode") == "OK"
    client.ack = False
    assert client.ask("vMustReplyEmpty") == ""
    assert client.ask("qC") == "QC1"


def test_detach_lets_the_target_go_and_ends_the_session(session):
    client, target, result, thread = session
    assert client.ask("D") == "OK"
    thread.join(5)
    assert result["how"] == "detached" and target.detached


def test_kill_ends_the_session(session):
    client, target, result, thread = session
    client.send("k")
    thread.join(5)
    assert result["how"] == "killed" and target.killed
