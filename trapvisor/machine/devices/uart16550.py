"""The National Semiconductor NS16550A UART (COM1 at 0x3F8, IRQ 4 on the PC).

Registers from the NS16550A datasheet ("Register Summary", Table II), by
offset from the base port, with LCR.DLAB selecting the divisor latch:

====  ===========================  ===========================
off   read                         write
====  ===========================  ===========================
0     RBR receiver buffer          THR transmitter holding     (DLAB=0)
0     DLL divisor latch low        DLL                         (DLAB=1)
1     IER interrupt enable         IER                         (DLAB=0)
1     DLM divisor latch high       DLM                         (DLAB=1)
2     IIR interrupt identification FCR FIFO control
3     LCR line control             LCR
4     MCR modem control            MCR
5     LSR line status              (factory test: ignored)
6     MSR modem status             (ignored)
7     SCR scratch                  SCR
====  ===========================  ===========================

Interrupt priorities (datasheet Table IV): receiver line status (IIR 0x06),
received data available (0x04) or character timeout (0x0C), THR empty (0x02,
cleared by reading IIR when it is the source, or by writing THR), modem
status (0x00).  IIR bits 7:6 read 11 when the FIFOs are enabled.  The UART's
INTR output is a level; the PC's 8259A sees its rising edges.

Modelling choices:

* Transmission is instantaneous: a byte written to THR goes to the output
  backend at once and THR/TSR are empty again, so the THRE interrupt follows
  every write (after the line was lowered by the write itself).
* Received bytes wait in a host-side queue and enter the 16-byte RX FIFO (or
  the single RBR in 16450 mode) as room frees up, so a console never overruns.
  With the FIFO enabled and fewer bytes than the trigger level, the character
  timeout interrupt is reported at once, as if the four character times had
  already passed.
* OUT2 does not gate INTR (QEMU's behaviour; on a real PC board OUT2 enables
  the IRQ driver): pass ``out2_gates_irq=True`` for the board's behaviour.
* Loopback (MCR bit 4): THR goes to the receiver, and the modem status inputs
  follow the modem control outputs (CTS=RTS, DSR=DTR, RI=OUT1, DCD=OUT2).
* Outside loopback the modem inputs read CTS, DSR and DCD asserted (0xB0).

Output backend: a callable taking ``bytes`` or an object with ``write`` (and
optionally ``flush``).  Input: :meth:`feed` queues bytes (tests, or a machine
that polls a host file descriptor); or pass ``input_source``, a callable
returning the bytes available now (``b""`` if none, never blocking), which is
polled by a Clock timer every ``poll_ns`` of guest time.
"""

from __future__ import annotations

from collections import deque

from .isa import split_read, split_write

COM1_BASE = 0x3F8
COM1_IRQ = 4

RBR_THR_DLL, IER_DLM, IIR_FCR, LCR, MCR, LSR, MSR, SCR = range(8)

IER_ERBFI = 0x01    # received data available
IER_ETBEI = 0x02    # THR empty
IER_ELSI = 0x04     # receiver line status
IER_EDSSI = 0x08    # modem status

IIR_NO_INT = 0x01
IIR_MSI = 0x00
IIR_THRI = 0x02
IIR_RDI = 0x04
IIR_RLSI = 0x06
IIR_CTI = 0x0C
IIR_FIFO_ENABLED = 0xC0

FCR_FIFO_ENABLE = 0x01
FCR_RCVR_RESET = 0x02
FCR_XMIT_RESET = 0x04
FCR_DMA_MODE = 0x08
RX_TRIGGER = (1, 4, 8, 14)

LCR_DLAB = 0x80
LCR_BREAK = 0x40

MCR_DTR = 0x01
MCR_RTS = 0x02
MCR_OUT1 = 0x04
MCR_OUT2 = 0x08
MCR_LOOP = 0x10

LSR_DR = 0x01
LSR_OE = 0x02
LSR_PE = 0x04
LSR_FE = 0x08
LSR_BI = 0x10
LSR_THRE = 0x20
LSR_TEMT = 0x40
LSR_RXFIFO_ERR = 0x80

MSR_DCTS = 0x01
MSR_DDSR = 0x02
MSR_TERI = 0x04
MSR_DDCD = 0x08
MSR_CTS = 0x10
MSR_DSR = 0x20
MSR_RI = 0x40
MSR_DCD = 0x80

FIFO_SIZE = 16


def _writer(out):
    if out is None:
        return lambda data: None
    if callable(out) and not hasattr(out, "write"):
        return out
    write = out.write
    flush = getattr(out, "flush", None)
    if flush is None:
        return write

    def w(data):
        write(data)
        flush()
    return w


class Uart16550:
    def __init__(self, irq=None, out=None, *, clock=None, input_source=None,
                 poll_ns: int = 1_000_000, out2_gates_irq: bool = False, base: int = COM1_BASE):
        self.base = base
        self.irq = irq                     # IrqLine (raise_/lower) or None
        self._out = _writer(out)
        self.clock = clock
        self.input_source = input_source
        self.poll_ns = poll_ns
        self.out2_gates_irq = out2_gates_irq
        self.pending_input: deque[int] = deque()
        self.rx_fifo: deque[int] = deque()
        self.transmitted = 0
        self.dropped = 0
        self.received = 0
        self._irq_level = False
        self._poll_timer = None
        self.reset()
        if input_source is not None and clock is not None:
            self._poll_timer = clock.add_timer(clock.now_ns() + poll_ns, self._poll)

    def reset(self) -> None:
        self.divisor = 0x0C                # 9600 baud, as QEMU resets it
        self.ier = 0
        self.lcr = 0
        self.mcr = MCR_OUT2
        self.lsr = LSR_THRE | LSR_TEMT
        self.msr = MSR_DCD | MSR_DSR | MSR_CTS
        self.scr = 0
        self.fcr = 0
        self.thr_ipending = False
        self.lsr_errors = 0                # OE/PE/FE/BI awaiting an LSR read
        self.rx_fifo.clear()
        self._update_irq()

    # -- host side -----------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Queue bytes as received on the line; raises the RX interrupt as enabled."""
        if not data:
            return
        self.pending_input.extend(data)
        self._refill()
        self._update_irq()

    def _poll(self) -> None:
        try:
            data = self.input_source()
        except OSError:
            data = b""
        if data:
            self.feed(data)
        self._poll_timer = self.clock.add_timer(self.clock.now_ns() + self.poll_ns, self._poll)

    def close(self) -> None:
        if self.clock is not None:
            self.clock.cancel(self._poll_timer)
        self._poll_timer = None

    @property
    def fifo_enabled(self) -> bool:
        return bool(self.fcr & FCR_FIFO_ENABLE)

    def _refill(self) -> None:
        cap = FIFO_SIZE if self.fifo_enabled else 1
        while self.pending_input and len(self.rx_fifo) < cap:
            self.rx_fifo.append(self.pending_input.popleft())
            self.received += 1

    def _transmit(self, byte: int) -> None:
        if self.mcr & MCR_LOOP:
            self.pending_input.append(byte)
            self._refill()
        else:
            self.transmitted += 1
            try:
                self._out(bytes((byte,)))
            except OSError:
                self.dropped += 1           # a closed pipe or socket: the line is dead, not the guest


    # -- interrupts ------------------------------------------------------------
    def _iir(self) -> int:
        ier = self.ier
        if ier & IER_ELSI and self.lsr_errors:
            return IIR_RLSI
        if ier & IER_ERBFI and self.rx_fifo:
            if self.fifo_enabled and len(self.rx_fifo) < RX_TRIGGER[self.fcr >> 6]:
                return IIR_CTI
            return IIR_RDI
        if ier & IER_ETBEI and self.thr_ipending:
            return IIR_THRI
        if ier & IER_EDSSI and self.msr & 0x0F:
            return IIR_MSI
        return IIR_NO_INT

    def _update_irq(self) -> None:
        level = self._iir() != IIR_NO_INT
        if self.out2_gates_irq and not self.mcr & MCR_OUT2:
            level = False
        if level != self._irq_level:
            self._irq_level = level
            if self.irq is not None:
                if level:
                    self.irq.raise_()
                else:
                    self.irq.lower()

    # -- registers -----------------------------------------------------------------
    def _line_status(self) -> int:
        v = LSR_THRE | LSR_TEMT | self.lsr_errors
        if self.rx_fifo:
            v |= LSR_DR
        return v

    def _modem_status(self) -> int:
        if self.mcr & MCR_LOOP:
            m = self.mcr
            v = ((MSR_CTS if m & MCR_RTS else 0) | (MSR_DSR if m & MCR_DTR else 0)
                 | (MSR_RI if m & MCR_OUT1 else 0) | (MSR_DCD if m & MCR_OUT2 else 0))
            return v | (self.msr & 0x0F)
        return self.msr

    def _read_byte(self, port: int) -> int:
        off = port - self.base
        if off == RBR_THR_DLL:
            if self.lcr & LCR_DLAB:
                return self.divisor & 0xFF
            v = self.rx_fifo.popleft() if self.rx_fifo else 0
            self._refill()
            self._update_irq()
            return v
        if off == IER_DLM:
            return (self.divisor >> 8) & 0xFF if self.lcr & LCR_DLAB else self.ier
        if off == IIR_FCR:
            iir = self._iir()
            if iir == IIR_THRI:
                self.thr_ipending = False   # reading IIR clears a THRE interrupt it reports
                self._update_irq()
            return iir | (IIR_FIFO_ENABLED if self.fifo_enabled else 0)
        if off == LCR:
            return self.lcr
        if off == MCR:
            return self.mcr
        if off == LSR:
            v = self._line_status()
            if self.lsr_errors:
                self.lsr_errors = 0
                self._update_irq()
            return v
        if off == MSR:
            v = self._modem_status()
            if self.msr & 0x0F:
                self.msr &= 0xF0            # reading MSR clears the delta bits
                self._update_irq()
            return v
        if off == SCR:
            return self.scr
        return 0xFF

    def _write_byte(self, port: int, value: int) -> None:
        off = port - self.base
        if off == RBR_THR_DLL:
            if self.lcr & LCR_DLAB:
                self.divisor = (self.divisor & 0xFF00) | value
                return
            self.thr_ipending = False
            self._update_irq()              # the write clears THRE ...
            self._transmit(value)
            self.thr_ipending = True        # ... and the byte is gone at once
            self._update_irq()
        elif off == IER_DLM:
            if self.lcr & LCR_DLAB:
                self.divisor = (self.divisor & 0x00FF) | (value << 8)
                return
            old = self.ier
            self.ier = value & 0x0F
            if self.ier & IER_ETBEI and not old & IER_ETBEI:
                # Enabling ETBEI with THR empty raises the interrupt (as QEMU does).
                self.thr_ipending = True
            self._update_irq()
        elif off == IIR_FCR:
            was_enabled = self.fifo_enabled
            self.fcr = value & (FCR_FIFO_ENABLE | FCR_DMA_MODE | 0xC0)
            if value & FCR_RCVR_RESET or was_enabled != self.fifo_enabled:
                # Clearing (or switching) the FIFO discards what it held.
                self.rx_fifo.clear()
            self._refill()
            self._update_irq()
        elif off == LCR:
            self.lcr = value
        elif off == MCR:
            self.mcr = value & 0x1F
            self._refill()
            self._update_irq()
        elif off == SCR:
            self.scr = value
        # LSR and MSR writes are factory-test only: ignored.

    def io_read(self, port: int, size: int) -> int:
        return split_read(self._read_byte, port, size)

    def io_write(self, port: int, size: int, value: int) -> None:
        split_write(self._write_byte, port, size, value)
