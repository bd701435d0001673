"""A virtual machine monitor built by Popek & Goldberg's recipe.

Popek & Goldberg 1974 (CACM 17(7), section 3, virtual machine monitors): a control program
CP = <D, A, {v_i}> in which

* the **dispatcher** D sits at the trap location -- the hardware's new PSW in
  ``E[1]`` points at it -- and is entered on every trap;
* the **allocator** A owns the relocation-bounds register and the partition of
  storage; whenever a virtual machine tries to change its R, A decides what
  the real R becomes;
* an **interpreter routine** v_i per privileged instruction simulates, on the
  virtual machine's state, what i would have done on a bare machine.

Everything here is derived from the ISA definition alone.  The interpreter
routines are not written per ISA: ``v_i`` is the ISA's own semantics for ``i``
applied to the *virtual* state (storage = the partition, M and R = the values
the allocator keeps for the VM, P = the real P), with the result written back.
When that virtual execution traps (a privileged instruction in virtual user
mode, a memory trap), applying the semantics *is* reflecting the trap: the
virtual trap sequence stores the virtual old PSW in the guest's ``E[0]`` and
loads the guest's ``E[1]``.  The table holds a routine for every opcode --
that costs nothing -- and the dispatcher reaches one only when its instruction
trapped, which for a virtualizable ISA means a privileged instruction or a
trap the bare machine would take as well.

**The VM map** is the paper's standard one: the CP holds ``E[0..k-1]``, a VM
gets ``w`` consecutive words at ``base``; ``E'[base + i] = E[i]``, ``M' = u``,
``P' = P``, ``R' = (l + base, b')``.  For the last partition in storage
``b' = b``, the paper's map.  For any other the bound is clipped,
``b' = min(b, w - 1 - l)``, so that the real check ``a > b'`` fails exactly when
the bare check ``a > b or a + l >= w`` does: the guest must not reach its
neighbour.  If ``l >= w`` every
access traps on the bare machine, so the CP simulates the trap instead of
running the guest.

**Full and hybrid.**  A full monitor runs every guest instruction directly in
real user mode (virtual supervisor code included) and gains control only by
traps.  A *hybrid* monitor (HVM, Theorem 3) interprets every instruction the
guest executes in virtual supervisor mode, and runs only virtual-user code
directly.

**Recursion.**  A monitor drives its machine through :class:`Hardware`.  The
bare machine is one implementation; a VM of another monitor is the other
(:class:`VirtualHardware`), whose privileged operations go to the outer
monitor's allocator.  So a monitor runs unchanged inside a VM (Theorem 2).

**Faithfulness.**  The CP learns about a guest only through traps.  If an
unprivileged instruction changes the real M or R (a control-sensitive flaw),
nothing tells the CP: its records go stale and the hardware runs on with what
the guest did.  Pausing a guest (to run another, or because a step budget ran
out) saves and restores the real PSW verbatim, so it repairs nothing.  The
bare hardware audits every directly executed instruction for accesses outside
the running guest's partition and for changes of M or R; those are the
resource-control measurements.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from trapvisor.theory.errors import TheoryError
from trapvisor.theory.isa import ISA
from trapvisor.theory.formal_machine import PSW, Execution, Machine, MemoryTrap, Mode, Reloc, State

S, U = Mode.S, Mode.U

#: words the CP keeps for itself: E[0] (old PSW), E[1] (new PSW -> D), D, spare
CP_WORDS = 4
#: where the dispatcher sits
DISPATCHER = 2


def _align(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


# ---------------------------------------------------------------------------
# hardware: what a CP drives


@dataclass
class RunResult:
    """What ``Hardware.run`` reports: how many instructions completed, and why it stopped."""

    steps: int
    trapped: bool = False
    fixpoint: bool = False
    lost_control: bool = False


@dataclass
class Violation:
    """A resource-control failure seen by the bare hardware's audit."""

    what: str
    instruction: str
    before: State
    after: State

    def __str__(self) -> str:
        return f"{self.what}: {self.instruction}  {self.before}  ->  {self.after}"


class Hardware:
    """The machine a CP runs on: storage, the PSW, and running until a trap."""

    q: int
    isa: ISA

    def read(self, addr: int) -> int:
        raise NotImplementedError

    def write(self, addr: int, value: int) -> None:
        raise NotImplementedError

    def get_psw(self) -> PSW:
        raise NotImplementedError

    def set_psw(self, psw: PSW) -> None:
        raise NotImplementedError

    def run(self, budget: int, region: tuple[int, int]) -> RunResult:
        """Run from the current PSW until a trap, a fixed point or ``budget`` instructions.

        ``region`` = ``(lo, hi)``: the words the running program may touch;
        the audit flags any other access.
        """
        raise NotImplementedError


class BareHardware(Hardware):
    """The real machine: a :class:`Machine` and its state, with an audit."""

    def __init__(self, isa: ISA, q: int):
        self.isa = isa
        self.q = q
        self.machine = Machine(isa, q)
        self.state = self.machine.state([0] * q)
        self.direct = 0  # instructions completed without a trap
        self.traps = 0
        self.violations: list[Violation] = []

    def read(self, addr: int) -> int:
        return self.state.E[addr]

    def write(self, addr: int, value: int) -> None:
        E = list(self.state.E)
        E[addr] = value & self.isa.fmt.mask
        self.state = self.state._replace(E=tuple(E))

    def get_psw(self) -> PSW:
        return self.state.psw

    def set_psw(self, psw: PSW) -> None:
        self.state = State(self.state.E, psw.M, psw.P, psw.R)

    def run(self, budget: int, region: tuple[int, int]) -> RunResult:
        lo, hi = region
        done = 0
        while done < budget:
            before = self.state
            ex = self.machine.step(before)
            self.state = ex.after
            if ex.trapped:
                self.traps += 1
                return RunResult(done, trapped=True)
            done += 1
            self.direct += 1
            self._audit(ex, lo, hi)
            if ex.after == before:
                return RunResult(done, fixpoint=True)
        return RunResult(done)

    def _audit(self, ex: Execution, lo: int, hi: int) -> None:
        name = str(ex.instance)
        if ex.before.M is S:
            self.violations.append(Violation("guest instruction ran in real supervisor mode", name, ex.before, ex.after))
        if (ex.after.M, ex.after.R) != (ex.before.M, ex.before.R):
            self.violations.append(Violation("M or R changed without a trap (allocator bypassed)", name, ex.before, ex.after))
        for kind, addrs in (("read", ex.reads), ("wrote", ex.writes)):
            for a in addrs:
                if not lo <= a < hi:
                    self.violations.append(Violation(f"{kind} E[{a}] outside the partition [{lo},{hi})", name, ex.before, ex.after))


class VirtualHardware(Hardware):
    """A VM of an outer CP, seen as hardware by a CP running inside it."""

    def __init__(self, outer: "RecipeVMM", vm: "VM"):
        self.outer, self.vm = outer, vm
        self.isa = outer.isa
        self.q = vm.size

    def read(self, addr: int) -> int:
        if not 0 <= addr < self.vm.size:
            raise MemoryTrap(f"{addr} outside VM storage")
        return self.outer.hw.read(self.vm.base + addr)

    def write(self, addr: int, value: int) -> None:
        if not 0 <= addr < self.vm.size:
            raise MemoryTrap(f"{addr} outside VM storage")
        self.outer.hw.write(self.vm.base + addr, value)

    def get_psw(self) -> PSW:
        return self.outer.virtual_psw(self.vm)

    def set_psw(self, psw: PSW) -> None:
        # The inner CP's load-PSW: a privileged act of virtual-supervisor code,
        # interpreted by the outer CP, whose allocator decides the real R.
        self.outer.load_virtual_psw(self.vm, psw)

    def run(self, budget: int, region: tuple[int, int]) -> RunResult:
        lo, hi = region
        return self.outer.run_vm(self.vm, budget, (self.vm.base + lo, self.vm.base + hi), stop_at_trap=True)


# ---------------------------------------------------------------------------
# the control program


@dataclass
class VM:
    """The allocator's record of one virtual machine."""

    ident: int
    base: int  # first word of the partition, in the CP's storage
    size: int  # w
    vmode: Mode = S
    P: int = 0
    vR: Reloc = Reloc(0, 0)
    saved_psw: PSW | None = None  # real PSW of a paused guest, restored verbatim
    guest_steps: int = 0
    direct: int = 0
    interpreted: Counter = field(default_factory=Counter)  # mnemonic -> count (no virtual trap)
    reflected: Counter = field(default_factory=Counter)  # trap kind -> count

    @property
    def region(self) -> tuple[int, int]:
        return (self.base, self.base + self.size)


class Allocator:
    """A: owns R and the partition of storage; invoked on every change of R."""

    def __init__(self, q: int, alignment: int):
        self.q = q
        self.alignment = alignment
        self.next_free = _align(CP_WORDS, alignment)
        self.changes = 0

    def partition(self, size: int) -> tuple[int, int]:
        """(base, size) of a new partition: ``size`` words at an aligned base.

        The words up to the next aligned base stay unused (and outside the
        VM: its bound is clipped at ``size``), so a VM sees exactly the
        storage of the bare machine it stands for.
        """
        base = self.next_free
        if base + size > self.q:
            raise TheoryError(f"no room for a {size}-word VM in {self.q} words")
        self.next_free = _align(base + size, self.alignment)
        return base, size

    def assign(self, vm: VM, vR: Reloc) -> None:
        """The VM asks for R = vR: record it (the real R is derived on entry)."""
        if vR != vm.vR:
            self.changes += 1
        vm.vR = vR

    def real_reloc(self, vm: VM) -> Reloc | None:
        """The VM map of R; None when every access traps on the bare machine.

        For the last partition in storage the map is the paper's exactly,
        ``(l + base, b)``: the hardware's own ``a + l >= q`` check then stops
        the guest at its end.  Any other partition needs ``b`` clipped so the
        guest cannot reach its neighbour -- which a guest could notice if the
        ISA let it read ``b`` (see ``programs/toy_isa.py``).
        """
        l, b = vm.vR
        if l >= vm.size:
            return None
        if vm.base + vm.size == self.q:
            return Reloc(vm.base + l, b)
        return Reloc(vm.base + l, min(b, vm.size - 1 - l))


class RecipeVMM:
    """CP = <D, A, {v_i}> for one ISA, on one piece of hardware."""

    def __init__(self, isa: ISA, hw: Hardware, *, hybrid: bool = False):
        self.isa = isa
        self.hw = hw
        self.hybrid = hybrid
        self.allocator = Allocator(hw.q, isa.partition_alignment)
        self.vms: list[VM] = []
        self._loaded: VM | None = None  # whose context is live on the hardware
        self._vmachines: dict[int, Machine] = {}
        # {v_i}: one generic interpreter routine per instruction of the ISA.
        self.interpreters = {ins.opcode: self._make_interpreter(ins.mnemonic) for ins in isa.instructions}
        self.dispatches = 0
        self.lost_control: str | None = None  # set if a trap stops reaching D
        # The CP's storage: the new PSW in E[1] sends every trap to D.
        self.home_psw = PSW(S, DISPATCHER, Reloc(0, hw.q - 1))
        hw.write(1, isa.fmt.pack_psw(self.home_psw))

    # -- VMs ---------------------------------------------------------------
    def create_vm(self, image: tuple[int, ...] | list[int], start: PSW, size: int | None = None) -> VM:
        """Give a guest image its partition and its initial virtual PSW."""
        base, size = self.allocator.partition(size or len(image))
        if len(image) > size:
            raise ValueError("image larger than its partition")
        vm = VM(len(self.vms), base, size, start.M, start.P, start.R)
        for i in range(size):
            self.hw.write(base + i, image[i] if i < len(image) else 0)
        self.vms.append(vm)
        return vm

    def create_nested(self, size: int, *, hybrid: bool | None = None) -> "RecipeVMM":
        """A VM whose supervisor is another CP: recursion (Theorem 2)."""
        vm = self.create_vm([0] * size, PSW(S, DISPATCHER, Reloc(0, size - 1)), size)
        return RecipeVMM(self.isa, VirtualHardware(self, vm), hybrid=self.hybrid if hybrid is None else hybrid)

    def vmachine(self, vm: VM) -> Machine:
        m = self._vmachines.get(vm.size)
        if m is None:
            m = self._vmachines[vm.size] = Machine(self.isa, vm.size)
        return m

    def virtual_psw(self, vm: VM) -> PSW:
        return PSW(vm.vmode, vm.P, vm.vR)

    def virtual_state(self, vm: VM) -> State:
        """The guest as it sees itself: the VM map, inverted."""
        E = tuple(self.hw.read(vm.base + i) for i in range(vm.size))
        return State(E, vm.vmode, vm.P, vm.vR)

    def load_virtual_psw(self, vm: VM, psw: PSW) -> None:
        vm.vmode, vm.P = psw.M, psw.P
        self.allocator.assign(vm, psw.R)
        vm.saved_psw = None

    # -- {v_i} -------------------------------------------------------------
    def _make_interpreter(self, mnemonic: str):
        def v(vm: VM, vstate: State, instance) -> Execution:
            ex = self.vmachine(vm).execute(instance, vstate)
            self._commit(vm, ex)
            return ex

        v.__name__ = f"v_{mnemonic}"
        return v

    def _commit(self, vm: VM, ex: Execution) -> None:
        for i, (old, new) in enumerate(zip(ex.before.E, ex.after.E)):
            if old != new:
                self.hw.write(vm.base + i, new)
        self.load_virtual_psw(vm, ex.after.psw)
        if ex.trapped:
            vm.reflected[str(ex.trap)] += 1
        else:
            vm.interpreted[ex.instance.op.mnemonic if ex.instance else "?"] += 1

    # -- D -----------------------------------------------------------------
    def dispatch(self, vm: VM) -> Execution:
        """D: simulate the guest instruction at the virtual P on the virtual state."""
        self.dispatches += 1
        vstate = self.virtual_state(vm)
        vmachine = self.vmachine(vm)
        try:
            instance = vmachine.fetch(vstate)
        except MemoryTrap:
            instance = None
        if instance is None:  # fetch memory trap or illegal word: the bare machine traps too
            ex = vmachine.step(vstate)
            self._commit(vm, ex)
            return ex
        return self.interpreters[instance.op.opcode](vm, vstate, instance)

    # -- running -----------------------------------------------------------
    def _switch_to(self, vm: VM) -> None:
        """Make ``vm``'s context live on the hardware.

        A paused guest's real PSW was saved verbatim when it stopped; putting
        it back is a context switch, not a trap, so the allocator is not
        consulted and nothing a flawed instruction did is undone.
        """
        if self._loaded is vm:
            return
        self._loaded = vm
        if vm.saved_psw is not None:
            self.hw.set_psw(vm.saved_psw)

    def run_vm(self, vm: VM, budget: int, region: tuple[int, int] | None = None, *, stop_at_trap: bool = False) -> RunResult:
        """Run ``vm`` for up to ``budget`` guest instructions.

        With ``stop_at_trap`` (the VM is the hardware of an inner CP) return
        as soon as a trap has been reflected into the VM: that is the inner
        CP's dispatcher being entered.
        """
        if self.lost_control:
            return RunResult(0, lost_control=True)
        region = region or vm.region
        self._switch_to(vm)
        steps = 0
        while steps < budget:
            if vm.saved_psw is None and (self.hybrid and vm.vmode is S or self.allocator.real_reloc(vm) is None):
                # Interpret: a hybrid monitor's virtual-supervisor code, or a
                # guest whose R makes every access trap.
                before = self.virtual_state(vm)
                ex = self.dispatch(vm)
                vm.guest_steps += 1
                if ex.trapped and stop_at_trap:
                    # Like the bare hardware, a VM used as hardware does not
                    # count the instruction that trapped: the CP inside it
                    # accounts for it when its dispatcher handles the trap.
                    return RunResult(steps, trapped=True)
                steps += 1
                if ex.after == before:
                    return RunResult(steps, fixpoint=True)
                continue
            if vm.saved_psw is None:
                self.hw.set_psw(PSW(U, vm.P, self.allocator.real_reloc(vm)))
                vm.saved_psw = self.hw.get_psw()
            r = self.hw.run(budget - steps, region)
            if r.lost_control:
                self.lost_control = self.lost_control or "the hardware below lost control"
                return RunResult(steps + r.steps, lost_control=True)
            steps += r.steps
            vm.guest_steps += r.steps
            vm.direct += r.steps
            if not r.trapped:
                vm.saved_psw = self.hw.get_psw()
                vm.P = vm.saved_psw.P
                if r.fixpoint:
                    return RunResult(steps, fixpoint=True)
                continue
            # A trap: the hardware stored the real old PSW in E[0] and loaded
            # E[1], which points here.
            old = self.isa.fmt.unpack_psw(self.hw.read(0))
            vm.P = old.P
            vm.saved_psw = None
            landed = self.hw.get_psw()
            if landed != self.home_psw:
                # E[1] is outside every partition, so only a guest that escaped
                # its partition can have changed it: the CP has lost control.
                self.lost_control = f"a trap went to {landed} instead of the dispatcher {self.home_psw}"
                return RunResult(steps, lost_control=True)
            ex = self.dispatch(vm)
            vm.guest_steps += 1
            if ex.trapped and stop_at_trap:
                return RunResult(steps, trapped=True)
            steps += 1
        return RunResult(steps)

    def run_guest(self, vm: VM, steps: int) -> State:
        """Run a guest for ``steps`` instructions (or to a fixed point); its virtual state."""
        self.run_vm(vm, steps)
        return self.guest_state(vm)

    def guest_state(self, vm: VM) -> State:
        psw = vm.saved_psw
        if psw is not None:
            vm.P = psw.P
        return self.virtual_state(vm)


def bare_hardware_for(isa: ISA, guest_sizes: list[int], nesting: int = 0) -> BareHardware:
    """A bare machine just large enough for the partitions and nested CPs asked for."""
    a = isa.partition_alignment
    cp = _align(CP_WORDS, a)
    need = cp + sum(_align(s, a) for s in guest_sizes) + nesting * cp
    if need > isa.fmt.max_q:
        raise TheoryError(f"cannot host this: {need} words needed (partitions, nested monitors), "
                          f"the word format of ISA {isa.name} allows {isa.fmt.max_q}")
    return BareHardware(isa, need)
