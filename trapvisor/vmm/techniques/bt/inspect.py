"""Looking into the translation cache: a guest unit and its translation side by side.

``trapvisor bt show`` (cli/bt.py) runs a guest under ``bt`` until the code
at an address has been translated and prints the unit with
:func:`describe_unit`: each guest instruction, what the translator made of
it (IDENT, a rewritten branch, inline code on the virtual-CPU page, a
callout and its reason), and the host instruction in the cache, then the
unit's chain stubs and whether each has been patched to its target.
"""

from __future__ import annotations

import iced_x86 as iced

from ...allocator import MONITOR_WINDOW
from . import classify as C

KIND_LABEL = {C.IDENT: "IDENT", C.JCC: "jcc->tc", C.JMP: "jmp->tc", C.CALL: "call", C.CLI: "inline",
              C.CALLOUT: "CALLOUT", "continue": "end"}


def find_unit(tc, guest: int):
    """The unit to show for guest EIP ``guest``: the valid one entered there, else one
    whose code covers it (valid first), else None."""
    found = tc.lookup(guest)
    if found is not None and found[0].entry == guest:
        return found[0]
    covering = [u for u in tc.units if any(r.guest == guest and r.kind != "continue" for r in u.rows)]
    covering.sort(key=lambda u: (not u.valid, u.entry != guest))
    return covering[0] if covering else None


def _host_text(raw: bytes, ip: int) -> str:
    if not raw:
        return ""
    fmt = iced.Formatter(iced.FormatterSyntax.INTEL)
    return fmt.format(iced.Decoder(32, raw, ip=ip).decode())


def describe_unit(tc, unit, mark: int | None = None) -> list[str]:
    """Lines: a header, one line per guest instruction with its translation, the stubs."""
    mem = tc.mem
    lines = [f"unit at guest {unit.entry:#010x} -> tcache {unit.host:#010x}: "
             f"{unit.guest_count} guest instructions ({unit.ident_count} IDENT), {unit.size} bytes"
             f"{'' if unit.valid else ' [invalidated]'}; from guest frame(s) "
             + ", ".join(f"{f << 12:#x}" for f in sorted(unit.frames)),
             f"  {'guest':<10} {'bytes':<21} {'instruction':<30} {'kind':<8}| "
             f"{'tcache':<10} {'bytes':<24} translation"]
    for row in unit.rows:
        at = row.host - MONITOR_WINDOW
        raw = bytes(mem.ram[at:at + len(row.host_bytes)])
        host = _host_text(raw, row.host)
        if row.kind == C.CALLOUT or row.kind == "continue":
            c = tc.callouts.get(row.host)
            host = f"ud2  -> monitor: {c.kind if c else '?'} ({row.reason})"
        elif row.reason:
            host += f"  ; {row.reason}"
        if row.kind in (C.JCC, C.JMP):
            target = iced.Decoder(32, raw, ip=row.host).decode().near_branch32
            stub = tc.callouts.get(target)
            host += "  ; -> chain stub (not taken yet)" if stub is not None and stub.kind == "chain" \
                else f"  ; chained to {tc.guest_at.get(target, 0):#010x}"
        guest = "" if row.kind == "continue" else row.text
        flag = ">" if mark is not None and row.guest == mark and row.kind != "continue" else " "
        lines.append(f"{flag} {row.guest:#010x} {row.guest_bytes.hex(' '):<21} {guest:<30} "
                     f"{KIND_LABEL.get(row.kind, row.kind):<8}| {row.host:#010x} {raw.hex(' '):<24} {host}")
    stubs = sorted(a for a, c in tc.callouts.items() if c.unit is unit and c.kind == "chain")
    for addr in stubs:
        c = tc.callouts[addr]
        lines.append(f"  chain stub {addr:#010x}: ud2 -> translate guest {c.guest:#010x} and patch the "
                     f"branch at {c.site:#010x}")
    return lines
