"""Our derived x86 table beside Robin and Irvine's, row by row, every difference in words.

J. S. Robin and C. E. Irvine, "Analysis of the Intel Pentium's Ability to
Support a Secure Virtual Machine Monitor", USENIX Security 2000, name 17
sensitive-but-unprivileged instructions of the Pentium (18 mnemonics) in two
groups: *sensitive register instructions*, which read or change sensitive
registers without trapping, and *protection system references*, whose
implicit privilege checks assume the operating system runs at CPL 0.  Their
list is data for the comparison only: nothing in the derivation reads it.

:func:`compare` puts one row per instruction on either list: what they
say, what the bridge derived (the forms, the kinds of sensitivity), whether
the two agree, and, where they do not, why -- each explanation a function of
the run's readings (``X86Adapter`` options), so that the text never
contradicts the row it explains.  A difference nothing here explains is
printed as UNEXPLAINED, and the tests fail on it.

:data:`NOTES` are remarks on instructions the question usually turns on;
each states the verdict it assumes, and a note whose assumption the run
does not bear out is withheld (and listed as withheld) instead of printed
beside a row it would contradict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

SENSITIVE_REGISTER, PROTECTION = "sensitive register instruction", "protection system reference"

# (name, group, their reason -- our words for the facts they give)
ROBIN_IRVINE: tuple[tuple[str, str, str], ...] = (
    ("SGDT", SENSITIVE_REGISTER, "stores GDTR at any CPL: a guest reads the monitor's table address"),
    ("SIDT", SENSITIVE_REGISTER, "stores IDTR at any CPL"),
    ("SLDT", SENSITIVE_REGISTER, "stores LDTR at any CPL"),
    ("SMSW", SENSITIVE_REGISTER, "stores CR0[15:0] (PE, MP, EM, TS, ET, NE) at any CPL"),
    ("PUSHF", SENSITIVE_REGISTER, "pushes the real EFLAGS, IF and IOPL included"),
    ("POPF", SENSITIVE_REGISTER, "does not trap at insufficient privilege: IF and IOPL silently keep their values"),
    ("LAR", PROTECTION, "loads a descriptor's access rights; the result depends on CPL and RPL against DPL"),
    ("LSL", PROTECTION, "loads a segment limit; the result depends on CPL and RPL against DPL"),
    ("VERR", PROTECTION, "verifies readability from the current CPL"),
    ("VERW", PROTECTION, "verifies writability from the current CPL"),
    ("POP", PROTECTION, "POP Sreg: a segment load checked against the CPL"),
    ("PUSH", PROTECTION, "PUSH CS/SS: the pushed selector carries the CPL in bits 1:0"),
    ("CALL", PROTECTION, "far CALL: privilege checks and gate transfers depend on CPL, DPL and RPL"),
    ("JMP", PROTECTION, "far JMP: privilege checks depend on CPL, DPL and RPL"),
    ("INT n", PROTECTION, "the gate's DPL is checked against the CPL"),
    ("RET", PROTECTION, "far RET: privilege checks, and a return to an outer level, depend on the CPL"),
    ("STR", PROTECTION, "stores the TR selector, whose RPL reveals the level"),
    ("MOV", PROTECTION, "MOV from CS/SS reveals the CPL; MOV to Sreg is a segment load checked against it"),
)
ROBIN_IRVINE_NAMES = tuple(r[0] for r in ROBIN_IRVINE)

# iced mnemonic -> the instruction's name in the SDM (one SDM entry covers them).
SDM_NAME = {"PUSHFD": "PUSHF", "POPFD": "POPF", "IRETD": "IRET", "RETF": "RET", "INT": "INT n",
            "INT3": "INT n", "INTO": "INT n", "INT1": "INT n", "PUSHAD": "PUSHA", "POPAD": "POPA"}

_TRAP_READING = (
    "by the paper's definitions only memory traps are excluded: the trap this instruction takes at CPL 3 "
    "is the trap sequence, which gives the CPU to the supervisor, so it changes M (control sensitive from "
    "user mode); and in other states CPL 3 runs it without trapping, so it is not privileged.")

_IO = ("Traps at CPL 3 only for some states: when CPL > IOPL and the TSS I/O permission bitmap closes the "
       "port. " + _TRAP_READING[0].upper() + _TRAP_READING[1:] + " Robin and Irvine treat port I/O as "
       "something a monitor controls through IOPL and the bitmap of its own TSS, and a trap-and-emulate "
       "monitor does get every closed-port access: the condition of Theorem 1 is sufficient, not necessary.")


def _segload(reg: str) -> Callable[[dict], str]:
    return lambda o: (f"L{reg} loads {reg} from a far pointer with exactly MOV Sreg's checks and effect: a new "
                      f"descriptor in {reg}'s cache (base, limit, rights -- part of R) without trapping"
                      + (", and SS's descriptor must match the CPL, so the same pointer loads at one CPL and "
                         "traps at the other" if reg == "SS" else "")
                      + ". Robin and Irvine list MOV and POP for segment loads; the far-pointer loads do the "
                        "same and are missing from the list.")


#: name -> (a function of the run's options giving the explanation of a difference).
DIFFERENCES: dict[str, Callable[[dict], str]] = {
    "IRET": lambda o: ("IRET pops EFLAGS with POPF's rules (IOPL changes only at CPL 0, IF only when CPL <= IOPL) "
                       "and reloads CS -- and, returning outward, SS -- from the stack: it changes CPL, IF, IOPL "
                       "and segment caches without trapping (control sensitive) and answers differently in the "
                       "two modes like POPF. As sensitive as POPF and far RET together, but not on their list."),
    "SYSENTER": lambda o: ("SYSENTER (Pentium II and later; Robin and Irvine analysed the Pentium, which lacks it) "
                           "loads CS, SS, ESP and EIP from MSRs and sets CPL 0 without the trap sequence: from CPL 3 "
                           "it changes the mode without trapping. A monitor can disarm it only indirectly "
                           "(IA32_SYSENTER_CS = 0 makes it #GP; WRMSR is privileged)."),
    "LDS": _segload("DS"), "LES": _segload("ES"), "LFS": _segload("FS"), "LGS": _segload("GS"),
    "LSS": _segload("SS"),
    "IN": lambda o: _IO, "OUT": lambda o: _IO,
    "INSB": lambda o: _IO, "INSW": lambda o: _IO, "INSD": lambda o: _IO,
    "OUTSB": lambda o: _IO, "OUTSW": lambda o: _IO, "OUTSD": lambda o: _IO,
    "RDTSC": lambda o: ("Traps at CPL 3 only when CR4.TSD is set; " + _TRAP_READING + " Robin and Irvine do not "
                        "count it: the time stamp is outside the paper's model (timing is exempt from "
                        "equivalence, and Theorem 2 asks for a monitor without timing dependencies)."),
    "INT n": lambda o: (
        "With --int-n trap (the default), every execution of INT n, INT3, INTO (with OF=1) and INT1 traps: it is "
        "the x86 trap sequence itself -- EFLAGS, CS and EIP saved, a new CS:EIP from the IDT -- which the CPU's "
        "exception hook receives before any IDT delivery, in both modes, so every pair is excluded like a memory "
        "trap and nothing is left to be sensitive. Robin and Irvine count INT n for its gate-DPL check against the "
        "CPL, which matters when a guest's own IDT is installed on the real CPU: run with --int-n gate to read "
        "software interrupts as gate transfers, and INT n comes out control sensitive and unprivileged, as they "
        "say." if o.get("software_interrupts_trap", True) else
        "With --int-n gate INT n is read as a gate transfer, which is what Robin and Irvine count."),
    "CLI": lambda o: ("With --user-iopl sampled, IOPL is ordinary state rather than part of M: at CPL 3 with IOPL 3 "
                      "CLI runs and changes IF, so it is sensitive and not privileged. Robin and Irvine's list "
                      "matches the default reading, in which the user mode has IOPL 0 and CLI always traps there."),
    "STI": lambda o: DIFFERENCES["CLI"](o).replace("CLI", "STI"),
    "PUSHF": lambda o: (
        "With --user-iopl sampled, the two twins of a state have the same IOPL (and the same IF), so PUSHF pushes "
        "the same image in both modes: what Robin and Irvine count -- the real IF and IOPL on the guest's stack -- "
        "is a difference only when IOPL belongs to M, as in the default reading." if o.get("user_iopl", 0) is None
        else "PUSHF pushes the same flags image in both modes in every sample; see the witnesses."),
}

#: How their reason reads in the paper's terms, for the instructions on both lists
#: (printed with the kinds the run found, so a row says why it agrees).
AGREEMENTS: dict[str, str] = {
    "SGDT": "GDTR is part of R here: the stored base differs when the tables move (location sensitive)",
    "SIDT": "IDTR is part of R: location sensitive, as SGDT",
    "SLDT": "LDTR and the GDT slot of the LDT descriptor are part of R: location sensitive",
    "SMSW": "CR0 is part of R (a monitor's CR0 is its own): location sensitive",
    "PUSHF": "IOPL belongs to M, so the pushed image differs between the modes: mode sensitive",
    "POPF": "at CPL 0 it changes IOPL (control sensitive); at CPL 3 IF silently stays (mode sensitive)",
    "LAR": "the access rights it reports depend on CPL against DPL: mode sensitive",
    "LSL": "as LAR, for the limit: mode sensitive",
    "VERR": "readability from the current CPL: mode sensitive",
    "VERW": "writability from the current CPL: mode sensitive",
    "POP": "POP Sreg loads a descriptor cache (part of R) without trapping: control sensitive",
    "PUSH": "PUSH CS/SS pushes a selector whose RPL is the CPL: mode sensitive",
    "CALL": "far CALL loads CS (part of R), through a gate even into ring 0: control sensitive",
    "JMP": "far JMP loads CS: control sensitive",
    "INT n": "read as a gate transfer, INT n enters ring 0 through the IDT without the trap sequence: control sensitive",
    "RET": "far RET loads CS, and SS returning outward: control sensitive",
    "STR": "TR and the GDT slot of the TSS descriptor are part of R: location sensitive",
    "MOV": "MOV from CS/SS reveals the CPL (mode sensitive); MOV to Sreg loads a descriptor cache (control sensitive)",
}

# Instructions the question usually turns on: (what the note assumes, the note).
NOTES: dict[str, tuple[Callable, str]] = {
    "CLI": (lambda g: g.privileged == "yes",
            "Traps exactly when CPL > IOPL. IOPL belongs to M here (like M it decides what traps, and only the "
            "supervisor changes it), and u is CPL 3 with IOPL 0, the mode a monitor runs guests in: privileged."),
    "STI": (lambda g: g.privileged == "yes", "As CLI."),
    "IN": (lambda g: g.privileged == "no" and bool(g.unprivileged_sensitive),
           "Not privileged: the TSS I/O permission bitmap can open a port to CPL 3. Sensitive by the literal "
           "definitions only through the trap it takes where the port is closed (see the comparison)."),
    "OUT": (lambda g: g.privileged == "no" and bool(g.unprivileged_sensitive), "As IN."),
    "SYSEXIT": (lambda g: g.privileged == "yes" and bool(g.control),
                "Privileged (CPL 0 only) and control sensitive: it sets CPL 3, like LPSW."),
    "RDTSC": (lambda g: g.privileged == "no",
              "Traps at CPL 3 only with CR4.TSD, so not privileged. Timing is outside the model: equivalence "
              "exempts it, and it is Theorem 2's business (a monitor without timing dependencies)."),
    "CPUID": (lambda g: not g.sensitive and g.privileged == "no", "Innocuous: its answers depend on neither M nor R."),
    "RDMSR": (lambda g: g.privileged == "yes", "Privileged (CPL 0 only)."),
    "WRMSR": (lambda g: g.privileged == "yes", "Privileged (CPL 0 only); it could change the SYSENTER MSRs, part "
                                               "of R, but only the supervisor can run it."),
    "PUSH": (lambda g: _only(g, ("CS", "SS")), "Only PUSH CS and PUSH SS: the pushed selector carries the CPL."),
    "POP": (lambda g: _only(g, ("ES", "SS", "DS", "FS", "GS")),
            "Only POP Sreg: a segment load changes a descriptor cache (part of R) without trapping."),
    "MOV": (lambda g: all("Sreg" in v.name for v in g.unprivileged_sensitive),
            "Only the segment-register forms: MOV from CS/SS reveals the CPL, MOV to Sreg loads a descriptor."),
    "CALL": (lambda g: all("ptr16" in v.name or "m16:" in v.name for v in g.unprivileged_sensitive),
             "Only far CALL: it pushes CS (the CPL) and loads CS, through a call gate even into ring 0."),
    "JMP": (lambda g: all("ptr16" in v.name or "m16:" in v.name for v in g.unprivileged_sensitive),
            "Only far JMP: it loads CS with another descriptor."),
    "RET": (lambda g: all(v.name.startswith("RETF") for v in g.unprivileged_sensitive),
            "Only far RET (RETF): it loads CS, and SS when returning outward."),
}


def _only(g, operands) -> bool:
    return all(v.name.split(" (")[0].split()[-1] in operands for v in g.unprivileged_sensitive)


@dataclass
class Row:
    instruction: str
    theirs: bool
    group: str  # their group, or ""
    their_reason: str
    ours: bool  # derived: some form sensitive and not privileged
    forms: list[str]
    kinds: list[str]
    verdict: str  # our verdict in words
    agreement: str  # "agree", "derived, not on their list", "on their list, not derived"
    explanation: str

    def to_json(self) -> dict:
        return dict(vars(self))


def _kinds(g) -> list[str]:
    """The kinds of sensitivity of the unprivileged forms; "location and mode" only if neither alone."""
    found = {k for v in g.unprivileged_sensitive for k in v.kinds()}
    out = [k for k in ("control", "location", "mode") if k in found]
    return out if ("location" in found or "mode" in found) else out + (
        ["location and mode"] if "location and mode" in found else [])


def verdict_words(g) -> str:
    if g is None:
        return "not classified in this run"
    words = ["always traps" if g.vacuous else {"yes": "privileged", "no": "not privileged",
                                               "some": "some forms privileged"}[g.privileged]]
    kinds = [k for k, lst in (("control", g.control), ("location", g.location), ("mode", g.mode)) if lst]
    words.append(("sensitive: " + ", ".join(kinds)) if kinds else "no sensitivity found")
    if g.rule:
        words.append(f"traps: {g.rule}")
    return "; ".join(words)


def compare(report) -> list[Row]:
    """One row per instruction on either list (module docstring)."""
    opts = report.options
    groups = {g.name: g for g in report.groups}
    derived = report.derived
    rows = []
    names = list(ROBIN_IRVINE_NAMES) + sorted(derived - set(ROBIN_IRVINE_NAMES))
    theirs = {n: (grp, why) for n, grp, why in ROBIN_IRVINE}
    for name in names:
        g = groups.get(name)
        ours = name in derived
        on_theirs = name in theirs
        grp, why = theirs.get(name, ("", ""))
        if ours and on_theirs:
            agreement, explanation = "agree", AGREEMENTS.get(name, "")
        elif g is None:
            agreement, explanation = "not classified", "no form of it was classified in this run"
        elif on_theirs:
            agreement = "on their list, not derived"
            explanation = _explain(name, g, opts)
        else:
            agreement = "derived, not on their list"
            explanation = _explain(name, g, opts)
        rows.append(Row(name, on_theirs, grp, why, ours, [v.name for v in g.unprivileged_sensitive] if g else [],
                        _kinds(g) if g else [], verdict_words(g), agreement, explanation))
    return rows


def _explain(name: str, g, opts: dict) -> str:
    if opts.get("strict") and g.sensitive and not g.unprivileged_sensitive:
        return "the strict CPU traps it outside ring 0: sensitive and privileged"
    fn = DIFFERENCES.get(name)
    return fn(opts) if fn is not None else "UNEXPLAINED"


def notes(report) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """(printed notes as (instruction, verdict words, note), withheld notes as (instruction, note))."""
    shown, withheld = [], []
    for g in report.groups:
        if g.name in NOTES:
            expect, text = NOTES[g.name]
            (shown if expect(g) else withheld).append(
                (g.name, verdict_words(g), text) if expect(g) else (g.name, text))
    return shown, withheld
