"""Decode once, run many times: iced-x86 instructions compiled into blocks.

Translation reads the bytes of a basic block from guest physical memory,
decodes them with iced-x86 (we do not write an x86 decoder), and asks the
compile function registered for each mnemonic (``registry.py``) for a
closure.  The block is cached by the physical address of its first byte; its
page is marked in ``memory.code_pages`` so that a later store to that page
drops it (``CPU.invalidate_code_page``).

An instruction that straddles a page boundary is translated on its own and
not cached (its bytes depend on two page mappings).
"""

from __future__ import annotations

import iced_x86 as iced

from .constants import UD
from .audit import SENSITIVE, is_sensitive_form
from .cpu import MAX_BLOCK, Block, CpuFault, ExitFault, MachineStop
from .exits import SensitiveExit
from .operands import Unsupported
from .registry import END, HANDLERS, JUMP
# Importing the ops_* modules registers their handlers.  The order matters where two
# register one mnemonic: the later wins (FNOP, WAIT and the x87 set: ops_x87's FPU over
# ops_sysregs's #NM-only fallback, which is left for the x87 forms ops_x87 does not handle).
from . import (  # noqa: F401
    ops_move, ops_stack, ops_alu, ops_shift, ops_bits, ops_eflags, ops_control, ops_string,
    ops_io, ops_sysregs, ops_tables, ops_far, ops_msr, ops_x87, ops_x87_control,
)
# The VMX instructions compile only on a CPU with VMX (cpu.vmx; vmx/instructions.py).
from .vmx import instructions as _vmx_instructions  # noqa: F401,E402

_FORMATTER = iced.Formatter(iced.FormatterSyntax.INTEL)


def disassemble(ins) -> str:
    return _FORMATTER.format(ins)


def _check_fetch(cpu, pa: int, eip: int) -> None:
    """Code is fetched from RAM only: a fetch from beyond it stops the machine (QEMU
    refuses to execute from unassigned memory too), on the bare CPU and when a
    monitor's interpreter decodes the instruction alike."""
    if pa >= cpu.ram_size:
        raise MachineStop("fetch outside RAM",
                          f"instruction fetch from physical address {pa:#x} (EIP {eip:#x}), outside RAM")


class Translator:
    def __init__(self, cpu):
        self.cpu = cpu
        self.blocks_translated = 0

    def translate(self, eip: int, lin: int, pa: int) -> Block:
        cpu = self.cpu
        bitness = 32 if cpu.cs32 else 16
        ipmask = 0xFFFFFFFF if cpu.cs32 else 0xFFFF
        _check_fetch(cpu, pa, eip)
        page_end = min((pa | 0xFFF) + 1, cpu.ram_size)
        data = bytes(cpu.ram[pa:page_end])
        decoder = iced.Decoder(bitness, data, ip=eip)
        ops, ilist = [], []
        ip = eip
        fallthrough = None
        cacheable = True
        while True:
            ins = decoder.decode()
            if ins.code == iced.Code.INVALID:
                if decoder.last_error == iced.DecoderError.NO_MORE_BYTES:
                    if ops:
                        fallthrough = ip
                        break
                    ins = self._decode_cross_page(eip, lin, data, bitness)
                    cacheable = False
                if ins.code == iced.Code.INVALID:
                    ops.append((ip, _raise_ud))
                    ilist.append(ins)
                    break
            fn, kind = self.compile(ins)
            ops.append((ip, fn))
            ilist.append(ins)
            ip = ins.next_ip & ipmask
            if kind == JUMP:
                break
            if kind == END or len(ops) >= MAX_BLOCK or not cacheable:
                fallthrough = ip
                break
        blk = Block(eip, cpu.cs32, tuple(ops), fallthrough, (pa >> 12,), ilist)
        self.blocks_translated += 1
        if cacheable:
            page = pa >> 12
            cpu.cache[pa] = blk
            cpu.page_blocks.setdefault(page, []).append(pa)
            cpu.code_pages[page] = 1
        return blk

    def _decode_cross_page(self, eip, lin, head: bytes, bitness):
        """Decode one instruction whose bytes run into the next page (may raise #PF there)."""
        cpu = self.cpu
        need = 15 - len(head)
        nxt = (lin + len(head)) & 0xFFFFFFFF
        tail = bytes(cpu.lin_read((nxt + i) & 0xFFFFFFFF, 1) for i in range(need))
        return iced.Decoder(bitness, head + tail, ip=eip).decode()

    def decode_one(self, eip: int):
        """Decode the instruction at CS:eip afresh from guest memory (no cache).

        Used by interpreter routines of a VMM, which must see the bytes as they
        are now.  Fetch faults (#PF, #GP for the CS limit) are raised as on a
        real fetch; bytes of the next page are read only if the instruction
        really extends into it.
        """
        cpu = self.cpu
        bitness = 32 if cpu.cs32 else 16
        lin = (cpu.base[1] + eip) & 0xFFFFFFFF
        # The same machine as the block translator: code is fetched from RAM only.
        _check_fetch(cpu, cpu.translate_lin(lin, False), eip)
        room = min(15, 0x1000 - (lin & 0xFFF))
        head = bytes(cpu.lin_read((lin + i) & 0xFFFFFFFF, 1) for i in range(room))
        ins = iced.Decoder(bitness, head, ip=eip).decode()
        if ins.code == iced.Code.INVALID and room < 15:
            tail = bytes(cpu.lin_read((lin + room + i) & 0xFFFFFFFF, 1) for i in range(15 - room))
            ins = iced.Decoder(bitness, head + tail, ip=eip).decode()
        return ins

    def compile(self, ins):
        handler = HANDLERS.get(ins.mnemonic)
        if handler is None:
            if absent_extension(ins):
                return _raise_ud, JUMP
            return _unimplemented(self.cpu, ins), JUMP
        try:
            fn, kind = handler(self.cpu, ins)
        except Unsupported:
            if absent_extension(ins):     # e.g. VMCALL on a CPU without VMX (vmx/instructions.py)
                return _raise_ud, JUMP
            return _unimplemented(self.cpu, ins), JUMP
        auditor = self.cpu.auditor
        if auditor is not None:
            fn = auditor.wrap(self.cpu, ins, fn)
        if self.cpu.intercepts.sensitive_exiting and is_sensitive_form(ins) \
                and SENSITIVE[ins.mnemonic] in self.cpu.intercepts.sensitive_exiting:
            return _sensitive_exit(ins), kind
        return fn, kind


# Instruction-set extensions, each with its CPUID feature flag (cpuid_model.FEATURES; None: a
# flag the model has no name for, never advertised).  On a processor whose CPUID leaves the
# flag clear the instructions do not exist and raise #UD (SDM Vol. 2, each instruction's
# exceptions: "#UD If CPUID.01H:EDX.SSE2[bit 26] = 0", and so on; VMCALL and the other VMX
# instructions outside VMX operation, Vol. 3C §30.3).  Only an instruction without a handler,
# or whose handler declines it (Unsupported: VMX instructions on a CPU without VMX), is
# checked, so an extension someone implements (and advertises) takes over at once.
_F = iced.CpuidFeature
EXTENSIONS = {
    _F.MMX: "mmx", _F.FXSR: "fxsr", _F.SSE: "sse", _F.SSE2: "sse2", _F.SSE3: "sse3",
    _F.SSSE3: "ssse3", _F.SSE4_1: None, _F.SSE4_2: None, _F.SSE4A: None, _F.POPCNT: "popcnt",
    _F.CLFSH: "clflush", _F.XSAVE: "xsave", _F.XSAVEOPT: None, _F.XSAVEC: None, _F.XSAVES: None,
    _F.MONITOR: None, _F.MOVBE: None, _F.RDRAND: None, _F.RDSEED: None, _F.RDTSCP: None,
    _F.RDPID: None, _F.AES: None, _F.PCLMULQDQ: None, _F.SHA: None, _F.AVX: None, _F.AVX2: None,
    _F.FMA: None, _F.F16C: None, _F.AVX512F: None, _F.VMX: None, _F.SVM: None, _F.SMX: None,
    _F.INVEPT: None, _F.INVVPID: None, _F.INVPCID: None, _F.SMAP: None, _F.ADX: None,
    _F.CLFLUSHOPT: None, _F.CLWB: None, _F.D3NOW: None, _F.XOP: None, _F.FMA4: None,
}


def absent_extension(ins) -> bool:
    """True when ``ins`` belongs to an extension the modelled CPU does not advertise."""
    from ..cpuid_model import PC
    return any(f in EXTENSIONS and EXTENSIONS[f] not in PC.features for f in ins.cpuid_features())

def _sensitive_exit(ins):
    """The closure of a sensitive instruction whose class exits (CPU.set_sensitive_exiting
    flushes the decoded blocks, so the control is seen at translation)."""
    exit_ = SensitiveExit(_FORMATTER.format_mnemonic(ins), ins.len, SENSITIVE[ins.mnemonic])

    def sensitive():
        raise ExitFault(exit_)
    return sensitive


def _raise_ud():
    raise CpuFault(UD)


def _unimplemented(cpu, ins):
    text = disassemble(ins)
    ip = ins.ip

    def stop():
        raw = b""
        try:
            raw = bytes(cpu.lin_read((cpu.base[1] + ip + i) & 0xFFFFFFFF, 1) for i in range(ins.len))
        except CpuFault:
            pass
        cpu.eip = ip
        cpu.stop = MachineStop(
            "instruction not implemented",
            f"at {ip:#010x}: {raw.hex(' ')}  {text}")
    return stop
