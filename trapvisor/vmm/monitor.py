"""The monitor interface: what a technique is, and the registry of techniques.

A technique is a :class:`Monitor` subclass registered by name.  It attaches
to a VM (or, for ``native``, a bare PC) when it is built, drives the CPU
through the CPU's intercept controls and typed exits (``machine/cpu/
intercepts.py``, ``exits.py``), routes each exit through its dispatcher
(``dispatcher.py``) and reports a :class:`~.techniques.base.TechniqueResult`
with its statistics and events.  No technique changes the CPU's code: the
interface is the controls, the exits and the CPU's hooks (docs/architecture.md
says how to add one in five steps).

Lifecycle::

    m = registry.get("trap-emulate")(RunOptions(kernel, cmdline=...))
    result = m.run(max_instructions)

Several VMs on one host CPU (``vmm/scheduler.py``): a technique that can be
time-sliced implements :meth:`Monitor.run_slice`, and :meth:`enter`/
:meth:`leave` for the world switch; one that uses a simulated host CPU takes
the shared :class:`Host` it is given.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar

from ..errors import UserError
from ..machine.bus import IoBus, MmioBus
from ..machine.cpu import CPU
from ..machine.memory import PhysicalMemory
from .allocator import Allocator
from .costmodel import CostModel


@dataclass
class RunOptions:
    """What a run of one guest under one technique is given (the CLI's options)."""

    kernel: str
    cmdline: str = ""
    memory_bytes: int = 128 << 20
    costs: CostModel = field(default_factory=CostModel.default)
    strict: bool = False              # the host CPU variant: every sensitive instruction traps
    serial_out: object = None         # callable(bytes) receiving the guest's console output
    keep_events: bool = False         # keep every event (HTML report), not only the counts
    trace_file: object = None         # --trace: one JSON event per line
    audit: bool = False               # record sensitive-instruction executions (divergences)
    shadow_cache: int | None = None   # shadow address spaces kept across CR3 loads
    modules: tuple = ()               # Multiboot modules
    initrd: str | None = None         # a Linux bzImage's initial ramdisk
    serial_in: object = None          # callable() -> bytes typed into COM1 (non-blocking)
    disk: str | None = None           # ATA primary master image
    max_seconds: float | None = None  # host wall time limit
    name: str = "vm0"

    # Options a technique must say it honours before it is given them (None/empty: not set).
    OPTIONAL = ("shadow_cache", "modules", "disk", "trace_file", "audit", "initrd", "serial_in")


# The command-line flag of each optional run option, for error messages.
FLAGS = {"shadow_cache": "--shadow-cache", "modules": "--module", "disk": "--disk",
         "trace_file": "--trace", "audit": "auditing of sensitive instructions", "initrd": "--initrd",
         "serial_in": "console input"}


class Host:
    """A simulated host machine shared by the VMs of one scheduler: host memory
    (the monitor region, then one partition per VM) and one host CPU with no
    devices of its own (every port and interrupt line is the monitor's)."""

    def __init__(self, guest_sizes, *, strict: bool = False, vmx: str | None = None,
                 host_memory: int | None = None):
        """``vmx``: the host CPU has VMX with that capability profile (machine/cpu/vmx).
        ``host_memory``: overcommit. The VMs' frames come on demand from a pool of
        that many bytes (after the monitor region) through one pmap per VM (pmap.py),
        instead of one fixed partition each."""
        frames = None
        guest_sizes = list(guest_sizes)
        if host_memory is None:
            self.memory = PhysicalMemory(Allocator.host_size_for(list(guest_sizes)))
        else:
            from .pmap import HostFrames, check_mappings
            check_mappings(guest_sizes)
            frames = HostFrames(host_memory)
            self.memory = frames.memory
        self.allocator = Allocator(self.memory)
        self.allocator.frames = frames
        self.cpu = CPU(self.memory, IoBus(), MmioBus(), None, None, strict=strict, vmx=vmx)


# Exits in a row that retire nothing and deliver nothing before a VM is stopped.
MAX_IDLE_EXITS = 10_000


class LivelockWatchdog:
    """Bounds the exits that make no step of the guest's (a hidden shadow fill, an
    EPT fill, a hypercall that fails): a monitor that loops on one would otherwise
    spin outside every limit.  Every technique's run loop asks it after each exit."""

    __slots__ = ("progress_at", "idle")

    def __init__(self):
        self.progress_at, self.idle = -1, 0

    def stuck(self, steps: int) -> bool:
        """After an exit, with the guest's step count: more than MAX_IDLE_EXITS in a row
        without a step?"""
        if steps != self.progress_at:
            self.progress_at, self.idle = steps, 0
            return False
        self.idle += 1
        return self.idle > MAX_IDLE_EXITS


class Monitor:
    """Base of every technique.  Subclasses set the class attributes and implement
    ``run_slice`` and ``result`` (and ``enter``/``leave`` if they share a host CPU)."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""               # one line for `trapvisor techniques`
    honours: ClassVar[frozenset] = frozenset()  # which RunOptions.OPTIONAL it supports
    time_sliced: ClassVar[bool] = True        # can run as one VM of `trapvisor vms`
    uses_host: ClassVar[bool] = False         # runs the guest on a simulated host CPU
    strict_cpu: ClassVar[bool] = True         # can present the strict CPU variant (--cpu strict)
    paravirtual: ClassVar[bool] = False       # runs only kernels ported to it (guest_kernel picks them)

    def __init__(self, options: RunOptions, host: Host | None = None):
        self.options = options
        self.costs = options.costs
        self.strict = options.strict
        self.seconds = 0.0           # host wall time spent running this VM
        self.deadline = None         # perf_counter() value past which the run stops

    @classmethod
    def build(cls, kernel: str, *, host: Host | None = None, **options) -> "Monitor":
        """``cls(RunOptions(kernel, **options), host)``: the short form tests use."""
        return cls(RunOptions(kernel, **options), host)

    @classmethod
    def guest_kernel(cls, kernel: str) -> str:
        """The kernel this technique runs for ``kernel``: itself, except for a technique
        that runs a ported build of it (``pv`` runs a guest's paravirtual build)."""
        return kernel

    @classmethod
    def preflight(cls, options: RunOptions) -> None:
        """Refuse, with a UserError, a run this host cannot give the technique (before any
        guest is built): e.g. no usable /dev/kvm."""

    @classmethod
    def unsupported(cls, options: RunOptions) -> list[str]:
        """The command-line flags set in ``options`` that this technique cannot honour."""
        return [FLAGS[opt] for opt in RunOptions.OPTIONAL
                if getattr(options, opt) not in (None, (), [], False) and opt not in cls.honours]

    # -- running ------------------------------------------------------------------
    def run(self, max_instructions: int):
        """Run the guest to its end (or a limit) and report."""
        self.start_clock()
        self.run_slice(max_instructions, max_instructions)
        return self.result()

    def start_clock(self) -> None:
        if self.options.max_seconds is not None and self.deadline is None:
            self.deadline = time.perf_counter() + self.options.max_seconds

    def run_slice(self, until: int, max_instructions: int) -> bool:
        """Run until the guest has taken ``until`` steps in all, or ends.  True when
        it has ended (exit, stop, a limit)."""
        raise NotImplementedError

    def instructions(self) -> int:
        """Guest instructions executed so far, however executed."""
        raise NotImplementedError

    def steps(self) -> int:
        """What the instruction limit and time slices count: guest instructions plus
        the events delivered to the guest (as ``CPU.steps`` on the bare machine),
        so that a guest that only ever faults still reaches its limit."""
        raise NotImplementedError

    def result(self):
        raise NotImplementedError

    # -- world switch (several VMs on one host CPU) ----------------------------------
    def enter(self) -> None:
        """Put this VM on the host CPU."""

    def leave(self) -> None:
        """Take this VM off the host CPU."""


_REGISTRY: dict[str, type[Monitor]] = {}


def register(cls: type[Monitor]) -> type[Monitor]:
    """Class decorator: make a technique known by its ``name``."""
    if not cls.name or not cls.summary:
        raise ValueError(f"{cls.__name__}: a technique needs a name and a one-line summary")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"technique {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def registered() -> dict[str, type[Monitor]]:
    """Every technique, by name, in registration order."""
    from . import techniques  # noqa: F401  (each technique module registers itself)
    return dict(_REGISTRY)


def get(name: str) -> type[Monitor]:
    techniques = registered()
    cls = techniques.get(name)
    if cls is None:
        raise UserError(f"unknown technique {name!r}; known: {', '.join(techniques)}")
    return cls
