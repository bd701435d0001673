"""A virtual machine: a memory partition, a virtual CPU and its own devices.

The virtual CPU (``vm.vcpu``) is the guest's view of its processor: virtual
CPL, IF, IOPL, CR0/CR2/CR3/CR4, GDTR/IDTR/LDTR/TR, as the guest believes
them to be.  It is a full :class:`~trapvisor.machine.cpu.CPU` over the VM's
guest-physical memory, which is what lets interpreter routines be generic:
emulating a guest instruction means executing it on the virtual CPU, with
the guest's privileges, its descriptor tables and its page tables.

Each VM has its own instances of the PC's device models (UART, PIT, PIC,
APIC, CMOS, ATA disk, debug exit), on its own buses, driven by its own
virtual clock: guest time advances with guest instructions, whoever executes
them, so a guest's timers fire at the same guest instruction count natively
and under every technique.
"""

from __future__ import annotations

import io

from ..machine.board import build_board
from ..machine.clock import VirtualClock
from ..machine.cpu import CPU, MachineStop
from ..machine.loader.boot_state import BootState, apply_entry_state, entry_state
from .allocator import Allocator, Partition

NS_PER_INSTRUCTION = 10   # same guest time per instruction as the bare PC (machine/pc.py)


class VmClock(VirtualClock):
    """The VM's virtual clock, with a watchdog on idle time.

    A halted guest (HLT with IF=1) sleeps until its next timer.  If timers
    keep expiring while the guest never runs another instruction -- a
    periodic timer whose interrupt line is masked, say -- a real machine
    sleeps forever, and a monitor that skipped from deadline to deadline
    would spin forever too, outside any instruction limit.  After
    ``IDLE_LIMIT`` expiries in a row with no instruction executed,
    :meth:`skip_to_next_deadline` answers False like a clock with no timer
    armed, and the technique stops the VM ("halted forever", with
    ``idle_stop`` as the detail).
    """

    IDLE_LIMIT = 100_000

    def __init__(self, ns_per_instruction: int, counter):
        super().__init__(ns_per_instruction, counter=counter)
        self._idle_at = -1        # instruction count at the last idle skip
        self._idle_skips = 0
        self.idle_stop = ""       # set when the watchdog refused to skip

    def skip_to_next_deadline(self) -> bool:
        n = self.counter()
        self._idle_skips = self._idle_skips + 1 if n == self._idle_at else 0
        self._idle_at = n
        if self._idle_skips >= self.IDLE_LIMIT:
            self.idle_stop = (f"HLT with IF=1, and {self.IDLE_LIMIT} timer expiries in a row woke "
                              f"nothing (every interrupt line masked?): the guest sleeps forever")
            return False
        return super().skip_to_next_deadline()


class VM:
    def __init__(self, allocator: Allocator, memory_bytes: int, *, name: str = "vm0",
                 serial_out=None, disk=None, strict: bool = False, serial_in=None):
        """``strict``: the machine the VM presents has the strict CPU (every sensitive
        instruction traps at CPL > 0), as the host it runs on (docs/vmm.md)."""
        self.name = name
        self.partition: Partition = allocator.allocate_partition(memory_bytes)
        self.memory = allocator.guest_memory(self.partition)
        self.console = io.BytesIO()
        # Instructions the guest has executed, directly or interpreted; set by the technique.
        self.instructions = lambda: 0
        self.clock = VmClock(NS_PER_INSTRUCTION, counter=lambda: self.instructions())
        out = self.console.write if serial_out is None else self._tee(serial_out)
        self.board = b = build_board(self.memory, self.clock, serial_out=out, serial_in=serial_in, disk=disk,
                                     on_exit=self._on_exit, on_reset=self._on_reset)
        self.io_bus, self.mmio_bus, self.irq, self.devices = b.io_bus, b.mmio_bus, b.irq, b.devices
        self.vcpu = CPU(self.memory, self.io_bus, self.mmio_bus, self.devices.intc, self.clock,
                        strict=strict)
        self.exit_code: int | None = None
        self.stop: MachineStop | None = None

    def _tee(self, serial_out):
        """Console output kept for the report and passed on to the user's sink."""
        def out(data):
            self.console.write(data)
            serial_out(data)
        return out

    def _on_exit(self, code: int) -> None:
        self.exit_code = code
        self.vcpu.exit_code = code

    def _on_reset(self) -> None:
        self.stop = MachineStop("reset", "the guest asked for a system reset")
        self.vcpu.stop = self.stop

    def load_kernel(self, path: str, cmdline: str = "", modules=(), initrd: str | None = None) -> BootState:
        """Load a kernel (and its Multiboot modules, or a bzImage's initrd) into guest memory
        and put the virtual CPU in its entry state."""
        from ..machine.loader import load_any
        boot = load_any(self.memory, path, cmdline=cmdline, modules=list(modules), initrd=initrd,
                        rsdp=self.board.rsdp)
        apply_entry_state(self.vcpu, entry_state(boot))
        return boot

    @property
    def output(self) -> bytes:
        return self.console.getvalue()

    def interrupt_pending(self) -> bool:
        return self.devices.intc.interrupt_pending()
