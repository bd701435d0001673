"""Witnesses of the x86 bridge, in words: which registers, flags and memory differ.

A witness of the classifier is a list of executions; for x86 a state is a
whole machine, so these helpers say what matters about it: for a control
witness, which part of M or R changed; for a behaviour witness, which
registers, flags, selectors or window bytes differ between the two results.
"""

from __future__ import annotations

from trapvisor.theory.bridges.x86_state import CODE_PAGE, DATA_PAGE, INNER_PAGE, STACK_PAGE, Snapshot
from trapvisor.theory.definitions import Witness

def _short(name: str, group: str | None = None) -> str:
    """A form's name without its group's mnemonic or opcode: 'PUSH CS (o16 0E)' -> 'CS o16'."""
    o16 = "(o16 " in name
    base = name.split(" (")[0]
    first, _, rest = base.partition(" ")
    if group is not None and first == group and rest:
        base = rest
    return base + (" o16" if o16 else "")


# ---------------------------------------------------------------------------
# witness summaries

_REG_NAMES = ("EAX", "ECX", "EDX", "EBX", "ESP", "EBP", "ESI", "EDI")
_SEG_NAMES = ("ES", "CS", "SS", "DS", "FS", "GS")
_RELOC = {1: "window moved up by the segment bases", -1: "window moved down by the segment bases",
          2: "window on other frames (paging)", -2: "paging switched",
          3: "window moved up, on other frames", -3: "window moved down, on other frames"}


def _region(off: int) -> str:
    for base, name in ((INNER_PAGE, "inner stacks"), (STACK_PAGE, "stack"), (DATA_PAGE, "data"), (CODE_PAGE, "code")):
        if off >= base:
            return name
    return "?"


def diff_views(v1, v2, limit: int = 4) -> list[str]:
    if v1[0] == "trap" or v2[0] == "trap":
        say = lambda v: f"traps ({v[1]})" if v[0] == "trap" else "completes"  # noqa: E731
        return [f"S1 {say(v1)}, S2 {say(v2)}"]
    regs1, eip1, fl1, sel1, win1, ports1 = v1
    regs2, eip2, fl2, sel2, win2, ports2 = v2
    out = [f"{_REG_NAMES[i]} {a:#x} vs {b:#x}" for i, (a, b) in enumerate(zip(regs1, regs2)) if a != b]
    if eip1 != eip2:
        out.append(f"EIP {eip1:#x} vs {eip2:#x}")
    if fl1 != fl2:
        out.append(f"EFLAGS {fl1:#x} vs {fl2:#x}")
    for n, a, b in zip(("ES", "DS", "FS", "GS"), sel1, sel2):
        if a != b:
            out.append(f"{n} {a:#06x} vs {b:#06x}")
    if win1 != win2:
        offs = sorted({i & ~3 for i in range(len(win1)) if win1[i] != win2[i]})
        for o in offs[:limit]:
            a = int.from_bytes(win1[o:o + 4], "little")
            b = int.from_bytes(win2[o:o + 4], "little")
            out.append(f"memory [{o:#06x}] ({_region(o)}) {a:#010x} vs {b:#010x}")
        if len(offs) > limit:
            out.append(f"... {len(offs) - limit} more dwords")
    if ports1 != ports2:
        out.append(f"port writes {list(ports1)} vs {list(ports2)}")
    return out


def diff_resources(r1, r2) -> list[str]:
    (cpl1, fl1, cs1, ss1, cache1, gdtr1, idtr1, ldtr1, tr1, cr01, cr31, cr41, msr1) = r1
    (cpl2, fl2, cs2, ss2, cache2, gdtr2, idtr2, ldtr2, tr2, cr02, cr32, cr42, msr2) = r2
    out = []
    if cpl1 != cpl2:
        out.append(f"CPL {cpl1} -> {cpl2}")
    if (fl1 ^ fl2) & 0x3000:
        out.append(f"IOPL {(fl1 >> 12) & 3} -> {(fl2 >> 12) & 3}")
    if (fl1 ^ fl2) & 0x200:
        out.append(f"IF {int(bool(fl1 & 0x200))} -> {int(bool(fl2 & 0x200))}")
    if cs1 != cs2:
        out.append(f"CS {cs1:#06x} -> {cs2:#06x}")
    if ss1 != ss2:
        out.append(f"SS {ss1:#06x} -> {ss2:#06x}")
    for n, a, b in zip(_SEG_NAMES, cache1, cache2):
        if a != b:
            out.append(f"{n} cache base/limit/rights {a[0]:#x}/{a[1]:#x}/{a[2]:#x} -> {b[0]:#x}/{b[1]:#x}/{b[2]:#x}")
    for n, a, b in (("GDTR", gdtr1, gdtr2), ("IDTR", idtr1, idtr2), ("LDTR", ldtr1, ldtr2), ("TR", tr1, tr2)):
        if a != b:
            out.append(f"{n} {tuple(hex(x) for x in a)} -> {tuple(hex(x) for x in b)}")
    for n, a, b in (("CR0", cr01, cr02), ("CR3", cr31, cr32), ("CR4", cr41, cr42)):
        if a != b:
            out.append(f"{n} {a:#x} -> {b:#x}")
    if msr1 != msr2:
        out.append(f"SYSENTER MSRs {tuple(hex(x) for x in msr1)} -> {tuple(hex(x) for x in msr2)}")
    return out


def witness_lines(a, w: Witness, pairs: int | None = None) -> list[str]:
    """The witness's states and what differs, a line each (states are whole machines)."""
    extra = f" (pairs checked: {pairs})" if pairs is not None else ""
    out = [f"  {w.definition}: {w.instance} -- {w.note}{extra}"]
    ex = w.executions
    for n, o in enumerate(ex, 1):
        tag = (f" [r(+)x, x={o.before.tag:+d}: {_RELOC[o.before.tag]}; other tables and CR0.MP/TS/NE]"
               if o.before.tag else "")
        out.append(f"    S{n} = {a.describe(o.before)}{tag}")
        if o.trap:
            out.append(f"    i(S{n}) traps: {o.trap}")
    if w.definition == "control sensitive" and ex:
        o = ex[0]
        how = "through the trap sequence" if o.trapped else "without trapping"
        out.append(f"    changes {how}: " + "; ".join(diff_resources(a.resources(o.before), a.resources_after(o))))
    elif w.definition.split(" (")[0] in ("location sensitive", "mode sensitive", "behaviour sensitive") \
            and len(ex) == 2:
        out.append("    results differ: " + "; ".join(diff_views(a.observe(ex[0]), a.observe(ex[1]))))
    elif w.definition == "not privileged" and len(ex) == 2 and not ex[1].trapped:
        out.append("    i(S2) in user mode completes without trapping")
    elif w.definition == "privileged" and len(ex) == 2:
        out.append(f"    i(S1) completes in supervisor mode; i(S2) traps in user mode ({ex[1].trap})")
    return out
