"""The PC's devices, one module each.

Every device sits on the I/O-port bus or the MMIO bus (``bus.py`` contract),
raises ISA IRQ lines through an :class:`~trapvisor.machine.irq.IrqRouter` and
reads time from a :class:`~trapvisor.machine.clock.Clock`.  None of them knows
the CPU, a VMM or KVM, so one model serves the simulated PC and every monitor.

A guest can write anything to any port: no device raises a Python exception on
guest input.  Values the hardware would ignore are ignored; values it would
misbehave on are handled as the datasheet says or, where it says nothing, as
QEMU does (each module says which).

The one deliberate exception is :class:`~.debug_exit.GuestExit`, raised by the
isa-debug-exit device to end the run (see ``debug_exit.py``), and whatever the
machine's own ``on_reset`` callback chooses to raise.

``platform.py`` wires them into a PC.
"""
