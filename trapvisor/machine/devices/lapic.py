"""The local APIC of the one processor (xAPIC, MMIO at 0xFEE00000).

Rules from the Intel SDM Vol. 3A chapter 10 ("Advanced Programmable Interrupt
Controller"; chapter 11 in recent editions):

* register map (Table 10-1): ID 0x020, version 0x030, TPR 0x080, APR 0x090,
  PPR 0x0A0, EOI 0x0B0, RRD 0x0C0, LDR 0x0D0, DFR 0x0E0, SVR 0x0F0,
  ISR 0x100-0x170, TMR 0x180-0x1F0, IRR 0x200-0x270, ESR 0x280,
  ICR 0x300/0x310, LVT timer 0x320, thermal 0x330, performance 0x340,
  LINT0 0x350, LINT1 0x360, error 0x370, timer initial count 0x380,
  current count 0x390, divide configuration 0x3E0.  Registers are 32 bits on
  16-byte boundaries; like QEMU, accesses narrower than 32 bits are ignored
  on write (reads return the addressed bytes).
* priorities (10.8.3.1): PPR = TPR if TPR[7:4] >= ISRV[7:4] else ISRV[7:4]:0;
  the highest IRR vector is delivered only if its class exceeds PPR's; when it
  no longer qualifies at INTA the APIC returns the spurious vector (10.9).
* EOI (10.8.5): clears the highest ISR bit; if that vector's TMR bit is set
  (level-triggered), the EOI is broadcast to the I/O APIC (``ioapic_eoi``).
* software enable (10.4.7.2): SVR bit 8.  Reset leaves it clear.  While
  disabled, LVT mask bits are set and cannot be cleared and the APIC accepts
  no fixed interrupts; this model then delivers nothing (the PIC's INTR goes
  to the CPU directly, see ``intc.py``).
* the timer (10.5.4): counts down at the bus clock divided by 1..128 (divide
  configuration bits 0, 1, 3), one-shot or periodic (LVT timer bit 17);
  TSC-deadline mode is not offered.  The count is a function of guest time;
  expiry is a Clock timer.  The bus clock is 1 GHz, as QEMU and KVM present it.
* errors (10.5.3): a fixed interrupt with a vector below 16 sets "receive
  illegal vector" (ESR bit 6); the ESR reads what a write to it latched.
* ICR: fixed/lowest-priority IPIs addressed to this APIC (self, all, or a
  matching physical/logical destination) are accepted; INIT, SIPI and NMI to
  other processors go nowhere (there are none).

Reset values (10.4.7.1) except LINT0, which starts as ExtINT unmasked (0x700),
as QEMU leaves the bootstrap processor's LINT0 so that enabling the APIC keeps
the 8259A's interrupts flowing through virtual-wire mode.
"""

from __future__ import annotations

LAPIC_BASE = 0xFEE00000
LAPIC_SIZE = 0x1000

APIC_ID = 0x020
APIC_VERSION = 0x030
APIC_TPR = 0x080
APIC_APR = 0x090
APIC_PPR = 0x0A0
APIC_EOI = 0x0B0
APIC_RRD = 0x0C0
APIC_LDR = 0x0D0
APIC_DFR = 0x0E0
APIC_SVR = 0x0F0
APIC_ISR = 0x100
APIC_TMR = 0x180
APIC_IRR = 0x200
APIC_ESR = 0x280
APIC_ICR_LOW = 0x300
APIC_ICR_HIGH = 0x310
APIC_LVT_TIMER = 0x320
APIC_LVT_THERMAL = 0x330
APIC_LVT_PERF = 0x340
APIC_LVT_LINT0 = 0x350
APIC_LVT_LINT1 = 0x360
APIC_LVT_ERROR = 0x370
APIC_TIMER_INITIAL = 0x380
APIC_TIMER_CURRENT = 0x390
APIC_TIMER_DIVIDE = 0x3E0

# Version register: integrated APIC (0x14) with six LVT entries (max LVT = 5), as QEMU.
APIC_VERSION_VALUE = 0x00050014

SVR_APIC_ENABLED = 0x100
SVR_FOCUS_DISABLED = 0x200

LVT_MASKED = 1 << 16
LVT_TIMER_PERIODIC = 1 << 17
LVT_DELIVERY_STATUS = 1 << 12
LVT_LEVEL_TRIGGER = 1 << 15
LVT_REMOTE_IRR = 1 << 14

DM_FIXED = 0
DM_LOWEST = 1
DM_SMI = 2
DM_NMI = 4
DM_INIT = 5
DM_STARTUP = 6
DM_EXTINT = 7

ICR_DEST_LOGICAL = 1 << 11
ICR_LEVEL_TRIGGER = 1 << 15
SHORTHAND_NONE, SHORTHAND_SELF, SHORTHAND_ALL, SHORTHAND_OTHERS = 0, 1, 2, 3

ESR_SEND_ILLEGAL_VECTOR = 1 << 5
ESR_RECEIVE_ILLEGAL_VECTOR = 1 << 6
ESR_ILLEGAL_REGISTER = 1 << 7

DFR_FLAT = 0xF
DFR_CLUSTER = 0x0

# Writable bits of each LVT entry (SDM Figure 10-8).
_LVT_WRITABLE = {
    APIC_LVT_TIMER: 0x000300FF,            # vector, mask, periodic (no TSC-deadline)
    APIC_LVT_THERMAL: 0x000107FF,
    APIC_LVT_PERF: 0x000107FF,
    APIC_LVT_LINT0: 0x0001A7FF,
    APIC_LVT_LINT1: 0x0001A7FF,
    APIC_LVT_ERROR: 0x000100FF,
}

BUS_HZ = 1_000_000_000
NS_PER_S = 1_000_000_000
# A periodic timer with a tiny count would fire at every block; the model
# delivers at most one timer interrupt per microsecond of guest time.
MIN_TIMER_PERIOD_NS = 1_000


def _highest(bits: int) -> int:
    return bits.bit_length() - 1


class LocalApic:
    def __init__(self, clock, *, apic_id: int = 0, bus_hz: int = BUS_HZ):
        self.clock = clock
        self.apic_id = apic_id
        self.bus_hz = bus_hz
        # Called (no arguments) when an interrupt may have become deliverable.
        self.on_change = None
        # Called with a vector on the EOI of a level-triggered interrupt (I/O APIC).
        self.ioapic_eoi = None
        # IA32_APIC_BASE.EN, owned by whoever implements the MSR.
        self.global_enabled = True
        self.nmi_pending = False      # NMI delivered through LINT1/ICR; the CPU may poll it
        self.timer_fired = 0
        self._timer = None
        self.reset()

    def reset(self) -> None:
        self.clock.cancel(getattr(self, "_timer", None))
        self._timer = None
        self.id = (self.apic_id & 0xFF) << 24
        self.tpr = 0
        self.ldr = 0
        self.dfr = 0xFFFFFFFF
        self.svr = 0xFF
        self.isr = 0
        self.tmr = 0
        self.irr = 0
        self.esr = 0
        self.esr_pending = 0
        self.icr_low = 0
        self.icr_high = 0
        self.lvt = {reg: LVT_MASKED for reg in _LVT_WRITABLE}
        self.lvt[APIC_LVT_LINT0] = DM_EXTINT << 8
        self.timer_initial = 0
        self.timer_divide = 0
        self.timer_load_ns = 0

    # -- state ------------------------------------------------------------------
    @property
    def software_enabled(self) -> bool:
        return self.global_enabled and bool(self.svr & SVR_APIC_ENABLED)

    def extint_enabled(self) -> bool:
        """LINT0 programmed as an unmasked ExtINT input (virtual-wire mode)."""
        v = self.lvt[APIC_LVT_LINT0]
        return not v & LVT_MASKED and (v >> 8) & 7 == DM_EXTINT

    def ppr(self) -> int:
        isrv = _highest(self.isr)
        isrv = max(isrv, 0)
        if (self.tpr >> 4) >= (isrv >> 4):
            return self.tpr
        return isrv & 0xF0

    def interrupt_pending(self) -> bool:
        if not self.software_enabled or not self.irr:
            return False
        return (_highest(self.irr) & 0xF0) > (self.ppr() & 0xF0)

    def acknowledge(self) -> int:
        """INTA for an APIC interrupt: highest IRR vector goes in service."""
        v = _highest(self.irr)
        if v < 0 or (v & 0xF0) <= (self.ppr() & 0xF0):
            return self.svr & 0xFF        # spurious (SDM 10.9)
        self.irr &= ~(1 << v)
        self.isr |= 1 << v
        return v

    def _notify(self) -> None:
        if self.on_change is not None and self.interrupt_pending():
            self.on_change()

    # -- interrupt acceptance --------------------------------------------------------
    def accept(self, vector: int, level_triggered: bool = False) -> None:
        """A fixed interrupt arrives (from the I/O APIC, an IPI or a local source)."""
        if not self.software_enabled:
            return
        vector &= 0xFF
        if vector < 16:
            self._error(ESR_RECEIVE_ILLEGAL_VECTOR)
            return
        bit = 1 << vector
        self.irr |= bit
        if level_triggered:
            self.tmr |= bit
        else:
            self.tmr &= ~bit
        self._notify()

    def deliver(self, mode: int, vector: int, level_triggered: bool = False) -> None:
        """An interrupt message with a delivery mode (I/O APIC redirection, IPI)."""
        if mode in (DM_FIXED, DM_LOWEST):
            self.accept(vector, level_triggered)
        elif mode == DM_NMI:
            self.nmi_pending = True       # one NMI is latched; more before it is taken are lost
            if self.on_change is not None:
                self.on_change()
        # SMI, INIT, SIPI and ExtINT messages are not modelled (one processor, no SMM).

    def matches_destination(self, dest: int, logical: bool) -> bool:
        """Does an APIC message for ``dest`` (8-bit) address this APIC? (SDM 10.6.2)"""
        dest &= 0xFF
        if not logical:
            return dest == 0xFF or dest == (self.id >> 24) & 0xFF
        if dest == 0xFF:
            return True
        ldr = (self.ldr >> 24) & 0xFF
        if (self.dfr >> 28) & 0xF == DFR_FLAT:
            return bool(dest & ldr)
        # cluster model: high nibble cluster, low nibble member bitmap
        return (dest >> 4) == (ldr >> 4) and bool(dest & ldr & 0x0F)

    def _error(self, bit: int) -> None:
        self.esr_pending |= bit
        lvt = self.lvt[APIC_LVT_ERROR]
        if not lvt & LVT_MASKED and (lvt & 0xFF) >= 16 and self.software_enabled:
            self.irr |= 1 << (lvt & 0xFF)
            self.tmr &= ~(1 << (lvt & 0xFF))
            self._notify()

    def eoi(self) -> None:
        v = _highest(self.isr)
        if v < 0:
            return
        bit = 1 << v
        self.isr &= ~bit
        if self.tmr & bit and self.ioapic_eoi is not None:
            self.ioapic_eoi(v)
        self._notify()

    # -- timer ------------------------------------------------------------------------
    def _divisor(self) -> int:
        d = self.timer_divide
        v = (d & 3) | ((d >> 1) & 4)
        return 1 << ((v + 1) & 7)

    def _ticks_to_ns(self, ticks: int) -> int:
        return -(-ticks * self._divisor() * NS_PER_S // self.bus_hz)

    def _elapsed_ticks(self, now: int) -> int:
        return (now - self.timer_load_ns) * self.bus_hz // (NS_PER_S * self._divisor())

    def timer_current(self) -> int:
        init = self.timer_initial
        if init == 0:
            return 0
        d = self._elapsed_ticks(self.clock.now_ns())
        if self.lvt[APIC_LVT_TIMER] & LVT_TIMER_PERIODIC:
            return init - d % init
        return max(0, init - d)

    def _arm_timer(self) -> None:
        self.clock.cancel(self._timer)
        self._timer = None
        init = self.timer_initial
        if init == 0:
            return
        now = self.clock.now_ns()
        d = self._elapsed_ticks(now)
        if self.lvt[APIC_LVT_TIMER] & LVT_TIMER_PERIODIC:
            k = d // init + 1
            deadline = self.timer_load_ns + self._ticks_to_ns(k * init)
            if deadline < now + MIN_TIMER_PERIOD_NS and d >= init:
                deadline = now + MIN_TIMER_PERIOD_NS
        elif d < init:
            deadline = self.timer_load_ns + self._ticks_to_ns(init)
        else:
            return
        self._timer = self.clock.add_timer(deadline, self._timer_expired)

    def _timer_expired(self) -> None:
        self._timer = None
        self.timer_fired += 1
        lvt = self.lvt[APIC_LVT_TIMER]
        if not lvt & LVT_MASKED:
            self.accept(lvt & 0xFF)
        if lvt & LVT_TIMER_PERIODIC:
            self._arm_timer()

    # -- register interface ----------------------------------------------------------------
    def read_register(self, reg: int) -> int:
        if reg == APIC_ID:
            return self.id
        if reg == APIC_VERSION:
            return APIC_VERSION_VALUE
        if reg == APIC_TPR:
            return self.tpr
        if reg == APIC_APR:
            return 0
        if reg == APIC_PPR:
            return self.ppr()
        if reg == APIC_LDR:
            return self.ldr
        if reg == APIC_DFR:
            return self.dfr
        if reg == APIC_SVR:
            return self.svr
        if APIC_ISR <= reg < APIC_ISR + 0x80:
            return (self.isr >> (32 * ((reg - APIC_ISR) >> 4))) & 0xFFFFFFFF
        if APIC_TMR <= reg < APIC_TMR + 0x80:
            return (self.tmr >> (32 * ((reg - APIC_TMR) >> 4))) & 0xFFFFFFFF
        if APIC_IRR <= reg < APIC_IRR + 0x80:
            return (self.irr >> (32 * ((reg - APIC_IRR) >> 4))) & 0xFFFFFFFF
        if reg == APIC_ESR:
            return self.esr
        if reg == APIC_ICR_LOW:
            return self.icr_low
        if reg == APIC_ICR_HIGH:
            return self.icr_high
        if reg in self.lvt:
            return self.lvt[reg]
        if reg == APIC_TIMER_INITIAL:
            return self.timer_initial
        if reg == APIC_TIMER_CURRENT:
            return self.timer_current()
        if reg == APIC_TIMER_DIVIDE:
            return self.timer_divide
        return 0                                    # EOI, RRD, reserved

    def write_register(self, reg: int, value: int) -> None:
        value &= 0xFFFFFFFF
        if reg == APIC_ID:
            self.id = value & 0xFF000000
        elif reg == APIC_TPR:
            self.tpr = value & 0xFF
            self._notify()
        elif reg == APIC_EOI:
            self.eoi()
        elif reg == APIC_LDR:
            self.ldr = value & 0xFF000000
        elif reg == APIC_DFR:
            self.dfr = (value & 0xF0000000) | 0x0FFFFFFF
        elif reg == APIC_SVR:
            self.svr = value & (0xFF | SVR_APIC_ENABLED | SVR_FOCUS_DISABLED)
            if not self.svr & SVR_APIC_ENABLED:
                for r in self.lvt:
                    self.lvt[r] |= LVT_MASKED
            self._notify()
        elif reg == APIC_ESR:
            self.esr, self.esr_pending = self.esr_pending, 0
        elif reg == APIC_ICR_LOW:
            self.icr_low = value & ~(1 << 12)       # delivery status: always idle
            self._send_ipi()
        elif reg == APIC_ICR_HIGH:
            self.icr_high = value & 0xFF000000
        elif reg in self.lvt:
            v = value & _LVT_WRITABLE[reg]
            if not self.software_enabled:
                v |= LVT_MASKED
            # Read-only bits (delivery status, remote IRR) keep their value.
            self.lvt[reg] = v | (self.lvt[reg] & LVT_REMOTE_IRR)
            if reg == APIC_LVT_TIMER:
                self._arm_timer()
        elif reg == APIC_TIMER_INITIAL:
            self.timer_initial = value
            self.timer_load_ns = self.clock.now_ns()
            self._arm_timer()
        elif reg == APIC_TIMER_DIVIDE:
            self.timer_divide = value & 0xB
            self._arm_timer()
        # Version, APR, PPR, RRD, ISR/TMR/IRR, current count: read-only.

    def _send_ipi(self) -> None:
        lo = self.icr_low
        vector = lo & 0xFF
        mode = (lo >> 8) & 7
        shorthand = (lo >> 18) & 3
        if shorthand == SHORTHAND_SELF or shorthand == SHORTHAND_ALL:
            to_self = True
        elif shorthand == SHORTHAND_OTHERS:
            to_self = False
        else:
            to_self = self.matches_destination(self.icr_high >> 24, bool(lo & ICR_DEST_LOGICAL))
        if not to_self:
            return
        if mode in (DM_FIXED, DM_LOWEST) and vector < 16:
            self._error(ESR_SEND_ILLEGAL_VECTOR)
            return
        self.deliver(mode, vector)            # IPIs are edge-triggered

    # -- MMIO ------------------------------------------------------------------------
    def mmio_read(self, offset: int, size: int) -> int:
        reg = offset & 0xFF0
        shift = (offset & 0xF) * 8
        if shift >= 32:
            return 0
        return (self.read_register(reg) >> shift) & ((1 << (8 * size)) - 1)

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        if size != 4 or offset & 0xF:
            return
        self.write_register(offset & 0xFF0, value)
