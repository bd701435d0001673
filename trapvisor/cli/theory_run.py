"""``theory run`` and ``theory vmm``: a program bare and under the recipe monitor, and the monitor measured.

Popek & Goldberg 1974 (CACM 17(7), section 3): a monitor must give
equivalence, resource control and efficiency.  ``run`` shows one program,
step by step, bare and (with ``--vmm``) under the monitor, and where the two
part; ``vmm`` measures the three properties over random programs
(``experiments.py``).
"""

from __future__ import annotations

import json

from rich.markup import escape as _escape

from trapvisor.theory.render import Table, render


def esc(x) -> str:
    """Escape text for rich markup: states and docs are full of [brackets]."""
    return _escape(str(x))


def run_program(isa, program, path, args, fmt, console) -> int:
    from trapvisor.theory.experiments import GuestImage, find_divergence, run_virtualized

    vmm = args.vmm or args.hybrid or args.nested > 0
    machine = program.machine()
    final, trace = machine.run(program.initial_state(), args.steps)
    out: dict = {"isa": isa.name, "program": str(path), "q": program.q, "start": str(program.start),
                 "bare": {"steps": len(trace), "final": _state_json(final), "halted": _halted(trace)}}
    guest = GuestImage.from_program(program)
    run = div = None
    if vmm:
        run = run_virtualized(isa, guest, args.steps, hybrid=args.hybrid, nesting=args.nested)
        div = None if run.final == final else find_divergence(isa, guest, args.steps, hybrid=args.hybrid,
                                                              nesting=args.nested)
        out["vmm"] = {
            "monitor": "hybrid" if args.hybrid else "full", "nesting": args.nested,
            "final": _state_json(run.final), "equivalent": run.final == final,
            "guest_instructions": run.guest_steps, "executed_directly": run.direct,
            "interpreted": dict(run.interpreted), "reflected_traps": dict(run.reflected),
            "resource_violations": [str(v) for v in run.violations],
            "divergence": div.to_json(isa) if div else None,
        }
    if fmt == "json":
        print(json.dumps(out, indent=2))
        return 0
    con = console()
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


def measure_vmm(isa, args, nested: int, fmt: str, console) -> int:
    """``theory vmm``: the three properties over random programs; two VMs at once (clipped bounds); nesting."""
    from trapvisor.theory.experiments import equivalence, two_vms

    reports = [
        equivalence(isa, args.programs, seed=args.seed),
        equivalence(isa, args.programs, seed=args.seed, hybrid=True),
        equivalence(isa, max(args.programs // 4, 1), seed=args.seed, nesting=nested),
    ]
    pair = two_vms(isa, max(args.programs // 4, 1), seed=args.seed + 1)
    data = {"runs": [r.to_json(isa) for r in reports],
            "two_vms": {"guests": pair.programs, "equivalent": pair.passed,
                        "resource_violations": pair.violations, "switches": pair.switches}}
    if fmt != "text":
        t = Table(f"Recipe-built monitor CP = <D, A, {{v_i}}> on ISA {isa.name} (random programs of 8 words, "
                  f"{reports[0].steps} instructions each, seed {args.seed})",
                  ["monitor", "programs", "equivalent", "resource control", "direct"])
        for r in reports:
            t.add(r.monitor, r.programs, f"{r.passed}/{r.programs}", "held" if not r.violations else
                  f"broken in {r.programs_with_violations}", f"{r.efficiency:.0%}")
        t.add("recipe VMM, two VMs at once (the first one's bound clipped)", pair.programs,
              f"{pair.passed}/{pair.programs}", "held" if not pair.violations else f"{pair.violations} violations", "")
        render([t], fmt, data=data)
        return 0
    from rich.table import Table as RichTable

    con = console()
    con.print(f"[bold]Recipe-built monitor CP = <D, A, {{v_i}}> on ISA {esc(isa.name)}[/]  "
              f"(random programs of 8 words, {reports[0].steps} instructions each, seed {args.seed})")
    t = RichTable()
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
    t.add_row("full, two VMs at once (first bound clipped)", str(pair.programs), f"[green]{eq2}[/]" if pair.passed == pair.programs else f"[red]{eq2}[/]",
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


