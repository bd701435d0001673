"""Control and debug registers, and the other instructions on the processor's
own state: MOV to/from CR0 CR2 CR3 CR4, CLTS, LMSW, SMSW, MOV to/from
DR0-DR7, INVLPG, INVD, WBINVD, HLT, and the x87 interface's #NM checks (x87
instructions, WAIT).

Control registers: SDM Vol. 3A §2.5 and Vol. 2 MOV (Control Registers); debug
registers and the breakpoints they enable: SDM Vol. 3A §17.2; the x87 #NM
rules: SDM Vol. 3A §2.5, Table 2-2.  All but SMSW and the x87 ones are
privileged (#GP(0) at CPL > 0, SDM Vol. 3A §5.9); SMSW is sensitive but
unprivileged, so it traps on the strict CPU (``privilege.py``).  MOV to or
from a segment register is compiled by ``ops_far.py``; the paging side of
the CR writes (TLB flushes) is in ``paging.py``.
"""

from __future__ import annotations

import iced_x86 as iced

from .constants import CR0_PE, CR0_PG, CR0_TS, CR4_SUPPORTED, GP, UD

CR4_VMXE = 1 << 13    # VMX enable (SDM Vol. 3C §23.7); accepted only by a CPU with VMX
from .cpu import CpuFault, ExitFault, MachineStop
from .exits import ControlRegisterExit, DebugRegisterExit, HaltExit, InstructionExit
from .operands import (
    CREG, DREG, GPR, K, SEGREG, Unsupported, ea_fn, mem_segment, op_size, reader16, reg_reader,
    reg_writer, writer,
)
from .ops_far import compile_mov_from_sreg, compile_mov_sreg
from .privilege import require_cpl0, strict_trap
from .registry import END, JUMP, NORMAL, handles

M = iced.Mnemonic


# ------------------------------------------------------ control registers
def compile_mov_to_special(cpu, ins):
    reg = ins.op0_register
    if reg in SEGREG:
        return compile_mov_sreg(cpu, ins)
    src = reg_reader(cpu, ins.op1_register)
    if reg in CREG:
        n = CREG[reg]
        if n not in (0, 2, 3, 4):
            raise Unsupported(f"MOV CR{n}")

        ic, gpr, length = cpu.intercepts, GPR[ins.op1_register][0], ins.len

        def mov_cr():
            require_cpl0(cpu)
            v = src()
            # CPL is checked before the intercept (SDM Vol. 3C §25.1.1).
            if ic.exits_on_cr_write(n, _cr(cpu, n), v):
                raise ExitFault(ControlRegisterExit(n, True, v, gpr, "mov", length))
            write_cr(cpu, n, ic.owned_bits_kept(n, _cr(cpu, n), v))
        return mov_cr, END
    if reg in DREG:
        n = DREG[reg]
        ic, gpr, length = cpu.intercepts, GPR[ins.op1_register][0], ins.len

        def mov_dr():
            require_cpl0(cpu)
            # MOV-DR exiting comes after the CPL check and before DR7.GD (SDM Vol. 3C §25.1.1).
            if ic.mov_dr_exiting:
                raise ExitFault(DebugRegisterExit(n, True, gpr, length))
            general_detect(cpu)
            v = src()
            if n in (4, 5):
                if cpu.cr4 & 8:   # CR4.DE: DR4/DR5 are reserved
                    raise CpuFault(UD)
                n2 = n + 2
            else:
                n2 = n
            if n2 == 6:
                v = (v & 0xF00F) | 0xFFFF0FF0
            elif n2 == 7:
                v = (v & 0xFFFF2BFF) | 0x400
            cpu.dr[n2] = v
            if n2 != 6:
                debug_update(cpu)
        return mov_dr, END
    raise Unsupported(f"MOV to {reg}")


def general_detect(cpu) -> None:
    """DR7.GD: any MOV to or from a debug register is a #DB fault, with DR6.BD
    set and GD cleared for the handler (SDM Vol. 3A §17.2.4)."""
    if cpu.dr[7] & 0x2000:
        cpu.dr[6] |= 0x2000
        cpu.dr[7] &= ~0x2000
        raise CpuFault(1)


def debug_update(cpu) -> None:
    """Recompute the enabled breakpoints from DR0-DR3 and DR7 (SDM Vol. 3A §17.2):
    R/W 00 instruction, 01 data write, 11 data read/write (10, I/O, is not
    implemented); LEN 00/01/11 = 1/2/4 bytes, the address aligned down.  The CPU
    checks them in ``single_step`` and ``seg_lin``."""
    dr7 = cpu.dr[7]
    ex, da = [], []
    for n in range(4):
        if not (dr7 >> (2 * n)) & 3:
            continue
        rw = (dr7 >> (16 + 4 * n)) & 3
        size = (1, 2, 8, 4)[(dr7 >> (18 + 4 * n)) & 3]
        if rw == 0:
            ex.append((n, cpu.dr[n]))
        elif rw in (1, 3):
            lo = cpu.dr[n] & ~(size - 1) & 0xFFFFFFFF
            da.append((n, lo, lo + size - 1, rw == 1))
    cpu.bp_exec, cpu.bp_data = tuple(ex), tuple(da)
    cpu.update_ac()


def _cr(cpu, n: int) -> int:
    return (cpu.cr0, 0, cpu.cr2, cpu.cr3, cpu.cr4)[n]


def write_cr(cpu, n: int, v: int) -> None:
    """MOV to CRn with the checks of SDM Vol. 3A §2.5 and Vol. 2 MOV (Control Registers)."""
    if n == 0:
        if v & CR0_PG and not v & CR0_PE:
            raise CpuFault(GP, 0)
        if v & (1 << 29) and not v & (1 << 30):   # NW=1 with CD=0
            raise CpuFault(GP, 0)
        if not v & CR0_PE:
            raise MachineStop("real mode", "the guest cleared CR0.PE (real mode is not supported)")
        cpu.set_cr0(v & 0xE005003F)
    elif n == 2:
        cpu.cr2 = v
    elif n == 3:
        cpu.set_cr3(v)
    elif n == 4:
        vmx = cpu.vmx
        if v & ~(CR4_SUPPORTED if vmx is None else CR4_SUPPORTED | CR4_VMXE):
            raise CpuFault(GP, 0)
        if vmx is not None and vmx.vmxon and not v & CR4_VMXE and not vmx.nonroot:
            raise CpuFault(GP, 0)     # CR4.VMXE cannot be cleared in VMX operation (§23.8)
        cpu.set_cr4(v)


def compile_mov_from_special(cpu, ins):
    reg = ins.op1_register
    if reg in SEGREG:
        return compile_mov_from_sreg(cpu, ins)
    dst = reg_writer(cpu, ins.op0_register)
    if reg in CREG:
        n = CREG[reg]
        if n not in (0, 2, 3, 4):
            raise Unsupported(f"MOV from CR{n}")

        ic, gpr, length = cpu.intercepts, GPR[ins.op0_register][0], ins.len

        def mov_from_cr():
            require_cpl0(cpu)
            if ic.cr_read_exiting >> n & 1:
                raise ExitFault(ControlRegisterExit(n, False, None, gpr, "mov", length))
            dst(ic.cr_read_value(n, _cr(cpu, n)))
        return mov_from_cr, NORMAL
    if reg in DREG:
        n = DREG[reg]
        ic, gpr, length = cpu.intercepts, GPR[ins.op0_register][0], ins.len

        def mov_from_dr():
            require_cpl0(cpu)
            if ic.mov_dr_exiting:
                raise ExitFault(DebugRegisterExit(n, False, gpr, length))
            general_detect(cpu)
            n2 = n
            if n in (4, 5):
                if cpu.cr4 & 8:
                    raise CpuFault(UD)
                n2 = n + 2
            dst(cpu.dr[n2])
        return mov_from_dr, NORMAL
    raise Unsupported(f"MOV from {reg}")


@handles(M.CLTS)
def c_clts(cpu, ins):
    ic, length = cpu.intercepts, ins.len

    def clts():
        require_cpl0(cpu)
        if ic.exits_on_cr_write(0, cpu.cr0, cpu.cr0 & ~CR0_TS):
            raise ExitFault(ControlRegisterExit(0, True, cpu.cr0 & ~CR0_TS, None, "clts", length))
        cpu.cr0 = ic.owned_bits_kept(0, cpu.cr0, cpu.cr0 & ~CR0_TS)
    return clts, END


@handles(M.LMSW)
def c_lmsw(cpu, ins):
    src = reader16(cpu, ins, 0)

    ic, length = cpu.intercepts, ins.len

    def lmsw():
        require_cpl0(cpu)
        v = src()
        # LMSW loads PE, MP, EM, TS and cannot clear PE (SDM Vol. 2 LMSW).
        new = (cpu.cr0 & ~0xE) | (v & 0xF) | (cpu.cr0 & CR0_PE)
        if ic.exits_on_cr_write(0, cpu.cr0, new):
            raise ExitFault(ControlRegisterExit(0, True, new, None, "lmsw", length, v & 0xFFFF))
        cpu.set_cr0(ic.owned_bits_kept(0, cpu.cr0, new))
    return lmsw, END


@handles(M.SMSW)
def c_smsw(cpu, ins):
    size = op_size(ins, 0)
    dst = writer(cpu, ins, 0, 2 if ins.op0_kind == K.MEMORY else size)
    mem = ins.op0_kind == K.MEMORY

    ic = cpu.intercepts

    def smsw():
        strict_trap(cpu)
        # Register destination with 32-bit operand size receives all of CR0 on
        # P6 and later processors (the upper bits are "undefined" in the SDM).
        cr0 = ic.cr_read_value(0, cpu.cr0)      # the read shadow in the monitor's bits
        dst(cr0 & 0xFFFF if mem or size == 2 else cr0)
    return smsw, NORMAL


@handles(M.INVLPG)
def c_invlpg(cpu, ins):
    ea, seg = ea_fn(cpu, ins), mem_segment(ins)

    ic, length = cpu.intercepts, ins.len

    def invlpg():
        require_cpl0(cpu)
        lin = (cpu.base[seg] + ea()) & 0xFFFFFFFF
        if ic.invlpg_exiting:
            raise ExitFault(InstructionExit("invlpg", length, lin))
        cpu.invlpg(lin)
    return invlpg, END


@handles(M.WBINVD, M.INVD)
def c_wbinvd(cpu, ins):
    def wbinvd():
        require_cpl0(cpu)
    return wbinvd, NORMAL


# --------------------------------------------------------------------- HLT
@handles(M.HLT)
def c_hlt(cpu, ins):
    ic, length = cpu.intercepts, ins.len

    def hlt():
        require_cpl0(cpu)
        if ic.hlt_exiting:
            raise ExitFault(HaltExit(length))
        cpu.halted = True
    return hlt, END


# ------------------------------------------------------------- x87 and WAIT
# The x87 FPU is ops_x87.py, which registers later and takes over the mnemonics it
# implements.  What stays here is the fallback for the rest, the x87 interface the
# system architecture defines: the #NM checks
# (SDM Vol. 3A §2.5, Table 2-2).  An x87 instruction raises #NM when CR0.EM
# or CR0.TS is set; WAIT/FWAIT raises #NM when CR0.MP and CR0.TS are both
# set and is otherwise a no-op (there is never an unmasked x87 exception
# pending).  FNOP with EM = TS = 0 is a no-op; any other x87 instruction with
# EM = TS = 0 stops the machine as not implemented.
_X87 = [getattr(M, n) for n in dir(M) if n.startswith("F") and n not in (
    "FEMMS", "FXSAVE", "FXSAVE64", "FXRSTOR", "FXRSTOR64")]


@handles(*_X87)
def c_x87(cpu, ins):
    from .constants import CR0_EM, CR0_TS, NM
    from .translate import _unimplemented
    nop = ins.mnemonic == M.FNOP
    missing = None if nop else _unimplemented(cpu, ins)

    def x87():
        if cpu.cr0 & (CR0_EM | CR0_TS):
            raise CpuFault(NM)
        if missing is not None:
            missing()
    return x87, (NORMAL if nop else JUMP)


@handles(M.WAIT)
def c_wait(cpu, ins):
    from .constants import CR0_MP, CR0_TS, NM

    def wait():
        if cpu.cr0 & CR0_MP and cpu.cr0 & CR0_TS:
            raise CpuFault(NM)
    return wait, NORMAL
