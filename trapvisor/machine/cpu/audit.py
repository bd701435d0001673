"""An observer of x86's sensitive instructions: what each execution produced.

To show *where* a monitor fails the equivalence property, trapvisor records
every execution of a sensitive instruction (the 17 of Robin and Irvine,
USENIX Security 2000, plus IRET, which changes privilege
without trapping) together with what it produced: the registers, flags and
segment selectors it changed, the stack slots it pushed, and the memory
operand it stored.  Two such recordings, one native and one under a monitor,
aligned instruction by instruction, give the divergence report
(``trapvisor/report/divergence.py``).

The observer is attached to a CPU before any code is translated
(``cpu.auditor = Auditor()``); it wraps only the closures of sensitive
instructions, so it costs nothing elsewhere.  It is a measuring instrument,
not part of the machine: a guest cannot see it.
"""

from __future__ import annotations

from dataclasses import dataclass

import iced_x86 as iced

from .constants import SS

M = iced.Mnemonic

SENSITIVE = {
    M.SGDT: "SGDT", M.SIDT: "SIDT", M.SLDT: "SLDT", M.SMSW: "SMSW", M.STR: "STR",
    M.PUSHF: "PUSHF", M.PUSHFD: "PUSHF", M.POPF: "POPF", M.POPFD: "POPF",
    M.LAR: "LAR", M.LSL: "LSL", M.VERR: "VERR", M.VERW: "VERW",
    M.PUSH: "PUSH", M.POP: "POP", M.MOV: "MOV", M.CALL: "CALL", M.JMP: "JMP",
    M.RETF: "RET", M.INT: "INT n", M.IRET: "IRET", M.IRETD: "IRET",
}
REG_NAMES = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
SEG_NAMES = ("es", "cs", "ss", "ds", "fs", "gs")


def is_sensitive_form(ins) -> bool:
    """PUSH/POP/MOV/CALL/JMP are sensitive only in their segment-register or far forms."""
    m = ins.mnemonic
    if m not in SENSITIVE:
        return False
    from .operands import SEGREG
    if m in (M.PUSH, M.POP):
        return ins.op0_kind == iced.OpKind.REGISTER and ins.op0_register in SEGREG
    if m == M.MOV:
        return any(ins.op_kind(i) == iced.OpKind.REGISTER and ins.op_register(i) in SEGREG
                   for i in range(ins.op_count))
    if m in (M.CALL, M.JMP):
        return ins.is_call_far or ins.is_call_far_indirect or ins.is_jmp_far or ins.is_jmp_far_indirect
    return True


@dataclass
class Observation:
    ip: int
    name: str            # which of the sensitive instructions (SGDT, PUSH, ...)
    text: str            # disassembly
    cpl: int             # CPL of the CPU that executed it
    produced: dict       # what it produced: {"eax": .., "eflags.IF": .., "stack": "...", "mem": "..."}

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in sorted(self.produced.items())) or "(nothing visible)"


class Auditor:
    def __init__(self, limit: int = 20000):
        self.records: list[Observation] = []
        self.limit = limit

    def wrap(self, cpu, ins, fn):
        if not is_sensitive_form(ins):
            return fn
        from .translate import disassemble
        name = SENSITIVE[ins.mnemonic]
        text = disassemble(ins)
        ip = ins.ip
        from .operands import SEGREG
        # The result that matters: a loaded segment register's final selector; ZF
        # for the verdicts of LAR/LSL/VERR/VERW; all of EFLAGS for the instructions
        # that load it.  (Other flags would only show the host's IF everywhere.)
        dest_seg = SEGREG.get(ins.op0_register) if ins.op_count and \
            ins.op0_kind == iced.OpKind.REGISTER and ins.op0_register in SEGREG else None
        flag_mode = "all" if name in ("POPF", "IRET", "INT n") else \
            "zf" if name in ("LAR", "LSL", "VERR", "VERW") else None
        mem = None
        if ins.op_count and ins.op0_kind == iced.OpKind.MEMORY:
            from .operands import ea_fn, mem_segment
            size = iced.MemorySizeInfo(ins.memory_size).size
            mem = (ea_fn(cpu, ins), mem_segment(ins), size)
        records = self.records
        limit = self.limit

        def audited():
            regs = list(cpu.regs)
            flags = cpu.get_eflags()
            sels = list(cpu.sel)
            cpl = cpu.cpl
            fn()
            if len(records) < limit:
                records.append(Observation(ip, name, text, cpl,
                                           _produced(cpu, regs, flags, sels, mem, dest_seg, flag_mode)))
        return audited


def _produced(cpu, regs, flags, sels, mem, dest_seg, flag_mode) -> dict:
    out = {}
    for i, (a, b) in enumerate(zip(regs, cpu.regs)):
        if a != b and i != 4:
            out[REG_NAMES[i]] = f"{b:#010x}"
    f = cpu.get_eflags()
    if flag_mode == "all" and f != flags:
        out["eflags"] = f"{f:#010x}"
    elif flag_mode == "zf":
        out["zf"] = (f >> 6) & 1
    for i, (a, b) in enumerate(zip(sels, cpu.sel)):
        if a != b or i == dest_seg:
            out[SEG_NAMES[i]] = f"{b:#06x}"
    esp = cpu.regs[4]
    if esp < regs[4] and regs[4] - esp <= 64:
        try:
            out["pushed"] = bytes(cpu.rd8(SS, (esp + i) & 0xFFFFFFFF) for i in range(regs[4] - esp)).hex()
        except Exception:
            out["pushed"] = "(unreadable)"
    if mem is not None:
        ea, seg, size = mem
        try:
            out["stored"] = bytes(cpu.rd8(seg, (ea() + i) & 0xFFFFFFFF) for i in range(size)).hex()
        except Exception:
            out["stored"] = "(unreadable)"
    return out
