"""The HTML comparison report: the table, a bar chart of slowdowns, a timeline of events.

Self-contained (inline SVG, no scripts, no external assets), so it opens
anywhere and can be attached to a bug report or a course page.
"""

from __future__ import annotations

import html

from .compare import Row

KIND_COLOURS = {"trap": "#d62728", "exit": "#9467bd", "callout": "#2ca02c",
                "hypercall": "#17becf", "inject": "#1f77b4"}


def _bar_chart(rows: list[Row], key: str, title: str) -> str:
    values = [(r.result.technique, getattr(r, key)) for r in rows if getattr(r, key) is not None]
    top = max((v for _, v in values), default=1.0) or 1.0
    width, bar_h, gap, left = 640, 22, 8, 130
    height = len(values) * (bar_h + gap) + 30
    out = [f'<svg width="{width}" height="{height}" role="img" aria-label="{html.escape(title)}">',
           f'<text x="0" y="14" font-weight="bold">{html.escape(title)}</text>']
    for i, (name, v) in enumerate(values):
        y = 24 + i * (bar_h + gap)
        w = max(1, int((width - left - 80) * v / top))
        out.append(f'<text x="0" y="{y + 15}">{html.escape(name)}</text>')
        out.append(f'<rect x="{left}" y="{y}" width="{w}" height="{bar_h}" fill="#4c78a8"/>')
        out.append(f'<text x="{left + w + 6}" y="{y + 15}">{v:.2f}x</text>')
    out.append("</svg>")
    return "\n".join(out)


def _timeline(row: Row, buckets: int = 120) -> str:
    events = row.result.events.events
    if not events:
        return "<p>(no events recorded)</p>"
    total = max(row.result.instructions, 1)
    kinds = sorted({e.kind for e in events})
    counts = {k: [0] * buckets for k in kinds}
    for e in events:
        at = e.detail.get("at", 0)
        counts[e.kind][min(buckets - 1, at * buckets // total)] += 1
    peak = max(max(c) for c in counts.values()) or 1
    lane_h, width, left = 40, 720, 90
    height = lane_h * len(kinds) + 30
    out = [f'<svg width="{width + left}" height="{height}" role="img" aria-label="event timeline">']
    for li, k in enumerate(kinds):
        y0 = 10 + li * lane_h
        out.append(f'<text x="0" y="{y0 + lane_h // 2}">{html.escape(k)}</text>')
        for b, n in enumerate(counts[k]):
            if n:
                h = max(1, int((lane_h - 6) * n / peak))
                x = left + b * width // buckets
                out.append(f'<rect x="{x}" y="{y0 + lane_h - 4 - h}" width="{max(1, width // buckets - 1)}" '
                           f'height="{h}" fill="{KIND_COLOURS.get(k, "#888")}"><title>{n} {k} events</title></rect>')
    out.append(f'<text x="{left}" y="{height - 4}">guest instructions 0 .. {total:,}</text>')
    out.append("</svg>")
    return "\n".join(out)


def render(rows: list[Row], kernel: str, cmdline: str) -> str:
    esc = html.escape
    head = ("technique", "cpu", "identical to native", "exit", "direct %", "traps by reason",
            "simulated cycles", "slowdown (cycles)", "wall s", "slowdown (wall)")
    body = []
    for row in rows:
        r = row.result
        traps = "<br>".join(f"{esc(k.split(':', 1)[1])}: {n:,}" for k, n in list(r.traps_by_reason().items())[:8])
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in (
            esc(r.technique), esc(r.cpu_variant),
            "yes" if row.identical else f"<b>no</b>: {esc(row.first_difference or '')}",
            esc(str(r.exit_code if r.exit_code is not None else r.stop_reason)),
            f"{100 * r.direct_share:.2f}" if r.cycles is not None else "n/a", traps or "-",
            f"{r.cycles:,}" if r.cycles is not None else "n/a",
            f"{row.cycle_slowdown:.2f}x" if row.cycle_slowdown is not None else "n/a",
            f"{r.seconds:.2f}", f"{row.wall_slowdown:.2f}x")) + "</tr>")
    div_html = ""
    for row in rows:
        if row.divergences:
            from .divergence import summarize
            items = "".join(f"<li><code>{esc(line)}</code></li>" for line in summarize(row.divergences)[:60])
            div_html += (f"<h3>{esc(row.result.technique)} ({esc(row.result.cpu_variant)} cpu)</h3>"
                         f"<p>Sensitive instructions whose result differed from the native run "
                         f"(first execution at each address):</p><ol>{items}</ol>")
    timelines = "".join(f"<h3>{esc(r.result.technique)}</h3>{_timeline(r)}" for r in rows
                        if r.result.events.events)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>trapvisor compare</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top}} th{{background:#eee}}</style></head>
<body><h1>trapvisor compare</h1>
<p>Kernel <code>{esc(kernel)}</code>, command line <code>{esc(cmdline)}</code>.
Equivalence: identical console output and exit code. Efficiency: share of guest
instructions executed directly by the host CPU. Cycles: the cost model
(trapvisor/vmm/costs.toml, values from Adams &amp; Agesen 2006).</p>
<table><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{''.join(body)}</table>
<h2>Where equivalence broke</h2>
{div_html or '<p>No sensitive instruction saw anything different from the native run.</p>'}
<h2>Slowdown against native</h2>
{_bar_chart(rows, 'cycle_slowdown', 'simulated cycles')}
{_bar_chart(rows, 'wall_slowdown', 'host wall time')}
<h2>Monitor events over guest time</h2>
{timelines or '<p>(no monitor events)</p>'}
</body></html>
"""
