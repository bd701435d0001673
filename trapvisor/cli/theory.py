"""``trapvisor theory ...``: the Popek-Goldberg tools on the command line.

Sub-commands::

    trapvisor theory isas
    trapvisor theory classify --isa NAME [--q N --values 0-3 | --samples N] [--format F]
    trapvisor theory theorems --isa NAME [--q N --values V] [--program-q N --length L --steps S] [--programs N]
    trapvisor theory explain  INSTRUCTION --isa NAME
    trapvisor theory x86      --compare robin-irvine [--int-n trap|gate] [--popf-if behaviour|control]
                              [--user-cpl 1|2|3] [--user-iopl 0|sampled]
    trapvisor theory run      --isa NAME PROGRAM [--vmm] [--hybrid] [--nested N] [--steps N]
    trapvisor theory vmm      --isa NAME [--programs N]
    trapvisor theory docs     [--check | --write]

``NAME`` is a bundled ISA (``theory isas`` lists them), a bridge (``x86``,
``x86-strict``) or a path to a Python file that defines an ISA.  ``--format``
is one of text (default), markdown, csv, json, latex; ``--json`` is short for
``--format json``.

Exit status: 0; 2 for bad input (one line on stderr, never a traceback); 3
when ``theorems`` finds a contradiction between a theorem's condition and the
monitor runs; 1 when ``docs --check`` finds a stale generated table.

The project's top-level CLI wires this in with :func:`add_theory_parser`;
:func:`main` runs it stand-alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from trapvisor.theory.adapter import Bounds, FormalAdapter
from trapvisor.theory.errors import TheoryError
from trapvisor.theory.isa import ISA
from trapvisor.theory.render import FORMATS, Table, render

PROGRAMS_DIR = Path(__file__).resolve().parents[1] / "theory" / "programs"

#: The x86 readings (``X86Adapter`` options): flag -> (values, default, what it decides).
X86_READINGS = {
    "--int-n": (("trap", "gate"), "trap",
                "trap: INT n, INT3, INTO and INT1 are the x86 trap sequence itself (every execution traps, so INT n "
                "is not counted); gate: they are gate transfers through the IDT, checked against the gate's DPL"),
    "--popf-if": (("behaviour", "control"), "behaviour",
                  "behaviour: EFLAGS.IF is program-visible state, so POPF's silent IF at CPL 3 is a difference in "
                  "results (mode sensitivity); control: IF belongs to M, so only a change of IF counts (control "
                  "sensitivity, from CPL 0 only)"),
    "--user-cpl": (("3", "1", "2"), "3", "the CPL of the user-mode twin of every probe state (s is CPL 0)"),
    "--user-iopl": (("0", "sampled"), "0",
                    "0: IOPL is part of M and u has IOPL 0; sampled: IOPL is ordinary state and u keeps the sampled "
                    "value"),
}


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (and exit status 2)."""

    def error(self, message: str):  # noqa: D401
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


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


def _fmt(args) -> str:
    return "json" if getattr(args, "json", False) else args.format


# ---------------------------------------------------------------------------
# loading and checking options


def _load(spec: str):
    from trapvisor.theory import registry

    if not spec.strip():
        raise TheoryError("--isa: give an ISA name or a path to a Python file")
    return registry.load(spec)


def _is_bridge(loaded) -> bool:
    return not isinstance(loaded, ISA) and not getattr(loaded, "supports_exhaustive", False)


def _load_formal(spec: str, what: str) -> ISA:
    loaded = _load(spec)
    if not isinstance(loaded, ISA):
        raise TheoryError(f"--isa {spec}: {what} needs an ISA of the formal machine, not a bridge to a real one")
    return loaded


def _given(args, *names) -> list[str]:
    return [f"--{n.replace('_', '-')}" for n in names if getattr(args, n, None) is not None]


def _bounds(args, isa: ISA | None = None) -> Bounds:
    q = Bounds.q if args.q is None else args.q
    top = 5 if isa is None else min(5, isa.fmt.max_q)
    if not 2 <= q <= top:
        raise TheoryError(f"--q {q}: must be between 2 and {top} (the enumeration grows as values**q)")
    text = "0-3" if args.values is None else args.values.strip()
    try:
        if "-" in text[1:]:
            lo, hi = (int(x) for x in text.split("-", 1))
            values = tuple(range(lo, hi + 1))
        else:
            values = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise TheoryError(f"--values {text!r}: give a range like 0-3 or a list like 0,1,5") from None
    if not values or len(values) > 8 or min(values) < 0 or len(set(values)) != len(values):
        raise TheoryError(f"--values {text!r}: between 1 and 8 distinct non-negative word values")
    if isa is not None and max(values) > isa.fmt.mask:
        raise TheoryError(f"--values {text!r}: {max(values)} does not fit in a {isa.fmt.word_bits}-bit word")
    return Bounds(q=q, values=values)


def _samples(args) -> int | None:
    if args.samples is not None and not 1 <= args.samples <= 100_000:
        raise TheoryError(f"--samples {args.samples}: must be between 1 and 100000")
    return args.samples


def _readings(args, loaded) -> dict:
    """The x86 reading options given, checked against the ISA (they apply to the x86 bridge only)."""
    given = _given(args, "int_n", "popf_if", "user_cpl", "user_iopl")
    if given and not hasattr(loaded, "bridge_report"):
        raise TheoryError(f"{', '.join(given)}: only the x86 bridge has these readings, not --isa {args.isa}")
    opts = {}
    if args.int_n is not None:
        opts["software_interrupts_trap"] = args.int_n == "trap"
    if args.popf_if is not None:
        opts["popf_if"] = args.popf_if
    if args.user_cpl is not None:
        opts["user_cpl"] = int(args.user_cpl)
    if args.user_iopl is not None:
        opts["user_iopl"] = None if args.user_iopl == "sampled" else 0
    return opts


def _bridge(loaded, args):
    """The x86 bridge's report for these options (the one run every command reads)."""
    opts = _readings(args, loaded)
    bad = _given(args, "q", "values")
    if bad:
        raise TheoryError(f"{', '.join(bad)}: --isa {args.isa} is sampled, not enumerated; use --samples")
    from trapvisor.theory.bridges.x86 import X86Adapter

    adapter = X86Adapter(strict=loaded.strict, **{**loaded.options, **opts}) if opts else loaded
    return adapter.bridge_report(samples=_samples(args), seed=args.seed)


def _classification(args, loaded):
    """Classify a formal ISA or a plug-in adapter (not the x86 bridge) by the options."""
    from trapvisor.theory.classifier import classify

    _readings(args, loaded)
    adapter = FormalAdapter(loaded) if isinstance(loaded, ISA) else loaded
    samples = _samples(args)
    if samples is not None and _given(args, "q", "values"):
        raise TheoryError("--samples and --q/--values exclude each other: sample, or enumerate within bounds")
    if samples is None and not adapter.supports_exhaustive:
        samples = getattr(adapter, "default_samples", 500)
    bounds = _bounds(args, loaded if isinstance(loaded, ISA) else None) if samples is None else None
    return classify(adapter, bounds=bounds, samples=samples, seed=args.seed)


# ---------------------------------------------------------------------------
# theory isas


@_guard
def cmd_isas(args: argparse.Namespace) -> int:
    """List the ISAs that --isa can name."""
    from trapvisor.theory import registry

    t = Table("ISAs of the formal machine (Popek & Goldberg 1974), and bridges", ["name", "instructions",
              "what it models", "summary"], align="lrll")
    rows = []
    for name, desc in registry.names():
        isa = registry.load(name) if name in registry.BUNDLED else None
        rows.append({"name": name, "instructions": len(isa.instructions) if isa else 0,
                     "models": isa.models if isa else "", "summary": desc})
        t.add(name, rows[-1]["instructions"] or "", rows[-1]["models"], desc)
    t.notes.append("Also: --isa path/to/file.py for an ISA of your own (see trapvisor/theory/programs/toy_isa.py).")
    render([t], _fmt(args), _console(), data=rows)
    return 0


# ---------------------------------------------------------------------------
# theory classify


@_guard
def cmd_classify(args: argparse.Namespace) -> int:
    """Classify every instruction of an ISA by Popek & Goldberg's definitions."""
    from trapvisor.theory.reports import classification_table, render_classification

    loaded = _load(args.isa)
    fmt = _fmt(args)
    if hasattr(loaded, "bridge_report"):
        report = _bridge(loaded, args)
        if fmt == "text":
            report.render(_console(), witnesses=not args.no_witnesses)
        else:  # the comparison with Robin and Irvine is `theory x86 --compare robin-irvine`
            render(report.tables() + [report.notes_table()], fmt, data=report.to_json())
        return 0
    c = _classification(args, loaded)
    if fmt == "text":
        render_classification(c, _console(), witnesses=not args.no_witnesses)
    else:
        render([classification_table(c)], fmt, data=c.to_json())
    return 0


# ---------------------------------------------------------------------------
# theory theorems


class _NoISA:
    """Stand-in for an ISA when a bridge is checked (no monitor runs)."""

    def __init__(self, adapter):
        self.name = adapter.name
        self.notes: dict[str, str] = {}


def _program_bounds(args, isa: ISA):
    from trapvisor.theory.program_sets import ProgramBounds

    d = ProgramBounds()
    values = d.values
    if args.program_values is not None:
        try:
            values = tuple(int(x) for x in args.program_values.split(","))
        except ValueError:
            raise TheoryError(f"--program-values {args.program_values!r}: a list like 0,1") from None
    pb = ProgramBounds(q=d.q if args.program_q is None else args.program_q,
                       length=d.length if args.length is None else args.length, values=values,
                       steps=d.steps if args.steps is None else args.steps)
    pb.check(isa)
    return pb


@_guard
def cmd_theorems(args: argparse.Namespace) -> int:
    """Check Theorems 1, 2 and 3; status 3 if a condition and the monitor runs contradict each other."""
    from trapvisor.theory.reports import counterexample_tables, render_theorems, theorem_table
    from trapvisor.theory.theorems import CONTRADICTION_EXIT, check_theorems

    loaded = _load(args.isa)
    if args.programs is not None and not 0 <= args.programs <= 10_000:
        raise TheoryError(f"--programs {args.programs}: must be between 0 and 10000")
    if not isinstance(loaded, ISA):
        bad = _given(args, "program_q", "length", "program_values", "steps", "programs")
        if bad:
            raise TheoryError(f"{', '.join(bad)}: --isa {args.isa} is a bridge to a real machine; no monitor runs on it")
        c = _bridge(loaded, args).classification if hasattr(loaded, "bridge_report") else _classification(args, loaded)
        report = check_theorems(_NoISA(loaded), classification=c, evidence=False)
    else:
        c = _classification(args, loaded)
        report = check_theorems(loaded, classification=c, program_bounds=_program_bounds(args, loaded),
                                programs=50 if args.programs is None else args.programs, seed=args.seed)
    fmt = _fmt(args)
    if fmt == "text":
        render_theorems(report, _console())
    else:
        render([theorem_table(report)] + counterexample_tables(report), fmt, data=report.to_json())
    if report.contradictions:
        names = ", ".join(f"Theorem {t.number}" for t in report.contradictions)
        print(f"trapvisor theory: contradiction: {names}: the condition and the monitor runs disagree "
              "(witness above)", file=sys.stderr)
        return CONTRADICTION_EXIT
    return 0


# ---------------------------------------------------------------------------
# theory explain


@_guard
def cmd_explain(args: argparse.Namespace) -> int:
    """Why one instruction is classified as it is: every definition, with witnesses."""
    import json

    from trapvisor.theory.reports import explain_formal, explain_x86

    loaded = _load(args.isa)
    name = args.instruction.strip()
    if hasattr(loaded, "bridge_report"):
        report = _bridge(loaded, args)
        item = report.find(name)
        if item is None:
            raise TheoryError(f"--isa {args.isa} has no instruction or form {name!r} "
                              f"(instructions: {', '.join(g.name for g in report.groups[:12])}, ...)")
        lines, data = explain_x86(report, item)
    else:
        if isinstance(loaded, ISA) and name.upper() not in loaded:
            raise TheoryError(f"ISA {loaded.name} has no instruction {name!r} "
                              f"(it has {', '.join(i.mnemonic for i in loaded.instructions)})")
        c = _classification(args, loaded)
        try:
            v = c[name]
        except KeyError:
            raise TheoryError(f"ISA {c.isa} has no instruction {name!r}") from None
        lines, data = explain_formal(c, v)
    fmt = _fmt(args)
    if fmt == "json":
        print(json.dumps(data, indent=2))
    elif fmt == "text":
        con = _console()
        for line in lines:
            con.print(line, soft_wrap=True, markup=False, highlight=False)
    elif "definitions" in data:
        from trapvisor.theory.reports import explain_table

        render([explain_table(data)], fmt)
    else:
        raise TheoryError(f"--format {fmt}: explain on a bridge prints text or json")
    return 0


# ---------------------------------------------------------------------------
# theory x86


@_guard
def cmd_x86(args: argparse.Namespace) -> int:
    """The derived x86 table beside Robin and Irvine's, every difference explained."""
    if args.compare != "robin-irvine":
        raise TheoryError(f"--compare {args.compare!r}: the one comparison is robin-irvine")
    loaded = _load(args.isa)
    if not hasattr(loaded, "bridge_report"):
        raise TheoryError(f"--isa {args.isa}: theory x86 compares the x86 bridge (x86 or x86-strict)")
    report = _bridge(loaded, args)
    t = report.comparison_table()
    render([t], _fmt(args), _console(), data=[r.to_json() for r in report.comparison()])
    return 0


# ---------------------------------------------------------------------------
# theory docs


@_guard
def cmd_docs(args: argparse.Namespace) -> int:
    """Regenerate (--write) or check (--check, the default) the generated tables in docs/."""
    from trapvisor.cli import theory_docs as docs

    stale = docs.update(write=args.write)
    if args.write:
        print(f"{len(stale)} generated block(s) rewritten" if stale else "every generated block is current")
        return 0
    if stale:
        for name in stale:
            print(f"stale: {name}", file=sys.stderr)
        print("trapvisor theory: docs are stale: run 'trapvisor theory docs --write'", file=sys.stderr)
        return 1
    print("every generated block is current")
    return 0


# ---------------------------------------------------------------------------
# theory run / vmm


def _find_program(spec: str) -> Path:
    p = Path(spec)
    if p.is_file():
        return p
    for cand in (PROGRAMS_DIR / spec, PROGRAMS_DIR / f"{spec}.tv"):
        if cand.is_file():
            return cand
    bundled = ", ".join(sorted(x.stem for x in PROGRAMS_DIR.glob("*.tv")))
    raise TheoryError(f"program {spec!r}: no such file and no bundled program of that name (bundled: {bundled})")


def _nested(n: int) -> int:
    if not 0 <= n <= 4:
        raise TheoryError(f"--nested {n}: must be between 0 and 4")
    return n


@_guard
def cmd_run(args: argparse.Namespace) -> int:
    """Assemble and run a program, bare or under the recipe-built monitor."""
    from trapvisor.cli.theory_run import run_program

    isa = _load_formal(args.isa, "theory run")
    if not 1 <= args.steps <= 100_000:
        raise TheoryError(f"--steps {args.steps}: must be between 1 and 100000")
    _nested(args.nested)
    path = _find_program(args.program)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise TheoryError(f"program {path}: cannot read it ({e})") from None
    return run_program(isa, isa.assemble(text, source=path.name), path, args, _fmt(args), _console)


@_guard
def cmd_vmm(args: argparse.Namespace) -> int:
    """Measure the recipe-built monitor: equivalence, resource control, efficiency."""
    from trapvisor.cli.theory_run import measure_vmm

    isa = _load_formal(args.isa, "theory vmm")
    if not 1 <= args.programs <= 10_000:
        raise TheoryError(f"--programs {args.programs}: must be between 1 and 10000")
    return measure_vmm(isa, args, _nested(args.nested), _fmt(args), _console)


# ---------------------------------------------------------------------------
# parser


def add_theory_parser(subparsers) -> None:
    """Add ``theory`` and its sub-commands to an argparse subparsers object."""
    import types

    theory = subparsers.add_parser(
        "theory", help="the Popek-Goldberg theory as executable code",
        description="Popek & Goldberg 1974: formal machine, classifier, theorems, recipe-built VMM.")
    theory.error = types.MethodType(_OneLineParser.error, theory)
    sub = theory.add_subparsers(dest="theory_command", metavar="COMMAND", parser_class=_OneLineParser)
    sub.required = True

    def isa_arg(p, required=True):
        p.add_argument("--isa", required=required, default=None if required else "x86", metavar="NAME",
                       help="bundled ISA name (see 'theory isas'), a bridge (x86, x86-strict) or a Python file")

    def fmt_arg(p, formats=FORMATS):
        p.add_argument("--format", choices=formats, default="text", help="output format (default text)")
        p.add_argument("--json", action="store_true", help="same as --format json")

    def bounds_args(p):
        p.add_argument("--q", type=int, default=None,
                       help=f"storage size of the enumerated machine (default {Bounds.q})")
        p.add_argument("--values", default=None, help="word values enumerated in every word (default 0-3)")
        p.add_argument("--samples", type=int, default=None,
                       help="sample N states per instruction instead of enumerating (bridges always sample)")
        p.add_argument("--seed", type=int, default=0, help="seed of the sampled search (default 0)")

    def reading_args(p):
        for flag, (choices, default, what) in X86_READINGS.items():
            p.add_argument(flag, choices=choices, default=None, help=f"x86 only (default {default}): {what}")

    p = sub.add_parser("isas", help="list the ISAs")
    fmt_arg(p)
    p.set_defaults(func=cmd_isas)

    p = sub.add_parser("classify", help="classify instructions by the definitions")
    isa_arg(p)
    bounds_args(p)
    reading_args(p)
    p.add_argument("--no-witnesses", action="store_true", help="only the table")
    fmt_arg(p)
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("theorems", help="check Theorems 1, 2, 3 against the monitor runs")
    isa_arg(p)
    bounds_args(p)
    reading_args(p)
    p.add_argument("--program-q", type=int, default=None, help="storage of the enumerated programs (default 4)")
    p.add_argument("--length", type=int, default=None, help="instruction words per enumerated program (default 1)")
    p.add_argument("--program-values", default=None, help="values of the other words, e.g. 0,1 (default 0,1)")
    p.add_argument("--steps", type=int, default=None, help="steps each enumerated program runs (default 12)")
    p.add_argument("--programs", type=int, default=None, help="random programs run besides them (default 50)")
    fmt_arg(p)
    p.set_defaults(func=cmd_theorems)

    p = sub.add_parser("explain", help="why an instruction is classified as it is, with witnesses")
    p.add_argument("instruction", metavar="INSTRUCTION", help="a mnemonic (x86: an instruction or a form name)")
    isa_arg(p)
    bounds_args(p)
    reading_args(p)
    fmt_arg(p)
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("x86", help="the derived x86 table beside Robin and Irvine's")
    p.add_argument("--compare", default="robin-irvine", metavar="robin-irvine",
                   help="what to compare with (robin-irvine)")
    isa_arg(p, required=False)
    p.add_argument("--samples", type=int, default=None, help="states per form (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(q=None, values=None)
    reading_args(p)
    fmt_arg(p)
    p.set_defaults(func=cmd_x86)

    p = sub.add_parser("docs", help="check or rewrite the tables in docs/ that these commands generate")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--check", action="store_true", help="exit 1 if a generated block is stale (default)")
    g.add_argument("--write", action="store_true", help="rewrite the stale blocks")
    p.set_defaults(func=cmd_docs)

    p = sub.add_parser("run", help="run a program, bare or under the recipe VMM")
    isa_arg(p)
    p.add_argument("program", metavar="PROGRAM", help="assembly file, or a bundled program name")
    p.add_argument("--vmm", action="store_true", help="also run it under the recipe-built monitor and compare")
    p.add_argument("--hybrid", action="store_true", help="use a hybrid monitor (implies --vmm)")
    p.add_argument("--nested", type=int, default=0, metavar="N", help="run the monitor inside N more monitors (0-4)")
    p.add_argument("--steps", type=int, default=200, help="instruction budget (default 200)")
    p.add_argument("--no-trace", action="store_true", help="do not print the step-by-step trace")
    fmt_arg(p, ("text", "json"))
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("vmm", help="measure the recipe VMM: equivalence, resource control, efficiency")
    isa_arg(p)
    p.add_argument("--programs", type=int, default=200, help="random programs (default 200)")
    p.add_argument("--nested", type=int, default=2, metavar="N", help="extra monitor levels for the nested run (0-4)")
    p.add_argument("--seed", type=int, default=0)
    fmt_arg(p)
    p.set_defaults(func=cmd_vmm)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry: ``python -m trapvisor.cli.theory theory classify ...``.

    The leading ``theory`` is optional.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "theory":
        argv = argv[1:]
    parser = _OneLineParser(prog="trapvisor")
    add_theory_parser(parser.add_subparsers(dest="command", parser_class=_OneLineParser))
    try:
        args = parser.parse_args(["theory", *argv])
    except SystemExit as e:  # argparse already printed its one-line usage error
        return int(e.code or 0)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
