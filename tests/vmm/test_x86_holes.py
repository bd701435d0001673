"""Trap-and-emulate on the standard IA-32 CPU fails exactly where the theory says.

With the guest kernel deprivileged to ring 1, x86's sensitive but
unprivileged instructions (Robin & Irvine, USENIX
Security 2000) execute without trapping and observe the host's state
instead of the guest's.  The sensitivity probe of the bundled guest OS prints
one line per instruction; the lines that must differ from the native run,
and why, are listed here.  Every other line must be identical.
"""

from tests.vmm.runs import probe_lines, run

PREDICTED = {
    "sgdt": "SGDT stores the host GDTR: the monitor's shadow GDT in the monitor window",
    "sidt": "SIDT stores the host IDTR: the monitor's IDT",
    "str": "STR stores the host TR: the monitor's TSS selector",
    "smsw": "SMSW stores the host CR0, not the guest's MP/TS bits",
    "pushf": "PUSHF pushes the host IF, which stays 1 while the guest runs",
    "popf": "POPF at CPL 1 > IOPL silently leaves IF unchanged, and IOPL is only changed at CPL 0",
    "lar": "LAR reads the shadow descriptors: DPL 1 after ring compression",
    "lsl": "LSL reads the truncated limit of the shadow descriptor",
    "push": "PUSH CS/SS pushes selectors with RPL 1, revealing the ring",
    "pop": "POP SS loads the compressed selector (RPL 1)",
    "mov": "MOV from segment registers shows RPL 1",
    "call far": "a far CALL pushes CS with RPL 1",
    "jmp far": "CS after a far JMP carries RPL 1",
    "ret far": "CS after a far RET carries RPL 1",
}
# Sensitive instructions whose probe line does not change here, and why:
# SLDT (no LDT in either world), VERR/VERW (DPL 1 >= CPL 1 keeps the same verdicts
# on the probe's selectors), INT n (the host IDT leads to the monitor, which
# emulates the INT through the guest's IDT).


def test_probe_diverges_exactly_on_the_predicted_sensitive_instructions():
    native = probe_lines(run("native", "workload=probe").output)
    te = run("trap-emulate", "workload=probe", "standard")
    seen = probe_lines(te.output)
    assert set(native) == set(seen), "the probe must print the same set of lines"
    differing = {k for k in native if native[k] != seen[k]}
    assert differing == set(PREDICTED), (
        f"unexpected: {sorted(differing - set(PREDICTED))}, missing: {sorted(set(PREDICTED) - differing)}")


def test_divergent_values_are_the_hosts(monkeypatch=None):
    te = probe_lines(run("trap-emulate", "workload=probe", "standard").output)
    assert te["sgdt"].startswith("base=0xffc01000 limit=0xffff")
    assert te["str"].startswith("selector=0xfff8")
    assert "cpl=1" in te["push"]
    assert "if-after-cli=1" in te["pushf"]


def test_the_strict_cpu_closes_every_hole():
    native = run("native", "workload=probe")
    strict = run("trap-emulate", "workload=probe", "strict")
    assert strict.output == native.output


def test_divergence_report_names_each_instruction_address_and_both_results():
    from trapvisor.report.compare import compare
    from trapvisor.guests import build_guest
    rows = compare(str(build_guest("tvos")), cmdline="workload=probe", techniques=("trap-emulate",))
    te = rows[1]
    assert not te.identical
    kinds = {d.name for d in te.divergences}
    # Every sensitive instruction the probe showed differently is named, and
    # nothing that is not sensitive is ever reported.
    assert {"SGDT", "SIDT", "STR", "SMSW", "PUSHF", "POPF", "LAR", "LSL", "PUSH", "POP", "MOV",
            "CALL"} <= kinds
    sgdt = next(d for d in te.divergences if d.name == "SGDT")
    assert sgdt.text.startswith("sgdt") and sgdt.ip > 0x100000
    assert sgdt.guest_saw != sgdt.native_saw and "stored=" in sgdt.native_saw


def test_the_strict_cpu_has_no_divergent_sensitive_instruction():
    from trapvisor.report.compare import compare
    from trapvisor.guests import build_guest
    rows = compare(str(build_guest("tvos")), cmdline="workload=probe", techniques=("trap-emulate",),
                   strict=True)
    assert rows[1].identical and rows[1].divergences == []
    assert len(rows[1].result.audit) >= len(rows[0].result.audit) > 50
