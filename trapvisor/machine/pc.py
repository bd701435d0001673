"""The simulated PC: CPU, RAM, buses, devices and BIOS-left state, wired together.

This is the bare machine every technique is judged against.  ``PC`` owns one
instance of everything; ``run_kernel`` is the one-call API the tests, the
CLI and the differential harnesses use.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

from ..errors import UserError
from .bus import IoBus, MmioBus
from .clock import VirtualClock
from .cpu import CPU, MachineStop
from .cpu.constants import CS, DS, ES, FS, GS, SS, CR0_PE
from .irq import IrqRouter
from .memory import PhysicalMemory

DEFAULT_MEMORY = 128 << 20
# Guest time per instruction on the virtual clock: a 100-MIPS guest.
DEFAULT_NS_PER_INSTRUCTION = 10


@dataclass
class RunResult:
    exit_code: int | None          # the guest's debug-exit code, if it wrote one
    stop_reason: str | None        # why the machine stopped otherwise
    detail: str = ""
    instructions: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    exceptions: dict = field(default_factory=dict)

    @property
    def mips(self) -> float:
        return self.instructions / self.seconds / 1e6 if self.seconds > 0 else 0.0


class PC:
    def __init__(self, memory_bytes: int = DEFAULT_MEMORY, *, serial_out=None, serial_in=None,
                 disk: str | None = None, strict: bool = False,
                 ns_per_instruction: int = DEFAULT_NS_PER_INSTRUCTION):
        from .platform import build_devices
        from . import bios
        self.memory = PhysicalMemory(memory_bytes)
        self.io_bus = IoBus()
        self.mmio_bus = MmioBus()
        self.irq = IrqRouter()
        self.cpu: CPU | None = None
        self.clock = VirtualClock(ns_per_instruction, counter=self._instructions)
        self.devices = build_devices(
            self.memory, self.clock, self.io_bus, self.mmio_bus, self.irq,
            serial_out=serial_out if serial_out is not None else sys.stdout.buffer,
            serial_in=serial_in, disk=disk, on_exit=self._on_exit, on_reset=self._on_reset)
        self.cpu = CPU(self.memory, self.io_bus, self.mmio_bus, self.devices.intc, self.clock,
                       strict=strict)
        bios.install(self.memory)
        self.boot = None

    def _instructions(self) -> int:
        return self.cpu.icount if self.cpu is not None else 0

    def _on_exit(self, code: int) -> None:
        self.cpu.exit_code = code

    def _on_reset(self) -> None:
        self.cpu.stop = MachineStop("reset", "the guest asked for a system reset (keyboard controller 0xFE)")

    # ------------------------------------------------------------ loading
    def load_kernel(self, path: str, cmdline: str = "", modules=(), raw_load: int | None = None):
        from .loader import load_any
        boot = load_any(self.memory, path, cmdline=cmdline, modules=list(modules), raw_load=raw_load)
        self.apply_boot_state(boot)
        self.boot = boot
        return boot

    def apply_boot_state(self, boot) -> None:
        """Set the CPU to the loader's entry state (Multiboot 0.6.96 §3.2 machine state)."""
        cpu = self.cpu
        cpu.cr0 |= CR0_PE
        code_attr = 0xC09B
        data_attr = 0xC093
        cpu.set_segment_cache(CS, boot.code_selector, 0, 0xFFFFFFFF, code_attr)
        for s in (DS, ES, FS, GS, SS):
            cpu.set_segment_cache(s, boot.data_selector, 0, 0xFFFFFFFF, data_attr)
        cpu.set_cpl(0)
        if getattr(boot, "gdt_base", None) is not None:
            cpu.gdtr = (boot.gdt_base, boot.gdt_limit)
        for i, name in enumerate(("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")):
            cpu.regs[i] = boot.registers.get(name, 0) & 0xFFFFFFFF
        cpu.set_eflags(0x2)
        cpu.eip = boot.entry

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
        try:
            if deadline is None:
                cpu.run(max_instructions)
            else:
                end = cpu.steps() + max_instructions if max_instructions else None
                while cpu.stop is None and cpu.exit_code is None and time.perf_counter() < deadline:
                    step = 200_000 if end is None else min(200_000, end - cpu.steps())
                    if step <= 0:
                        break
                    cpu.run(step)
                    if cpu.halted and cpu.stop is not None:
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
        if reason is None and cpu.exit_code is None and not interrupted:
            reason = "instruction limit" if max_instructions and cpu.steps() - first >= max_instructions \
                else "time limit"
        detail = stop.detail if stop is not None else ""
        return RunResult(cpu.exit_code, reason, detail, cpu.icount, seconds, interrupted,
                         dict(cpu.exception_counts))

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


def run_from_args(args, memory: int) -> int:
    """``trapvisor run`` on the simulated PC."""
    from ..guests import resolve_kernel
    from .platform import parse_serial
    kernel = str(resolve_kernel(args.kernel))
    if not os.path.exists(kernel):
        raise UserError(f"{kernel}: no such file")
    serial_out, serial_in = parse_serial(args.serial)
    raw = int(args.raw_load, 16) if args.raw_load else None
    pc = PC(memory, serial_out=serial_out, serial_in=serial_in, disk=args.disk,
            strict=args.cpu == "strict")
    pc.load_kernel(kernel, cmdline=args.append, modules=args.module, raw_load=raw)
    trace = open(args.trace, "w") if args.trace else None
    try:
        result = pc.run(args.max_instructions, max_seconds=args.max_seconds, trace_file=trace)
    finally:
        if trace:
            trace.close()
    _flush(serial_out)
    return report(pc, result, quiet=args.quiet)


def _flush(out):
    flush = getattr(out, "flush", None)
    if flush:
        try:
            flush()
        except Exception:
            pass


def report(pc: PC, result: RunResult, quiet: bool = False) -> int:
    """Print the end-of-run summary on stderr; return the exit status for the shell."""
    err = sys.stderr
    cpu = pc.cpu
    if result.stop_reason in ("triple fault", "instruction not implemented", "halted forever",
                              "fetch outside RAM", "task switch", "real mode",
                              "virtual-8086 mode", "monitor recursion", "reset"):
        print(f"trapvisor: guest stopped: {result.stop_reason}: {result.detail}", file=err)
        if result.stop_reason != "reset":
            print(cpu.state_dump(), file=err)
    if not quiet:
        what = "interrupted" if result.interrupted else (
            f"exit code {result.exit_code}" if result.exit_code is not None else result.stop_reason)
        print(f"trapvisor: {what}; {result.instructions:,} instructions in {result.seconds:.2f} s "
              f"({result.mips:.2f} MIPS)", file=err)
    if result.interrupted:
        return 130
    if result.exit_code is not None:
        return result.exit_code
    if result.stop_reason == "reset":
        return 0
    return 3 if result.stop_reason in ("instruction limit", "time limit") else 4
