"""The PC/AT's cascaded pair of Intel 8259A Programmable Interrupt Controllers.

Rules from the Intel 8259A datasheet (order no. 231468): initialization
command words ICW1-ICW4, operation command words OCW1 (interrupt mask), OCW2
(EOI, specific EOI, rotation) and OCW3 (read IRR/ISR, poll, special mask),
fully nested priority with rotation, and the cascade: the slave's INT output
drives the master's IR2 input; during INTA the master answers for its own
inputs and lets the slave supply the vector for IR2.

PC/AT wiring (IBM PC/AT Technical Reference): master at ports 0x20/0x21 for
IRQ 0-7, slave at 0xA0/0xA1 for IRQ 8-15, slave cascaded on master IR2.  The
Edge/Level Control Registers at 0x4D0/0x4D1 (ELCR, from the PIIX/ISA bridge,
not the 8259A itself) make individual inputs level-triggered; IRQ 0, 1, 2, 8
and 13 cannot be level (masks 0xF8 / 0xDE, as QEMU has them).

Edge-triggered inputs latch a rising edge in the IRR; lowering the line before
INTA does not withdraw the request (QEMU's behaviour; the datasheet would turn
it into an IR7 default).  Level-triggered inputs follow their line.  When INTA
finds no request (the request went away), the 8259A answers with IR7 of the
chip asked without setting its ISR bit: the spurious IRQ 7 / IRQ 15.

CPU side: :meth:`Pic8259Pair.interrupt_pending` is the master's INT output and
:meth:`Pic8259Pair.acknowledge` performs the INTA cycle.
"""

from __future__ import annotations

from .isa import split_read, split_write

MASTER_CMD, MASTER_DATA = 0x20, 0x21
SLAVE_CMD, SLAVE_DATA = 0xA0, 0xA1
ELCR_MASTER, ELCR_SLAVE = 0x4D0, 0x4D1
CASCADE_IR = 2

# ICW1 bits
ICW1_IC4 = 0x01     # ICW4 needed
ICW1_SNGL = 0x02    # single (no cascade): no ICW3
ICW1_LTIM = 0x08    # level triggered mode
ICW1_INIT = 0x10    # this is ICW1 (on the even port)
# ICW4 bits
ICW4_AEOI = 0x02
ICW4_SFNM = 0x10
# OCW3 bits
OCW3_SELECT = 0x08  # bits 4:3 = 01 mark an OCW3
OCW3_RIS = 0x01     # read ISR (else IRR) ...
OCW3_RR = 0x02      # ... if RR is set
OCW3_P = 0x04       # poll command
OCW3_SMM = 0x20     # special mask mode ...
OCW3_ESMM = 0x40    # ... changed if ESMM is set
# OCW2 commands (bits 7:5 = R SL EOI)
OCW2_ROTATE_AEOI_CLEAR = 0
OCW2_NONSPECIFIC_EOI = 1
OCW2_NOP = 2
OCW2_SPECIFIC_EOI = 3
OCW2_ROTATE_AEOI_SET = 4
OCW2_ROTATE_NONSPECIFIC_EOI = 5
OCW2_SET_PRIORITY = 6
OCW2_ROTATE_SPECIFIC_EOI = 7

ELCR_MASK_MASTER = 0xF8
ELCR_MASK_SLAVE = 0xDE


class Pic8259:
    """One 8259A."""

    def __init__(self, name: str, elcr_mask: int):
        self.name = name
        self.elcr_mask = elcr_mask
        self.elcr = 0
        self.level_mode = False        # ICW1.LTIM: all inputs level-triggered
        self.input_level = 0           # current level of each IR input line
        self.reset()

    def reset(self) -> None:
        """The state ICW1 establishes (datasheet: 'Initialization Command Word 1')."""
        self.irr = 0
        self.isr = 0
        self.imr = 0
        self.priority_add = 0          # IR with the highest priority (rotation)
        self.vector_base = 0           # ICW2 bits 7:3
        self.read_isr = False          # OCW3 RR/RIS: IRR selected after ICW1
        self.poll = False
        self.special_mask = False
        self.init_step = 0             # 0 = operational, 1/2/3 expecting ICW2/3/4
        self.icw4_needed = False
        self.single = False
        self.auto_eoi = False
        self.rotate_on_aeoi = False
        self.special_fully_nested = False
        self.icw3 = 0
        self.edge_seen = self.input_level  # inputs already high do not count as new edges

    # -- priority logic ----------------------------------------------------
    def _level_triggered(self) -> int:
        return 0xFF if self.level_mode else self.elcr

    def set_input(self, ir: int, level: bool) -> None:
        bit = 1 << ir
        if level:
            self.input_level |= bit
        else:
            self.input_level &= ~bit
        if self._level_triggered() & bit:
            if level:
                self.irr |= bit
            else:
                self.irr &= ~bit
        else:
            if level:
                if not self.edge_seen & bit:
                    self.irr |= bit
                self.edge_seen |= bit
            else:
                self.edge_seen &= ~bit

    def _priority(self, mask: int) -> int:
        """Priority rank (0 highest) of the best request in ``mask``; 8 if none."""
        if not mask & 0xFF:
            return 8
        p = 0
        while not mask & (1 << ((p + self.priority_add) & 7)):
            p += 1
        return p

    def best_request(self, is_master: bool) -> int:
        """The IR input that would be acknowledged now, or -1."""
        p = self._priority(self.irr & ~self.imr)
        if p == 8:
            return -1
        in_service = self.isr
        if self.special_mask:
            in_service &= ~self.imr
        if self.special_fully_nested and is_master:
            # SFNM: a slave request may interrupt a slave in service.
            in_service &= ~(1 << CASCADE_IR)
        if p < self._priority(in_service):
            return (p + self.priority_add) & 7
        return -1

    def acknowledge_ir(self, ir: int) -> None:
        """The INTA pulses for input ``ir``: ISR set (unless AEOI), edge request cleared."""
        bit = 1 << ir
        if self.auto_eoi:
            if self.rotate_on_aeoi:
                self.priority_add = (ir + 1) & 7
        else:
            self.isr |= bit
        if not self._level_triggered() & bit:
            self.irr &= ~bit

    # -- register interface --------------------------------------------------
    def write_command(self, value: int) -> None:
        if value & ICW1_INIT:
            elcr, level = self.elcr, self.input_level
            self.reset()
            self.elcr, self.input_level = elcr, level
            self.edge_seen = level
            self.level_mode = bool(value & ICW1_LTIM)
            self.icw4_needed = bool(value & ICW1_IC4)
            self.single = bool(value & ICW1_SNGL)
            self.init_step = 1
            # Level-triggered inputs that are high are requests right away.
            self.irr = level & self._level_triggered()
        elif value & 0x18 == OCW3_SELECT:
            if value & OCW3_P:
                self.poll = True
            if value & OCW3_RR:
                self.read_isr = bool(value & OCW3_RIS)
            if value & OCW3_ESMM:
                self.special_mask = bool(value & OCW3_SMM)
        elif value & 0x18 == 0:
            cmd = value >> 5
            if cmd in (OCW2_ROTATE_AEOI_CLEAR, OCW2_ROTATE_AEOI_SET):
                self.rotate_on_aeoi = cmd == OCW2_ROTATE_AEOI_SET
            elif cmd in (OCW2_NONSPECIFIC_EOI, OCW2_ROTATE_NONSPECIFIC_EOI):
                p = self._priority(self.isr)
                if p != 8:
                    ir = (p + self.priority_add) & 7
                    self.isr &= ~(1 << ir)
                    if cmd == OCW2_ROTATE_NONSPECIFIC_EOI:
                        self.priority_add = (ir + 1) & 7
            elif cmd == OCW2_SPECIFIC_EOI:
                self.isr &= ~(1 << (value & 7))
            elif cmd == OCW2_SET_PRIORITY:
                self.priority_add = ((value & 7) + 1) & 7
            elif cmd == OCW2_ROTATE_SPECIFIC_EOI:
                ir = value & 7
                self.isr &= ~(1 << ir)
                self.priority_add = (ir + 1) & 7
        # value & 0x18 == 0x18 with bit 4 set is ICW1 (handled above).

    def write_data(self, value: int) -> None:
        step = self.init_step
        if step == 0:
            self.imr = value
        elif step == 1:
            self.vector_base = value & 0xF8
            if not self.single:
                self.init_step = 2
            else:
                self.init_step = 3 if self.icw4_needed else 0
        elif step == 2:
            self.icw3 = value
            self.init_step = 3 if self.icw4_needed else 0
        else:
            self.auto_eoi = bool(value & ICW4_AEOI)
            self.special_fully_nested = bool(value & ICW4_SFNM)
            self.init_step = 0

    def read_command(self) -> int:
        return self.isr if self.read_isr else self.irr

    def read_data(self) -> int:
        return self.imr


class Pic8259Pair:
    """Master + slave 8259A as wired in the PC/AT; an IrqSink for ISA IRQ 0-15."""

    def __init__(self) -> None:
        self.master = Pic8259("master", ELCR_MASK_MASTER)
        self.slave = Pic8259("slave", ELCR_MASK_SLAVE)
        self.output = False
        # Called with no arguments whenever the INT output is (or stays) high
        # after a change: the interrupt source relays it to the CPU.
        self.on_output = None
        self.spurious = 0              # INTA cycles answered with IR7 / IR15 (no request)
        self.acknowledged = [0] * 16   # per-IRQ INTA count, for reports

    # -- IrqSink -------------------------------------------------------------
    def set_irq(self, irq: int, level: bool) -> None:
        if 0 <= irq < 8:
            self.master.set_input(irq, level)
        elif 8 <= irq < 16:
            self.slave.set_input(irq - 8, level)
        else:
            return
        self._update()

    def _update(self) -> None:
        slave_int = self.slave.best_request(False) >= 0
        if self.master._level_triggered() & (1 << CASCADE_IR):
            self.master.set_input(CASCADE_IR, slave_int)
        elif slave_int:
            # The slave's INT drives master IR2.  Re-latch it on every update
            # while the slave wants service (as QEMU does), so a second slave
            # request behind an acknowledged one is not lost to the edge logic.
            self.master.set_input(CASCADE_IR, True)
            self.master.set_input(CASCADE_IR, False)
        self.output = self.master.best_request(True) >= 0
        if self.output and self.on_output is not None:
            self.on_output()

    # -- CPU side ----------------------------------------------------------------
    def interrupt_pending(self) -> bool:
        return self.output

    def acknowledge(self) -> int:
        """INTA: the vector of the highest-priority request, now in service."""
        m = self.master
        ir = m.best_request(True)
        if ir < 0:
            self.spurious += 1
            vector = m.vector_base + 7
        elif ir == CASCADE_IR and not m.single:
            m.acknowledge_ir(ir)
            s = self.slave
            ir2 = s.best_request(False)
            if ir2 >= 0:
                s.acknowledge_ir(ir2)
                self.acknowledged[8 + ir2] += 1
            else:
                ir2 = 7
                self.spurious += 1
            vector = s.vector_base + ir2
        else:
            m.acknowledge_ir(ir)
            self.acknowledged[ir] += 1
            vector = m.vector_base + ir
        self._update()
        return vector & 0xFF

    # -- I/O ports -------------------------------------------------------------
    def _poll(self, chip: Pic8259) -> int:
        """OCW3 poll: the next read returns 0x80 | IR of the best request and acknowledges it."""
        chip.poll = False
        ir = chip.best_request(chip is self.master)
        if ir < 0:
            return 0
        chip.acknowledge_ir(ir)
        self._update()
        return 0x80 | ir

    def _read_byte(self, port: int) -> int:
        if port in (MASTER_CMD, MASTER_DATA, SLAVE_CMD, SLAVE_DATA):
            chip = self.master if port < SLAVE_CMD else self.slave
            if chip.poll:
                return self._poll(chip)
            return chip.read_command() if port & 1 == 0 else chip.read_data()
        if port == ELCR_MASTER:
            return self.master.elcr
        if port == ELCR_SLAVE:
            return self.slave.elcr
        return 0xFF

    def _write_byte(self, port: int, value: int) -> None:
        if port in (MASTER_CMD, MASTER_DATA, SLAVE_CMD, SLAVE_DATA):
            chip = self.master if port < SLAVE_CMD else self.slave
            if port & 1 == 0:
                chip.write_command(value)
            else:
                chip.write_data(value)
        elif port in (ELCR_MASTER, ELCR_SLAVE):
            chip = self.master if port == ELCR_MASTER else self.slave
            chip.elcr = value & chip.elcr_mask
            # Inputs switched to level follow their line from now on.
            chip.irr = (chip.irr & ~chip.elcr) | (chip.input_level & chip._level_triggered())
        else:
            return
        self._update()

    def io_read(self, port: int, size: int) -> int:
        return split_read(self._read_byte, port, size)

    def io_write(self, port: int, size: int, value: int) -> None:
        split_write(self._write_byte, port, size, value)

    # -- diagnostics ---------------------------------------------------------
    @property
    def vector_bases(self) -> tuple[int, int]:
        return self.master.vector_base, self.slave.vector_base
