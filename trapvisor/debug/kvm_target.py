"""The debugger's view of a machine on /dev/kvm: KVM_SET_GUEST_DEBUG, the vCPUs' registers, guest RAM.

One gdb thread per vCPU.  The machine runs on its own threads
(``kvm/runner.py``, ``kvm/vcpu_loop.py``); this target stops it by pausing
every vCPU outside KVM_RUN (``KvmMachine.pause``) and resumes it with
``KvmMachine.resume``.  A vCPU that takes a KVM_EXIT_DEBUG calls back
(``KvmMachine.on_debug``, on its own thread): the target records the hit and
asks every vCPU to pause.

How each facility is made (KVM api.rst 4.61 KVM_SET_GUEST_DEBUG):

* software breakpoints: INT3 (0xCC) written into guest RAM at each address
  while the machine runs, the original bytes put back whenever it stops (so
  gdb never reads its own patches), with KVM_GUESTDBG_USE_SW_BP so that the
  guest's #BP exits to us; the exit's PC is the INT3's address;
* hardware breakpoints and watchpoints: the host debugger's DR0-DR3 and DR7
  (KVM_GUESTDBG_USE_HW_BP), four in all, with R/W 00 execute, 01 write, 11
  read/write and LEN 1, 2, 4 or 8 bytes (SDM Vol. 3B §17.2.4-17.2.5); DR6's
  B0-B3 in the exit say which fired.  A read watchpoint is made as read/write
  (x86 has no read-only one) and a write to it is passed over;
* on a software KVM (kvm_pvm: KVM's instruction emulator runs the guest),
  which checks no data breakpoint and cannot emulate INT3, a planted INT3's
  emulation failure is taken as the breakpoint hit, and a write watchpoint is
  made by stepping vCPU 0 and comparing the watched bytes (read and access
  watchpoints are refused there);
* single step: KVM_GUESTDBG_SINGLESTEP on the stepped vCPU, with
  KVM_GUESTDBG_BLOCKIRQ where this KVM has it (no interrupt handler entered by
  the step); a breakpoint at the PC is stepped over first.

Memory is read through the guest's paging (``paging_walk.py`` on the vCPU's
CR0/CR3/CR4) from the RAM KVM maps.
"""

from __future__ import annotations

import threading
import time

from ..kvm import ioctls
from ..kvm.exits import DebugExit as DebugExitKvm
from .paging_walk import linear_to_physical
from .target import GENERAL, REGISTERS, SEGMENTS, X87_RESET, Stop, Target, Unmapped

INT3 = 0xCC
DR6_BS = 1 << 14
DB_VECTOR, BP_VECTOR = 1, 3
RW_BITS = {1: 0b00, 2: 0b01, 3: 0b11, 4: 0b11}    # Z type -> DR7 R/W (execute, write, read/write)
LEN_BITS = {1: 0b00, 2: 0b01, 4: 0b11, 8: 0b10}
WATCH_ACCESS = {2: "write", 3: "read", 4: "access"}
REG_FIELDS = {"eax": "rax", "ecx": "rcx", "edx": "rdx", "ebx": "rbx", "esp": "rsp", "ebp": "rbp",
              "esi": "rsi", "edi": "rdi", "eip": "rip", "eflags": "rflags"}
POLL = 0.02


class KvmTarget(Target):
    name = "kvm"
    MONITOR_COMMANDS = ["info registers", "techniques"]

    def __init__(self, machine):
        self.m = machine
        self.sw: set[int] = set()              # software breakpoint addresses (linear)
        self.patched: dict[int, tuple] = {}    # linear -> (physical, original byte) while running
        self.hw: list[tuple] = []              # (Z type, addr, len), at most four: DR0-DR3
        self.hit = None                        # (vCPU, kvm.exits.DebugExit) of the last stop
        self.hit_event = threading.Event()
        self.ended: Stop | None = None
        flags = machine.system.check_extension(ioctls.KVM_CAP_SET_GUEST_DEBUG2)
        self.block_irq = bool(flags & ioctls.KVM_GUESTDBG_BLOCKIRQ)
        machine.on_debug = self._on_debug

    def threads(self) -> list[int]:
        return list(range(1, len(self.m.vcpus) + 1))

    def _vcpu(self, thread: int):
        return self.m.vcpus[thread - 1]

    def thread_name(self, thread: int) -> str:
        return f"vCPU {thread - 1} (APIC ID {self._vcpu(thread).index})"

    # -- registers ---------------------------------------------------------------------
    def read_registers(self, thread: int) -> dict[str, int]:
        vcpu = self._vcpu(thread)
        r, s = vcpu.get_regs(), vcpu.get_sregs()
        values = {name: getattr(r, REG_FIELDS[name]) & 0xFFFFFFFF for name in (*GENERAL, "eip", "eflags")}
        for name in SEGMENTS:
            values[name] = getattr(s, name).selector
        f = vcpu.get_fpu()
        for i in range(8):
            values[f"st{i}"] = int.from_bytes(bytes(f.fpr[i])[:10], "little")
        values.update(fctrl=f.fcw, fstat=f.fsw, ftag=_full_tag(f.ftwx), fiseg=0, fioff=f.last_ip & 0xFFFFFFFF,
                      foseg=0, fooff=f.last_dp & 0xFFFFFFFF, fop=f.last_opcode & 0x7FF)
        for name, v in X87_RESET.items():
            values.setdefault(name, v)
        return values

    def write_registers(self, thread: int, values: dict[str, int]) -> None:
        vcpu = self._vcpu(thread)
        r = vcpu.get_regs()
        for name, v in values.items():
            if name in REG_FIELDS:
                setattr(r, REG_FIELDS[name], v & 0xFFFFFFFF)
            elif name in SEGMENTS:
                raise ValueError(f"{name}: loading a segment register from the debugger is not supported")
        vcpu.set_regs(r)

    # -- memory ------------------------------------------------------------------------
    def _physical(self, thread: int, lin: int) -> int | None:
        s = self._vcpu(thread).get_sregs()
        ram, size = self.m.memory.ram, self.m.memory.size

        def read32(pa):
            return int.from_bytes(ram[pa:pa + 4], "little") if pa + 4 <= size else None

        def read64(pa):
            return int.from_bytes(ram[pa:pa + 8], "little") if pa + 8 <= size else None
        return linear_to_physical(lin, s.cr0, s.cr3, s.cr4, read32, read64)

    def read_memory(self, thread: int, addr: int, length: int) -> bytes:
        out = bytearray()
        ram, size = self.m.memory.ram, self.m.memory.size
        for i in range(length):
            if i == 0 or (addr + i) & 0xFFF == 0:
                pa = self._physical(thread, addr + i)
            else:
                pa += 1
            if pa is None or pa >= size:
                if not out:
                    raise Unmapped(f"{addr:#x}")
                break
            out.append(ram[pa])
        return bytes(out)

    def write_memory(self, thread: int, addr: int, data: bytes) -> None:
        ram, size = self.m.memory.ram, self.m.memory.size
        targets = [self._physical(thread, addr + i) for i in range(len(data))]
        if any(pa is None or pa >= size for pa in targets):
            raise Unmapped(f"{addr:#x}")
        for pa, b in zip(targets, data):
            ram[pa] = b

    # -- breakpoints -------------------------------------------------------------------
    def insert_breakpoint(self, kind: int, addr: int, length: int) -> bool:
        if kind in (3, 4) and not self.m.host.hardware_assisted:
            return False         # a software KVM's emulator sees no data breakpoint (soft_watches)
        if kind == 0:
            self.sw.add(addr & 0xFFFFFFFF)
            return True
        if kind in RW_BITS:
            if kind > 1 and length not in LEN_BITS:
                return False
            if (kind, addr, length) not in self.hw:
                if len(self.hw) >= 4:
                    raise ValueError("all four debug registers are in use")
                self.hw.append((kind, addr, length))
            return True
        return False

    def remove_breakpoint(self, kind: int, addr: int, length: int) -> bool:
        if kind == 0:
            self.sw.discard(addr & 0xFFFFFFFF)
            return True
        if kind in RW_BITS:
            if (kind, addr, length) in self.hw:
                self.hw.remove((kind, addr, length))
            return True
        return False

    def _debugregs(self) -> list[int]:
        """DR0-DR3 and DR7 for the hardware breakpoints and watchpoints (SDM Vol. 3B §17.2.4)."""
        regs = [0] * 8
        dr7 = 0
        for n, (kind, addr, length) in enumerate(self.hw):
            regs[n] = addr
            size = 1 if kind == 1 else length
            dr7 |= (0b10 << (2 * n)) | (RW_BITS[kind] << (16 + 4 * n)) | (LEN_BITS[size] << (18 + 4 * n))
        regs[7] = dr7 | (0x600 if self.hw else 0)       # GE, and bit 10 (reserved, 1)
        return regs

    def _patch(self) -> None:
        for lin in self.sw:
            pa = self._physical(1, lin)
            if pa is not None and pa < self.m.memory.size:
                self.patched[lin] = (pa, self.m.memory.ram[pa])
                self.m.memory.ram[pa] = INT3

    def _unpatch(self) -> None:
        for pa, byte in self.patched.values():
            self.m.memory.ram[pa] = byte
        self.patched.clear()

    def _arm(self, step_thread: int | None, with_sw: bool) -> None:
        regs = self._debugregs()
        for t in self.threads():
            control = ioctls.KVM_GUESTDBG_ENABLE
            if with_sw and self.sw:
                control |= ioctls.KVM_GUESTDBG_USE_SW_BP
            if self.hw:
                control |= ioctls.KVM_GUESTDBG_USE_HW_BP
            if t == step_thread:
                control |= ioctls.KVM_GUESTDBG_SINGLESTEP
                if self.block_irq:
                    control |= ioctls.KVM_GUESTDBG_BLOCKIRQ
            self._vcpu(t).set_guest_debug(control, regs)

    def _disarm(self) -> None:
        for t in self.threads():
            self._vcpu(t).set_guest_debug(0)

    # -- running -----------------------------------------------------------------------
    def _on_debug(self, vcpu, ex) -> bool:
        """On the vCPU's thread: remember the first hit and pause the machine.  A software
        KVM cannot emulate INT3 (an emulation failure, kvm/runner.recover): one we planted
        is a breakpoint hit, RIP at it; any other is the guest's own."""
        if type(ex) is not DebugExitKvm:
            r = vcpu.get_regs()
            if (vcpu.get_sregs().cs.base + r.rip) & 0xFFFFFFFF not in self.patched:
                return False
        if self.hit is None:
            self.hit = (vcpu, ex)
        self.m.pause_requested = True
        for v in self.m.vcpus:
            if v is not vcpu:
                v.kick()
        self.hit_event.set()
        return True

    def _pc(self, thread: int) -> int:
        vcpu = self._vcpu(thread)
        return (vcpu.get_sregs().cs.base + vcpu.get_regs().rip) & 0xFFFFFFFF

    def resume(self, step_thread: int | None, interrupted) -> Stop:
        if self.ended is not None:
            return self.ended
        if step_thread is None and self.soft_watches():
            return self._run_watched(interrupted)
        # A software breakpoint at a vCPU's PC is stepped over first, unpatched.
        if step_thread is None:
            for t in self.threads():
                if self._pc(t) in self.sw:
                    stop = self._run(t, interrupted, with_sw=False)
                    if stop.kind != "step":
                        return stop
            return self._run(None, interrupted, with_sw=True)
        return self._run(step_thread, interrupted, with_sw=self._pc(step_thread) not in self.sw)

    def soft_watches(self) -> list[tuple]:
        """Write watchpoints made by stepping: on a software KVM, whose instruction emulator
        does not check the debug registers' data breakpoints."""
        if self.m.host.hardware_assisted:
            return []
        return [w for w in self.hw if w[0] == 2]

    def _run_watched(self, interrupted) -> Stop:
        """Step vCPU 0 until a watched value changes (or a breakpoint, the end, Ctrl-C)."""
        watches = self.soft_watches()
        old = {w: self.read_memory(1, w[1], w[2]) for w in watches}
        while True:
            stop = self._run(1, interrupted, with_sw=False)
            if stop.kind != "step":
                return stop
            for w in watches:
                if self.read_memory(1, w[1], w[2]) != old[w]:
                    return Stop("watchpoint", address=w[1], access="write")
            pc = self._pc(1)
            if pc in self.sw or any(k == 1 and a == pc for k, a, _ in self.hw):
                return Stop("breakpoint" if pc in self.sw else "hw-breakpoint", address=pc)
            if interrupted():
                return Stop("interrupt")

    def _run(self, step_thread, interrupted, *, with_sw: bool) -> Stop:
        while True:
            self.hit, _ = None, self.hit_event.clear()
            if with_sw:
                self._patch()
            self._arm(step_thread, with_sw)
            self.m.resume()
            stop = self._wait(interrupted)
            self._unpatch()
            if self.ended is None:
                self._disarm()
            if stop is not None:
                return stop

    def _wait(self, interrupted) -> Stop | None:
        """Until a debug exit, the machine's end or Ctrl-C; None: a hit to pass over (resume)."""
        m = self.m
        while True:
            if self.hit_event.wait(POLL):
                m.pause()
                return self._stop_for(*self.hit)
            if m.stop is not None:
                self.ended = self._end()
                return self.ended
            if interrupted():
                m.pause()
                if self.hit is not None:
                    return self._stop_for(*self.hit)
                return Stop("interrupt")

    def _stop_for(self, vcpu, ex) -> Stop | None:
        thread = self.m.vcpus.index(vcpu) + 1
        if type(ex) is not DebugExitKvm:           # our INT3, which a software KVM cannot run
            return Stop("breakpoint", thread=thread, address=self._pc(thread))
        if ex.exception == BP_VECTOR:
            pc = ex.pc & 0xFFFFFFFF
            if pc not in self.sw and (pc - 1) in self.sw:     # reported after the INT3
                pc -= 1
                r = vcpu.get_regs()
                r.rip -= 1
                vcpu.set_regs(r)
            return Stop("breakpoint", thread=thread, address=pc)
        for n, (kind, addr, length) in enumerate(self.hw):
            if ex.dr6 >> n & 1:
                if kind == 1:
                    return Stop("hw-breakpoint", thread=thread, address=addr)
                return Stop("watchpoint", thread=thread, address=addr, access=WATCH_ACCESS[kind])
        return Stop("step", thread=thread)

    def _end(self) -> Stop:
        m = self.m
        if m.exit_code is not None:
            return Stop("exited", exit_code=m.exit_code)
        return Stop("ended", detail=m.stop.stop_reason if m.stop is not None else "stopped")

    # -- monitor commands --------------------------------------------------------------
    def monitor(self, command: str) -> str | None:
        words = command.split()
        if words == ["info", "registers"]:
            from ..kvm.diagnose import register_dump
            out = []
            for t in self.threads():
                vcpu = self._vcpu(t)
                out.append(f"vCPU {t - 1}: CPL={vcpu.get_sregs().ss.dpl}")
                out.extend(register_dump(vcpu))
            return "\n".join(out) + "\n(the guest's view, on /dev/kvm)\n"
        if words == ["techniques"]:
            from ..vmm.monitor import registered
            return "\n".join(f"{'*' if name == 'kvm' else ' '} {name:14} {cls.summary}"
                             for name, cls in registered().items()) + "\n"
        return None

    def detach(self) -> None:
        self.sw.clear()
        self.hw.clear()

    def kill(self) -> None:
        from ..kvm.exits import STOP, Outcome
        self.ended = Stop("ended", detail="killed from gdb")
        self.m.request_stop(Outcome(STOP, stop_reason="killed from gdb"))


def _full_tag(abridged: int) -> int:
    """FXSAVE's abridged tag byte to the full x87 tag word: 11 (empty) where the bit is 0,
    00 (valid) otherwise (SDM Vol. 1 §10.5.1.1; the finer classes need the registers)."""
    return sum((0 if abridged >> i & 1 else 3) << (2 * i) for i in range(8))


def run_kvm_debugged(kernel, listener, *, start_stopped: bool, trace_file=None, serial_out=None,
                     serial_in=None, memory_bytes: int, cmdline: str = "", modules=(), initrd=None,
                     disk=None, smp: int = 1, cpu: str = "model", linux_entry: str = "auto",
                     on_listen=None, on_connect=None):
    """``run_kvm`` with the gdb stub: the machine runs on a thread of its own, the stub on
    this one (``session.debug_session``).  Returns ``kvm.runner.RunResult``."""
    from ..guests import resolve_kernel
    from ..kvm.runner import KvmMachine
    from .session import debug_session
    machine = KvmMachine(memory_bytes, serial_out=serial_out, serial_in=serial_in, disk=disk,
                         trace_file=trace_file, smp=smp, cpu=cpu)
    try:
        machine.load(str(resolve_kernel(str(kernel))), cmdline=cmdline, modules=modules, initrd=initrd,
                     linux_entry=linux_entry)
        target = KvmTarget(machine)
        machine.pause_requested = True          # every vCPU parks before its first KVM_RUN
        box = {}
        runner = threading.Thread(target=lambda: box.setdefault("res", machine.run()), name="kvm-machine",
                                  daemon=True)
        runner.start()
        if on_listen is not None:
            on_listen()
        if not start_stopped:
            machine.resume()
        try:
            debug_session(target, listener, start_stopped=True, on_connect=on_connect) \
                if start_stopped else _running_session(target, listener, on_connect)
        except KeyboardInterrupt:
            from ..kvm.exits import STOP, Outcome
            machine.request_stop(Outcome(STOP, stop_reason="interrupted (Ctrl-C)"))
        if machine.stop is None:
            from ..kvm.exits import STOP, Outcome
            machine.request_stop(Outcome(STOP, stop_reason="stopped"))
        machine.resume()
        runner.join()
        return box["res"]
    finally:
        machine.close()


def _running_session(target: KvmTarget, listener, on_connect):
    """Without -S: the machine runs until gdb connects (then it is paused) or ends."""
    from .session import debug_session
    m = target.m
    while not listener.pending():
        if m.stop is not None:
            return target._end()
        time.sleep(POLL)
    m.pause()
    return debug_session(target, listener, start_stopped=True, on_connect=on_connect)
