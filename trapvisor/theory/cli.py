"""``trapvisor theory ...``: the Popek-Goldberg tools on the command line.

Sub-commands::

    trapvisor theory isas
    trapvisor theory classify --isa NAME [--json] [--q N] [--values 0-3] [--samples N]
    trapvisor theory theorems --isa NAME [--json] [--programs N]
    trapvisor theory run      --isa NAME PROGRAM [--vmm] [--hybrid] [--nested N] [--steps N]
    trapvisor theory vmm      --isa NAME [--programs N] [--json]

``NAME`` is a bundled ISA (``theory isas`` lists them), a plug-in such as
``x86``, or a path to a Python file that defines an ISA.  ``PROGRAM`` is an
assembly file or the name of a bundled program (``trapvisor/theory/programs``).

The project's top-level CLI wires this in with :func:`add_theory_parser`;
:func:`main` runs it stand-alone.  Every handler returns an exit status, and
bad input is reported as one line on stderr with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from trapvisor.theory.adapter import Bounds, FormalAdapter, ISAAdapter
from trapvisor.theory.errors import TheoryError
from trapvisor.theory.isa import ISA


def esc(x) -> str:
    """Escape text for rich markup: states and docs are full of [brackets]."""
    from rich.markup import escape

    return escape(str(x))

PROGRAMS_DIR = Path(__file__).parent / "programs"


# ---------------------------------------------------------------------------
# plumbing


def _console():
    from rich.console import Console

    # Off a terminal rich would wrap at 80 columns; witnesses read better wider.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 120, soft_wrap=False)


def _guard(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except TheoryError as e:
            print(f"trapvisor theory: error: {e}", file=sys.stderr)
            return e.exit_status
        except BrokenPipeError:  # e.g. piped into head
            return 0

    run.__name__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run


def _load(spec: str):
    from trapvisor.theory import registry

    return registry.load(spec)


def _load_formal(spec: str, what: str) -> ISA:
    loaded = _load(spec)
    if not isinstance(loaded, ISA):
        raise TheoryError(f"--isa {spec}: {what} needs an ISA of the formal machine, not a bridge to a real one")
    return loaded


def _bounds(args: argparse.Namespace) -> Bounds:
    q = args.q
    if not 2 <= q <= 5:
        raise TheoryError("--q must be between 2 and 5 (the enumeration grows as values**q)")
    text = args.values.strip()
    try:
        if "-" in text:
            lo, hi = (int(x) for x in text.split("-", 1))
            values = tuple(range(lo, hi + 1))
        else:
            values = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise TheoryError(f"--values {text!r}: give a range like 0-3 or a list like 0,1,5") from None
    if not values or len(values) > 8 or min(values) < 0:
        raise TheoryError("--values: between 1 and 8 non-negative word values")
    return Bounds(q=q, values=values)


def _mark(flag: bool) -> str:
    return "[green]yes[/]" if flag else "[dim]no[/]"


# ---------------------------------------------------------------------------
# theory isas


@_guard
def cmd_isas(args: argparse.Namespace) -> int:
    """List the ISAs that --isa can name."""
    from trapvisor.theory import registry

    rows = []
    for name, desc in registry.names():
        models = ""
        n = 0
        if name in registry.BUNDLED:
            isa = registry.load(name)
            models, n = isa.models, len(isa.instructions)
        rows.append({"name": name, "instructions": n, "models": models, "summary": desc})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.table import Table

    t = Table(title="ISAs of the formal machine (Popek & Goldberg 1974)", title_justify="left")
    for col in ("name", "instr.", "what it models", "summary"):
        t.add_column(col)
    for r in rows:
        t.add_row(esc(r["name"]), str(r["instructions"] or ""), esc(r["models"]), esc(r["summary"]))
    con = _console()
    con.print(t)
    con.print("Also: --isa path/to/file.py for an ISA of your own (see trapvisor/theory/programs/toy_isa.py).")
    return 0


# ---------------------------------------------------------------------------
# theory classify


@_guard
def cmd_classify(args: argparse.Namespace) -> int:
    """Classify every instruction of an ISA by Popek & Goldberg's definitions."""
    from trapvisor.theory.classifier import classify

    loaded = _load(args.isa)
    command = getattr(loaded, "classify_command", None)
    if command is not None:  # a bridge with its own report (trapvisor/theory/bridges/x86.py)
        return command(args, _console())
    adapter: ISAAdapter = FormalAdapter(loaded) if isinstance(loaded, ISA) else loaded
    bounds = _bounds(args)
    c = classify(adapter, bounds=bounds, samples=args.samples, seed=args.seed)
    if args.json:
        print(json.dumps(c.to_json(), indent=2))
        return 0
    render_classification(c, _console(), witnesses=not args.no_witnesses)
    return 0


def render_classification(c, con, witnesses: bool = True) -> None:
    from rich.table import Table

    a = c.adapter
    con.print(f"[bold]ISA {esc(c.isa)}[/]  {esc(a.description)}")
    con.print(f"[bold]{c.method}[/]: {esc(c.scope)}")
    con.print(f"{c.executions} instruction executions, {c.seconds:.1f} s")
    t = Table(show_lines=False)
    for col in ("instruction", "privileged", "control\nsensitive", "location\nsensitive", "mode\nsensitive",
                "user\nsensitive", "supervisor\nsensitive", "innocuous"):
        t.add_column(col, justify="left" if col == "instruction" else "center")
    sampled = c.method == "sampled"

    def found(flag: bool) -> str:  # sampled: a 'no' is only "no witness found"
        return "[dim]none found[/]" if sampled and not flag else _mark(flag)

    for v in c.verdicts:
        if sampled and v.privileged:
            priv = "[green]not refuted[/]"
        else:
            priv = _mark(v.privileged) + (" [dim](vacuous)[/]" if v.vacuous else "")
        innocuous = "[green]no witness[/]" if sampled and v.innocuous else _mark(v.innocuous)
        t.add_row(esc(v.name), priv, found(bool(v.control)), found(bool(v.location)), found(bool(v.mode)),
                  found(bool(v.user)), found(bool(v.supervisor)), innocuous)
    con.print(t)
    if witnesses:
        con.print("[bold]Witnesses[/] (S = (E, M, P, R); a 'yes' for privileged shows one of the pairs checked)")
        for v in c.verdicts:
            shown = [w for w in v.witnesses() if w.definition != "not privileged"]
            if not shown:
                continue
            labels = []
            for w in shown:
                kinds = [w.definition]
                if w is v.user:
                    kinds.append("user sensitive")
                if w is v.supervisor:
                    kinds.append("supervisor sensitive")
                labels.append((w, kinds))
            con.print(f"[bold]{esc(v.name)}[/]  [dim]{esc(v.doc)}[/]")
            for w, kinds in labels:
                lines = w.lines(a)
                extra = f" (pairs checked: {v.pairs})" if w.definition == "privileged" else ""
                con.print(f"  [cyan]{' + '.join(kinds)}[/]{extra}: {esc(lines[0].split(' -- ', 1)[-1])}", soft_wrap=True)
                for line in lines[1:]:
                    con.print("  " + esc(line), soft_wrap=True)
    con.print(f"[yellow]{esc(c.caveat)}[/]", soft_wrap=True)


# ---------------------------------------------------------------------------
# theory theorems


@_guard
def cmd_theorems(args: argparse.Namespace) -> int:
    """Check Theorems 1, 2 and 3 for an ISA."""
    from trapvisor.theory.theorems import check_theorems

    loaded = _load(args.isa)
    if not isinstance(loaded, ISA):
        # A bridge to a real machine: the classification is sampled, and there
        # is no recipe monitor to run on it.
        from trapvisor.theory.classifier import classify

        c = classify(loaded, samples=args.samples or getattr(loaded, "default_samples", 500), seed=args.seed)
        report = check_theorems(_NoISA(loaded), classification=c, programs=0)
    else:
        report = check_theorems(loaded, bounds=_bounds(args), programs=args.programs, seed=args.seed)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
        return 0
    render_theorems(report, _console())
    return 0


class _NoISA:
    """Stand-in for an ISA when a bridge is checked (no monitor runs)."""

    def __init__(self, adapter: ISAAdapter):
        self.name = adapter.name
        self.notes: dict[str, str] = {}


def render_theorems(report, con) -> None:
    c = report.classification
    con.print(f"[bold]ISA {esc(report.isa.name)}[/]")
    con.print(f"classification: {c.method}, {esc(c.scope)}")
    for t in report.theorems:
        verdict = ("[green]condition holds[/]" if t.holds else "[red]condition fails[/]")
        con.print()
        con.print(f"[bold]Theorem {t.number}[/]  {t.condition}: {verdict}  =>  [bold]{t.conclusion}[/]")
        con.print(f"  [dim]\"{t.statement}\"[/]  (Popek & Goldberg 1974, CACM 17(7))", soft_wrap=True)
        con.print(f"  why: {esc(t.reason)}", soft_wrap=True)
        for o in t.offenders:
            con.print(f"  [red]offending instruction {esc(o.instruction)}[/]")
            for line in o.sensitivity.lines(c.adapter):
                con.print("    " + esc(line), soft_wrap=True)
            if o.not_privileged:
                for line in o.not_privileged.lines(c.adapter):
                    con.print("    " + esc(line), soft_wrap=True)
        for e in t.evidence:
            _render_equivalence_line(e, con)
            if e.first_failure and not t.holds:
                con.print("    first divergence:")
                for line in e.first_failure.lines(report.isa)[-6:]:
                    con.print("    " + esc(line), soft_wrap=True)
        if t.remark:
            con.print(f"  [yellow]{esc(t.remark)}[/]", soft_wrap=True)
    con.print()
    con.print("[dim]Each condition is sufficient, not necessary: when it fails the theorem is silent, and the "
              "monitor runs above are evidence, not proof.[/]", soft_wrap=True)


def _render_equivalence_line(e, con) -> None:
    what = {"full": "recipe VMM", "hybrid": "hybrid VMM"}[e.mode]
    if e.nesting:
        what += f" nested {e.nesting + 1} deep"
    ok = e.equivalent and not e.violations
    mark = "[green]ok[/]" if ok else "[red]broken[/]"
    rc = "no resource-control violations" if not e.violations else f"resource control broken in {e.programs_with_violations} programs"
    con.print(f"  evidence: {what}: equivalent on {e.passed}/{e.programs} random programs, {rc}, "
              f"{e.efficiency:.0%} of guest instructions direct -- {mark}", soft_wrap=True)


# ---------------------------------------------------------------------------
# theory run


def _find_program(spec: str) -> Path:
    p = Path(spec)
    if p.is_file():
        return p
    for cand in (PROGRAMS_DIR / spec, PROGRAMS_DIR / f"{spec}.tv"):
        if cand.is_file():
            return cand
    bundled = ", ".join(sorted(x.stem for x in PROGRAMS_DIR.glob("*.tv")))
    raise TheoryError(f"program {spec!r}: no such file and no bundled program of that name (bundled: {bundled})")


@_guard
def cmd_run(args: argparse.Namespace) -> int:
    """Assemble and run a program, bare or under the recipe-built monitor."""
    from trapvisor.theory.experiments import GuestImage, find_divergence, run_virtualized

    isa = _load_formal(args.isa, "theory run")
    path = _find_program(args.program)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise TheoryError(f"program {path}: cannot read it ({e})") from None
    program = isa.assemble(text, source=path.name)
    if args.steps < 1:
        raise TheoryError("--steps must be at least 1")
    if args.nested < 0:
        raise TheoryError("--nested must be 0 or more")
    vmm = args.vmm or args.hybrid or args.nested > 0
    machine = program.machine()
    final, trace = machine.run(program.initial_state(), args.steps)
    out: dict = {"isa": isa.name, "program": str(path), "q": program.q, "start": str(program.start),
                 "bare": {"steps": len(trace), "final": _state_json(final), "halted": _halted(trace)}}
    guest = GuestImage.from_program(program)
    run = div = None
    if vmm:
        try:
            run = run_virtualized(isa, guest, args.steps, hybrid=args.hybrid, nesting=args.nested)
        except ValueError as e:
            raise TheoryError(f"cannot host this program: {e}") from None
        div = None if run.final == final else find_divergence(isa, guest, args.steps, hybrid=args.hybrid, nesting=args.nested)
        out["vmm"] = {
            "monitor": "hybrid" if args.hybrid else "full", "nesting": args.nested,
            "final": _state_json(run.final), "equivalent": run.final == final,
            "guest_instructions": run.guest_steps, "executed_directly": run.direct,
            "interpreted": dict(run.interpreted), "reflected_traps": dict(run.reflected),
            "resource_violations": [str(v) for v in run.violations],
            "divergence": div.to_json(isa) if div else None,
        }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    con = _console()
    _render_run(con, isa, program, path, trace, final, args)
    if run is not None:
        _render_vmm_run(con, isa, run, final, div, args)
    return 0


def _halted(trace) -> bool:
    return bool(trace) and trace[-1].after == trace[-1].before


def _state_json(s) -> dict:
    return {"E": list(s.E), "M": str(s.M), "P": s.P, "R": [s.R.l, s.R.b]}


def _render_run(con, isa, program, path, trace, final, args) -> None:
    from rich.table import Table

    con.print(f"[bold]{esc(path.name)}[/] on ISA [bold]{esc(isa.name)}[/]: bare machine of {program.q} words, "
              f"start PSW {esc(program.start)}")
    if not args.no_trace:
        t = Table(title="bare run", title_justify="left")
        for col in ("step", "M", "P", "R", "instruction", "effect"):
            t.add_column(col)
        shown = trace[:60]
        for n, ex in enumerate(shown, 1):
            b, a = ex.before, ex.after
            name = str(ex.instance) if ex.instance else isa.disassemble(b.E[b.R.l + b.P]) if b.R.l + b.P < len(b.E) else "-"
            if ex.trap:
                effect = f"[red]{ex.trap} trap[/] -> old PSW in {esc('E[0]')}, new PSW {esc(a.psw)}"
            else:
                changes = [f"E[{i}]={y}" for i, (x, y) in enumerate(zip(b.E, a.E)) if x != y]
                if (a.M, a.R) != (b.M, b.R):
                    changes.append(f"M={a.M} R={a.R}")
                if a == b:
                    changes.append("fixed point: halted")
                effect = esc(", ".join(changes))
            t.add_row(str(n), str(b.M), str(b.P), esc(b.R), esc(name), effect)
        con.print(t)
        if len(trace) > len(shown):
            con.print(f"... {len(trace) - len(shown)} more steps")
    status = "halted (fixed point)" if _halted(trace) else f"stopped after {len(trace)} steps"
    con.print(f"bare machine: {status}; final state {esc(final)}")


def _render_vmm_run(con, isa, run, final, div, args) -> None:
    kind = "hybrid VMM" if args.hybrid else "recipe VMM"
    depth = f", {args.nested + 1} monitors deep" if args.nested else ""
    con.print()
    con.print(f"[bold]under the {kind}{depth}[/]: final virtual state {esc(run.final)}")
    interp = ", ".join(f"{k} x{v}" for k, v in sorted(run.interpreted.items())) or "none"
    refl = ", ".join(f"{k} x{v}" for k, v in sorted(run.reflected.items())) or "none"
    share = run.direct / run.guest_steps if run.guest_steps else 0
    con.print(f"  efficiency: {run.direct} of {run.guest_steps} guest instructions executed directly ({share:.0%}); "
              f"interpreted: {esc(interp)}; traps reflected to the guest: {esc(refl)}")
    if run.violations:
        con.print(f"  [red]resource control: {len(run.violations)} violation(s)[/]")
        for v in run.violations[:5]:
            con.print(f"    {esc(v)}", soft_wrap=True)
    else:
        con.print("  resource control: the guest stayed inside its partition and never changed M or R itself")
    if run.final == final:
        con.print("  equivalence: [green]the guest's final state equals the bare run's[/]")
    else:
        con.print("  equivalence: [red]broken[/]")
        if div:
            for line in div.lines(isa)[len(div.guest.image) + 2:]:
                con.print("    " + esc(line), soft_wrap=True)


# ---------------------------------------------------------------------------
# theory vmm


@_guard
def cmd_vmm(args: argparse.Namespace) -> int:
    """Measure the recipe-built monitor: equivalence, resource control, efficiency."""
    from trapvisor.theory.experiments import equivalence, two_vms

    isa = _load_formal(args.isa, "theory vmm")
    if args.programs < 1:
        raise TheoryError("--programs must be at least 1")
    reports = [
        equivalence(isa, args.programs, seed=args.seed),
        equivalence(isa, args.programs, seed=args.seed, hybrid=True),
        equivalence(isa, max(args.programs // 4, 1), seed=args.seed, nesting=args.nested),
    ]
    pair = two_vms(isa, max(args.programs // 4, 1), seed=args.seed + 1)
    if args.json:
        print(json.dumps({"runs": [r.to_json(isa) for r in reports],
                          "two_vms": {"guests": pair.programs, "equivalent": pair.passed,
                                      "resource_violations": pair.violations, "switches": pair.switches}},
                         indent=2))
        return 0
    from rich.table import Table

    con = _console()
    con.print(f"[bold]Recipe-built monitor CP = <D, A, {{v_i}}> on ISA {esc(isa.name)}[/]  "
              f"(random programs of 8 words, {reports[0].steps} instructions each, seed {args.seed})")
    t = Table()
    for col in ("monitor", "programs", "equivalent", "resource control", "direct", "interpreted (no trap)", "reflected traps"):
        t.add_column(col)
    for r in reports:
        name = "hybrid" if r.mode == "hybrid" else "full"
        if r.nesting:
            name += f", {r.nesting + 1} deep"
        interp = ", ".join(f"{k} {v}" for k, v in sorted(r.interpreted.items()))
        refl = ", ".join(f"{k} {v}" for k, v in sorted(r.reflected.items()))
        rc = "[green]held[/]" if not r.violations else f"[red]broken in {r.programs_with_violations}[/]"
        eq = f"[green]{r.passed}/{r.programs}[/]" if r.equivalent else f"[red]{r.passed}/{r.programs}[/]"
        t.add_row(name, str(r.programs), eq, rc, f"{r.efficiency:.0%}", esc(interp), esc(refl))
    eq2 = f"{pair.passed}/{pair.programs}"
    t.add_row("full, two VMs at once", str(pair.programs), f"[green]{eq2}[/]" if pair.passed == pair.programs else f"[red]{eq2}[/]",
              "[green]held[/]" if not pair.violations else f"[red]{pair.violations} violations[/]", "", f"{pair.switches} switches", "")
    con.print(t)
    con.print("[dim]direct = share of guest instructions the real machine executed itself; the rest went through "
              "the dispatcher (interpreted, or a trap the bare machine takes too, reflected to the guest).[/]", soft_wrap=True)
    for r in reports:
        if r.first_failure:
            con.print(f"\n[bold red]equivalence breaks[/] ({r.mode} monitor{', nested' if r.nesting else ''}):")
            for line in r.first_failure.lines(isa):
                con.print("  " + esc(line), soft_wrap=True)
            break
    for r in reports:
        if r.first_violation:
            con.print(f"\n[bold red]resource control breaks[/] ({r.mode} monitor): {esc(r.first_violation)}", soft_wrap=True)
            break
    return 0


# ---------------------------------------------------------------------------
# parser


def add_theory_parser(subparsers) -> None:
    """Add ``theory`` and its sub-commands to an argparse subparsers object."""
    theory = subparsers.add_parser(
        "theory", help="the Popek-Goldberg theory as executable code",
        description="Popek & Goldberg 1974: formal machine, classifier, theorems, recipe-built VMM.")
    sub = theory.add_subparsers(dest="theory_command", metavar="COMMAND")
    sub.required = True

    def isa_arg(p):
        p.add_argument("--isa", required=True, metavar="NAME",
                       help="bundled ISA name (see 'theory isas'), a plug-in (x86) or a path to a Python file")

    def bounds_args(p):
        p.add_argument("--q", type=int, default=Bounds.q, help="storage size of the enumerated machine (default 3)")
        p.add_argument("--values", default="0-3", help="word values enumerated in every word (default 0-3)")
        p.add_argument("--seed", type=int, default=0, help="seed for random searches (default 0)")

    p = sub.add_parser("isas", help="list the ISAs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_isas)

    p = sub.add_parser("classify", help="classify instructions by the definitions")
    isa_arg(p)
    bounds_args(p)
    p.add_argument("--samples", type=int, default=None,
                   help="use a hypothesis search of N examples per instruction instead of enumeration")
    p.add_argument("--no-witnesses", action="store_true", help="only the table")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("theorems", help="check Theorems 1, 2, 3")
    isa_arg(p)
    bounds_args(p)
    p.add_argument("--programs", type=int, default=100, help="random programs run under the monitors (default 100)")
    p.add_argument("--samples", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_theorems)

    p = sub.add_parser("run", help="run a program, bare or under the recipe VMM")
    isa_arg(p)
    p.add_argument("program", metavar="PROGRAM", help="assembly file, or a bundled program name")
    p.add_argument("--vmm", action="store_true", help="also run it under the recipe-built monitor and compare")
    p.add_argument("--hybrid", action="store_true", help="use a hybrid monitor (implies --vmm)")
    p.add_argument("--nested", type=int, default=0, metavar="N", help="run the monitor inside N more monitors (implies --vmm)")
    p.add_argument("--steps", type=int, default=200, help="instruction budget (default 200)")
    p.add_argument("--no-trace", action="store_true", help="do not print the step-by-step trace")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("vmm", help="measure the recipe VMM: equivalence, resource control, efficiency")
    isa_arg(p)
    p.add_argument("--programs", type=int, default=200, help="random programs (default 200)")
    p.add_argument("--nested", type=int, default=2, metavar="N", help="extra monitor levels for the nested run (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_vmm)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry: ``python -m trapvisor.theory.cli theory classify ...``.

    The leading ``theory`` is optional.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "theory":
        argv = argv[1:]
    parser = argparse.ArgumentParser(prog="trapvisor")
    add_theory_parser(parser.add_subparsers(dest="command"))
    try:
        args = parser.parse_args(["theory", *argv])
    except SystemExit as e:  # argparse already printed its one-line usage error
        return int(e.code or 0)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
