"""String instructions: MOVS STOS LODS CMPS SCAS INS OUTS, with REP/REPE/REPNE.

SDM Vol. 2 (MOVS, ..., REP/REPE/REPNE).  The source is DS:(E)SI unless a
segment prefix overrides it; the destination is always ES:(E)DI.  Each
iteration commits its register updates before the next one starts, so a
fault in the middle of a REP leaves ECX/ESI/EDI pointing at the element that
faulted and the instruction restarts from there (SDM Vol. 3A §6.5).

A REP MOVS/STOS/LODS/CMPS/SCAS over RAM runs as bulk operations
(``string_bulk.py``: one bytes operation per run of iterations within a
page) with the element loop's exact result; the element loop below stays the
reference and takes every element a run cannot (MMIO, page-crossing
elements, segment faults, code pages, single-stepping).
"""

from __future__ import annotations

import iced_x86 as iced

from . import flags as F
from . import string_bulk
from .constants import DF, ES
from .operands import MASK, SIGN, op_size
from .registry import NORMAL, END, JUMP, handles

# A REP string instruction runs at most this many iterations per execution,
# then leaves EIP on itself and is executed again: the processor may be
# interrupted between iterations (SDM Vol. 2, REP: "the instruction is
# restarted"), so interrupts, timers and instruction limits are seen even
# during a REP STOSB with ECX = 0xFFFFFFFF.  Every iteration counts as one
# instruction in ``cpu.icount``: the instruction count is the CPU's measure of
# work and of guest time, and a million-iteration REP is not one unit of either.
REP_CHUNK = 4096
# Runs of iterations over RAM as one bytes operation (string_bulk.py); off: element by
# element only (the reference the tests compare the bulk path with).
BULK = True

M = iced.Mnemonic
K = iced.OpKind

_SIZE = {
    M.MOVSB: 1, M.MOVSW: 2, M.MOVSD: 4, M.STOSB: 1, M.STOSW: 2, M.STOSD: 4,
    M.LODSB: 1, M.LODSW: 2, M.LODSD: 4, M.CMPSB: 1, M.CMPSW: 2, M.CMPSD: 4,
    M.SCASB: 1, M.SCASW: 2, M.SCASD: 4, M.INSB: 1, M.INSW: 2, M.INSD: 4,
    M.OUTSB: 1, M.OUTSW: 2, M.OUTSD: 4,
}


_BULK_KIND = {
    M.MOVSB: string_bulk.MOVS, M.MOVSW: string_bulk.MOVS, M.MOVSD: string_bulk.MOVS,
    M.STOSB: string_bulk.STOS, M.STOSW: string_bulk.STOS, M.STOSD: string_bulk.STOS,
    M.LODSB: string_bulk.LODS, M.LODSW: string_bulk.LODS, M.LODSD: string_bulk.LODS,
    M.CMPSB: string_bulk.CMPS, M.CMPSW: string_bulk.CMPS, M.CMPSD: string_bulk.CMPS,
    M.SCASB: string_bulk.SCAS, M.SCASW: string_bulk.SCAS, M.SCASD: string_bulk.SCAS,
}


def _addr16(ins) -> bool:
    for i in range(ins.op_count):
        k = ins.op_kind(i)
        if k in (K.MEMORY_SEG_SI, K.MEMORY_SEG_DI, K.MEMORY_ESDI):
            return True
    return False


@handles(*_SIZE)
def c_string(cpu, ins):
    op = ins.mnemonic
    size = _SIZE[op]
    if op == M.MOVSD and ins.op_count == 2 and ins.op0_kind not in (K.MEMORY_ESEDI, K.MEMORY_ESDI):
        from .operands import Unsupported
        raise Unsupported("SSE2 MOVSD")
    regs = cpu.regs
    amask = 0xFFFF if _addr16(ins) else 0xFFFFFFFF
    src_seg = iced_seg(ins) if op in (M.MOVSB, M.MOVSW, M.MOVSD, M.LODSB, M.LODSW, M.LODSD,
                                      M.CMPSB, M.CMPSW, M.CMPSD, M.OUTSB, M.OUTSW, M.OUTSD) else None
    rep = ins.has_rep_prefix or ins.has_repe_prefix
    repne = ins.has_repne_prefix
    rd = {1: cpu.rd8, 2: cpu.rd16, 4: cpu.rd32}[size]
    wr = {1: cpu.wr8, 2: cpu.wr16, 4: cpu.wr32}[size]
    mask, sign = MASK[size], SIGN[size]
    conditional = op in (M.CMPSB, M.CMPSW, M.CMPSD, M.SCASB, M.SCASW, M.SCASD)
    repeated = rep or repne

    def step_regs(*idx):
        d = -size if cpu.eflags_rest & DF else size
        for i in idx:
            regs[i] = (regs[i] & ~amask & 0xFFFFFFFF) | ((regs[i] + d) & amask)

    def one():
        """One element; returns False when a REPE/REPNE condition ends the loop."""
        if op in (M.MOVSB, M.MOVSW, M.MOVSD):
            wr(ES, regs[7] & amask, rd(src_seg, regs[6] & amask))
            step_regs(6, 7)
        elif op in (M.STOSB, M.STOSW, M.STOSD):
            wr(ES, regs[7] & amask, regs[0] & mask)
            step_regs(7)
        elif op in (M.LODSB, M.LODSW, M.LODSD):
            v = rd(src_seg, regs[6] & amask)
            regs[0] = v if size == 4 else (regs[0] & ~mask & 0xFFFFFFFF) | v
            step_regs(6)
        elif op in (M.CMPSB, M.CMPSW, M.CMPSD):
            a = rd(src_seg, regs[6] & amask)
            b = rd(ES, regs[7] & amask)
            cpu.lf = (F.SUB, a, b, (a - b) & mask, sign)
            step_regs(6, 7)
            return (a == b) if rep else (a != b) if repne else True
        elif op in (M.SCASB, M.SCASW, M.SCASD):
            a = regs[0] & mask
            b = rd(ES, regs[7] & amask)
            cpu.lf = (F.SUB, a, b, (a - b) & mask, sign)
            step_regs(7)
            return (a == b) if rep else (a != b) if repne else True
        elif op in (M.INSB, M.INSW, M.INSD):
            from .ops_io import check_io
            port = regs[2] & 0xFFFF
            check_io(cpu, port, size)
            # Probe the destination before the port read: a port read has side effects.
            wr(ES, regs[7] & amask, rd(ES, regs[7] & amask))
            wr(ES, regs[7] & amask, cpu.io_bus.read(port, size))
            step_regs(7)
        else:  # OUTS
            from .ops_io import check_io
            port = regs[2] & 0xFFFF
            check_io(cpu, port, size)
            cpu.io_bus.write(port, size, rd(src_seg, regs[6] & amask))
            step_regs(6)
        return True

    if not repeated:
        def string_once():
            one()
        return string_once, (END if op in (M.INSB, M.INSW, M.INSD, M.OUTSB, M.OUTSW, M.OUTSD) else NORMAL)

    ip = ins.ip
    nxt = ins.next_ip & (0xFFFFFFFF if cpu.cs32 else 0xFFFF)
    kind = _BULK_KIND.get(op)
    bulk = None if kind is None else string_bulk.make_bulk(
        cpu, kind, size, amask, src_seg, bool(rep) and conditional, repne and conditional)

    def string_rep():
        left = REP_CHUNK
        try:
            while regs[1] & amask:
                if bulk is not None and BULK and not cpu.rep_break:
                    # A run of iterations at once (string_bulk.py); none possible: one element.
                    done, ended = bulk(min(regs[1] & amask, left))
                    if done:
                        left -= done
                        if ended:
                            break
                        if not left and regs[1] & amask:
                            cpu.eip = ip
                            return
                        continue
                go_on = one()
                regs[1] = (regs[1] & ~amask & 0xFFFFFFFF) | ((regs[1] - 1) & amask)
                left -= 1
                if conditional and not go_on:
                    break
                if not left and regs[1] & amask:
                    cpu.eip = ip          # interrupted between iterations: run it again
                    return
                if cpu.rep_break and regs[1] & amask:
                    cpu.eip = ip          # single-stepping (TF, breakpoints): one iteration a step
                    return
            cpu.eip = nxt
        finally:
            # The dispatch loop retires the instruction once; the other iterations here.
            if left < REP_CHUNK - 1:
                cpu.icount += REP_CHUNK - 1 - left
    return string_rep, JUMP


def iced_seg(ins):
    from .operands import SEGREG
    return SEGREG[ins.memory_segment]
