"""The simulated PC: CPU, RAM, buses, devices and BIOS-left state, wired together.

This is the bare machine every technique is judged against.  ``PC`` puts
the CPU on a board from ``board.build_board`` (the same one the monitor's VMs
and the KVM backend use) and enters kernels in the loader's entry state
(``loader/boot_state.apply_entry_state``); ``run_kernel`` is the one-call API
the tests and the differential harnesses use.  COM1's output goes to
``serial_out`` (discarded if None); the command line (``trapvisor.cli``)
passes the sink the user chose and prints the end-of-run summary.
"""

from __future__ import annotations

import time

from .board import build_board
from .clock import VirtualClock
from .cpu import CPU, MachineStop
from .cpu.exits import DebugExit
from .loader.boot_state import apply_entry_state, entry_state
from .memory import PhysicalMemory
from .run_result import RunResult, is_guest_failure

DEFAULT_MEMORY = 128 << 20
# Guest time per instruction on the virtual clock: a 100-MIPS guest.
DEFAULT_NS_PER_INSTRUCTION = 10
# Steps between two looks at the wall clock under a time limit: a few ms at the slowest
# (self-modifying code), so --max-seconds holds within a fraction of a second.
TIME_STEP = 10_000


def _discard(data: bytes) -> None:
    pass


class PC:
    def __init__(self, memory_bytes: int = DEFAULT_MEMORY, *, serial_out=None, serial_in=None,
                 disk: str | None = None, strict: bool = False,
                 ns_per_instruction: int = DEFAULT_NS_PER_INSTRUCTION):
        self.cpu: CPU | None = None
        self.clock = VirtualClock(ns_per_instruction, counter=self._instructions)
        self.board = build_board(
            PhysicalMemory(memory_bytes), self.clock,
            serial_out=serial_out if serial_out is not None else _discard,
            serial_in=serial_in, disk=disk, on_exit=self._on_exit, on_reset=self._on_reset)
        b = self.board
        self.memory, self.io_bus, self.mmio_bus, self.irq, self.devices = (
            b.memory, b.io_bus, b.mmio_bus, b.irq, b.devices)
        self.cpu = CPU(self.memory, self.io_bus, self.mmio_bus, self.devices.intc, self.clock,
                       strict=strict)
        self.boot = None

    def _instructions(self) -> int:
        return self.cpu.icount if self.cpu is not None else 0

    def _on_exit(self, code: int) -> None:
        self.cpu.exit_code = code

    def _on_reset(self) -> None:
        self.cpu.stop = MachineStop("reset", "the guest asked for a system reset (keyboard controller 0xFE)")

    # ------------------------------------------------------------ loading
    def load_kernel(self, path: str, cmdline: str = "", modules=(), raw_load: int | None = None,
                    initrd: str | None = None, linux_entry: str = "vmlinux"):
        from .loader import load_any
        boot = load_any(self.memory, path, cmdline=cmdline, modules=list(modules), raw_load=raw_load,
                        initrd=initrd, linux_entry=linux_entry, rsdp=self.board.rsdp)
        self.apply_boot_state(boot)
        self.boot = boot
        return boot

    def apply_boot_state(self, boot) -> None:
        """Set the CPU to the loader's entry state (Multiboot 0.6.96 §3.2 machine state)."""
        apply_entry_state(self.cpu, entry_state(boot))

    # ------------------------------------------------------------ running
    def run(self, max_instructions: int | None = None, max_seconds: float | None = None,
            trace_file=None) -> RunResult:
        cpu = self.cpu
        if trace_file is not None:
            self._install_trace(trace_file)
        start = time.perf_counter()
        first = cpu.steps()
        interrupted = False
        deadline = start + max_seconds if max_seconds else None
        debug = None
        try:
            if deadline is None:
                debug = cpu.run(max_instructions)
            else:
                end = cpu.steps() + max_instructions if max_instructions else None
                while cpu.stop is None and cpu.exit_code is None and time.perf_counter() < deadline:
                    step = TIME_STEP if end is None else min(TIME_STEP, end - cpu.steps())
                    if step <= 0:
                        break
                    debug = cpu.run(step)
                    if debug.__class__ is DebugExit or cpu.halted and cpu.stop is not None:
                        break
        except KeyboardInterrupt:
            interrupted = True
        except MachineStop as stop:   # raised from translation (e.g. fetch outside RAM)
            cpu.stop = stop
        except RecursionError:
            cpu.stop = MachineStop("monitor recursion", "exception delivery recursed without end")
        seconds = time.perf_counter() - start
        stop = cpu.stop
        reason = stop.reason if stop is not None else None
        debug = debug if debug.__class__ is DebugExit else None
        if debug is not None and reason is None:
            reason = "debug"
        if reason is None and cpu.exit_code is None and not interrupted:
            reason = "instruction limit" if max_instructions and cpu.steps() - first >= max_instructions \
                else "time limit"
        detail = stop.detail if stop is not None else ""
        failed = is_guest_failure(reason) and cpu.exit_code is None
        result = RunResult(cpu.exit_code, reason, detail, problem=failed, instructions=cpu.icount,
                           seconds=seconds, interrupted=interrupted, exceptions=dict(cpu.exception_counts),
                           dump=cpu.state_dump().splitlines() if failed else [], debug=debug)
        what = "interrupted" if interrupted else (
            f"exit code {cpu.exit_code}" if cpu.exit_code is not None else reason)
        result.summary = [f"trapvisor: {what}; {cpu.icount:,} instructions in {seconds:.2f} s "
                          f"({result.mips:.2f} MIPS)"]
        return result

    def _install_trace(self, f) -> None:
        """--trace: one line per executed block (EIP and its instructions)."""
        from .cpu.translate import disassemble

        def trace_block(blk):
            for ins in blk.ilist:
                f.write(f"{ins.ip:08x}  {disassemble(ins)}\n")
        self.cpu.hooks.block_fetched = trace_block


def run_kernel(path, *, cmdline: str = "", modules=(), memory_bytes: int = DEFAULT_MEMORY,
               max_instructions: int | None = None, serial_out=None, disk=None,
               strict: bool = False, max_seconds: float | None = None) -> RunResult:
    """Boot ``path`` on a fresh PC and run it; the one-call API for tests and harnesses."""
    pc = PC(memory_bytes, serial_out=serial_out if serial_out is not None else (lambda b: None),
            disk=disk, strict=strict)
    pc.load_kernel(str(path), cmdline=cmdline, modules=modules)
    result = pc.run(max_instructions, max_seconds=max_seconds)
    result.pc = pc
    return result
