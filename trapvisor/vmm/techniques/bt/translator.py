"""The binary translator: guest kernel code -> x86 code in the translation cache.

Adams and Agesen (ASPLOS 2006, §3.1) list the properties of VMware's
translator; this one has them: *binary* input (guest machine code, not
source), *dynamic* and *on demand* (a unit is translated when it is first
about to run), *system level* (no assumption about the guest's code beyond
the ISA), *subsetting* (x86 to the same x86, most instructions IDENT,
``classify.py``) and *adaptive* (an instruction that keeps taking tracing
faults is retranslated to a callout, ``adapt``).

**A unit** starts at one guest EIP and follows the guest's straight-line
execution: through the fall-through of conditional branches and into the
callee of a direct CALL (whose return address it pushes as the guest's own
CALL would), up to ``MAX_UNIT`` guest instructions, an unconditional
transfer, or a callout that ends it.  So a unit is a chain of basic blocks
laid out contiguously in the cache.  The layout is what keeps guest time
exact: every guest instruction that runs in the cache is *one* host
instruction (IDENT copies, a JCC/JMP with a rel32 into the cache, PUSH imm32
for a CALL, a MOV to the virtual-CPU page for CLI), and everything else --
callouts, the stubs that chain units lazily and the end of a unit at its
size limit -- is a ``ud2`` that exits to the monitor before it executes.
The host CPU's instruction count is therefore the guest's, the guest's
clock advances exactly as on the bare machine, and a timer interrupt lands
on the same guest instruction as natively.

**Chaining.** A JCC or JMP whose target has no unit yet branches to a stub
of its unit; on the stub's exit the monitor translates the target and
patches the branch to go straight there (the next time no exit happens).
Patches are recorded in the target unit's ``incoming``, so that dropping it
(coherence) points them back to their stubs.

Instruction bytes are read through the virtual CPU with the guest's
mappings (the first instruction exactly as a fetch would, so its #PF or #GP
is the guest's); rewritten instructions are encoded with iced-x86.
"""

from __future__ import annotations

import iced_x86 as iced

from ....machine.cpu.constants import CS
from ....machine.cpu.cpu import CpuFault
from . import classify as C
from .tcache import VCPU_VIF, Callout, Row, Unit

MAX_UNIT = 64           # guest instructions in one unit
UD2 = b"\x0f\x0b"
_JCC_REL32 = {}         # condition code -> rel32 form (iced Code)
for _name in dir(iced.Code):
    if _name.startswith("J") and _name.endswith("_REL32_32") and _name not in ("JMP_REL32_32",):
        _JCC_REL32[_name.split("_")[0]] = getattr(iced.Code, _name)


class Untranslatable(Exception):
    """The unit's first instruction cannot be fetched (a fault the guest must take),
    or lies where no translation is allowed: the monitor interprets it instead."""


def _encode(ins, ip: int) -> bytes:
    enc = iced.Encoder(32)
    enc.encode(ins, ip)
    return bytes(enc.take_buffer())


def _code_name(ins) -> str:
    return _CODE_NAMES[ins.code]


_CODE_NAMES = {getattr(iced.Code, n): n for n in dir(iced.Code) if not n.startswith("_")}


class Translator:
    """Translates guest code fetched through ``vcpu`` into ``tcache``."""

    def __init__(self, vcpu, guest_ram_size: int, tcache, max_unit: int = MAX_UNIT):
        self.vcpu = vcpu
        self.ram_size = guest_ram_size
        self.tc = tcache
        self.max_unit = max_unit
        self.adapted: set[int] = set()        # guest EIPs retranslated to callouts
        self.guest_instructions = 0           # translated (statically), for the cost model
        self.ident_instructions = 0

    # -- fetching guest code ---------------------------------------------------
    def _fetch(self, eip: int):
        """(decoded instruction, its bytes, {linear page: guest frame}) at CS:eip."""
        vcpu = self.vcpu
        limit = vcpu.limit[CS]
        if eip > limit:
            raise CpuFault(13, 0)
        pa = vcpu.translate_lin(eip, False, user=False)
        if pa >= self.ram_size:
            raise Untranslatable("code outside RAM")
        room = min(15, 0x1000 - (eip & 0xFFF))
        data = bytes(vcpu.mem.ram[pa:pa + room])
        pages = {eip >> 12: pa >> 12}
        ins = iced.Decoder(32, data, ip=eip).decode()
        if ins.code == iced.Code.INVALID and room < 15:
            nxt = (eip + room) & 0xFFFFFFFF
            pa2 = vcpu.translate_lin(nxt, False, user=False)
            if pa2 >= self.ram_size:
                raise Untranslatable("code outside RAM")
            data += bytes(vcpu.mem.ram[pa2:pa2 + 15 - room])
            pages[nxt >> 12] = pa2 >> 12
            ins = iced.Decoder(32, data, ip=eip).decode()
        if ins.code != iced.Code.INVALID and eip + ins.len - 1 > limit:
            raise CpuFault(13, 0)
        n = ins.len if ins.code != iced.Code.INVALID else 1
        if ins.code != iced.Code.INVALID and (eip & 0xFFF) + n > 0x1000 and len(pages) == 1:
            nxt = (eip + room) & 0xFFFFFFFF
            pages[nxt >> 12] = vcpu.translate_lin(nxt, False, user=False) >> 12
        return ins, data[:n], pages

    def _fetch_quiet(self, eip: int):
        """A fetch past the unit's first instruction: the guest has not reached it, so a
        fault here must not touch the guest's state (CR2); None ends the unit."""
        vcpu = self.vcpu
        cr2 = vcpu.cr2
        try:
            return self._fetch(eip)
        except (CpuFault, Untranslatable):
            return None
        finally:
            vcpu.cr2 = cr2

    # -- translating -------------------------------------------------------------
    def translate(self, entry: int) -> Unit:
        """Translate the unit entered at guest EIP ``entry`` and add it to the cache.
        Raises CpuFault/Untranslatable if its first instruction cannot be fetched."""
        items, pages = self._plan(entry)
        size = sum(len(it[4]) if it[0] != "branch" else it[4] for it in items)
        stubs = sum(1 for it in items if it[0] == "branch") * len(UD2)
        if self.tc.room() < size + stubs + 16:
            self.tc.flush()
        return self._emit(entry, items, pages)

    def _plan(self, entry: int):
        """The unit's guest instructions and what each becomes, before layout.

        Each item: (what, row kind, reason, guest ins, host bytes or length, extra)."""
        items = []
        pages: dict[int, int] = {}
        eip = entry
        first = True
        while True:
            if len(items) >= self.max_unit:
                items.append(("continue", None, "unit size limit", None, UD2, eip))
                break
            if first:
                ins, raw, ipages = self._fetch(eip)     # the guest's own fault, if any
                first = False
            else:
                got = self._fetch_quiet(eip)
                if got is None:
                    items.append(("continue", None, "fetch fault ahead", None, UD2, eip))
                    break
                ins, raw, ipages = got
            pages.update(ipages)
            kind, reason, ends = C.classify(ins)
            nxt = ins.next_ip32 if ins.code != iced.Code.INVALID else eip + 1
            if kind in (C.JCC, C.JMP, C.CALL) and ins.near_branch32 > self.vcpu.limit[CS]:
                kind, reason, ends = C.CALLOUT, "branch past the CS limit", True
            if eip in self.adapted and kind == C.IDENT:
                kind, reason, ends = C.CALLOUT, "adapted (tracing faults)", False
            if kind == C.IDENT:
                items.append(("ident", kind, "", ins, raw, None))
                eip = nxt
            elif kind == C.CLI:
                mov = iced.Instruction.create_mem_u32(
                    iced.Code.MOV_RM32_IMM32,
                    iced.MemoryOperand(displ=VCPU_VIF, displ_size=4, seg=iced.Register.GS), 0)
                items.append(("inline", kind, "virtual IF := 0", ins, _encode(mov, 0), raw))
                eip = nxt
            elif kind == C.JCC:
                items.append(("branch", kind, "", ins, 6, (ins.near_branch32, raw)))
                eip = nxt
            elif kind == C.JMP:
                items.append(("branch", kind, "", ins, 5, (ins.near_branch32, raw)))
                break
            elif kind == C.CALL:
                push = iced.Instruction.create_u32(iced.Code.PUSHD_IMM32, nxt)
                items.append(("inline", kind, "push the guest return address", ins, _encode(push, 0), raw))
                eip = ins.near_branch32
            else:
                items.append(("callout", kind, reason, ins, UD2, (raw, nxt, ends)))
                if ends:
                    break
                eip = nxt
        return items, pages

    def _emit(self, entry: int, items, pages) -> Unit:
        tc = self.tc
        unit = Unit(entry, tc.next)
        unit.pages = dict(pages)
        unit.frames = set(pages.values())
        at = tc.next
        code = bytearray()
        branches = []           # (site, length, target guest EIP, row)
        callouts = []           # (address, Callout)
        for what, kind, reason, ins, body, extra in items:
            if what == "branch":
                target, raw = extra
                length = body
                row = Row(ins.ip, raw, str(ins), kind, reason, at, b"")
                branches.append((at, length, target, row, ins))
                tc.guest_at[at] = ins.ip
                code += bytes(length)
            elif what == "continue":
                tc.guest_at[at] = extra
                callouts.append((at, Callout("continue", extra, reason, unit)))
                unit.rows.append(Row(extra, b"", "", "continue", reason, at, UD2))
                code += body
            else:
                raw = body if what == "ident" else (extra if what == "inline" else extra[0])
                row = Row(ins.ip, raw, str(ins), kind, reason, at, bytes(body))
                unit.rows.append(row)
                tc.guest_at[at] = ins.ip
                if what == "callout":
                    _, nxt, ends = extra
                    callouts.append((at, Callout("emulate", ins.ip, reason, unit, next_guest=nxt)))
                code += body
            at += len(body) if what != "branch" else body
            if what == "branch":
                unit.rows.append(row)
        # The chain stubs: one ud2 per branch, after the unit's code.
        links = []
        for site, length, target, row, ins in branches:
            stub = at
            code += UD2
            at += len(UD2)
            tc.guest_at[stub] = target
            callouts.append((stub, Callout("chain", target, "chain", unit, site=site)))
            found = tc.lookup(target)
            dest, to = found if found is not None else (None, stub)
            mn = _code_name(ins)
            rel = iced.Code.JMP_REL32_32 if row.kind == C.JMP else _JCC_REL32[mn.split("_")[0]]
            enc = _encode(iced.Instruction.create_branch(rel, to), site)
            code[site - unit.host:site - unit.host + length] = enc
            row.host_bytes = enc
            if to != stub:
                links.append((dest, (site, length, stub, unit)))
        unit.size = at - unit.host
        tc.write(unit.host, bytes(code))
        tc.next = at
        tc.bytes_emitted += len(code)
        for addr, callout in callouts:
            callout.at = addr
            tc.callouts[addr] = callout
        for dest, link in links:
            dest.incoming.append(link)
        unit.guest_count = sum(1 for it in items if it[3] is not None)
        unit.ident_count = sum(1 for it in items if it[0] == "ident")
        self.guest_instructions += unit.guest_count
        self.ident_instructions += unit.ident_count
        tc.add(unit)
        return unit

    def link(self, callout: Callout, dest: Unit, to: int) -> None:
        """A chain stub was taken and its target translated: patch the branch."""
        src = callout.unit
        if not src.valid or not dest.valid:
            return
        for row in src.rows:
            if row.host == callout.site:
                length = len(row.host_bytes)
                break
        else:
            return
        self.tc.patch_rel32(callout.site, length, to)
        dest.incoming.append((callout.site, length, callout.at, src))
