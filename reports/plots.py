"""Inline SVG charts (no external assets): per-task recovery bars with confidence-interval whiskers."""

from __future__ import annotations

import math
from html import escape

PALETTE = ["#4269d0", "#efb118", "#ff725c", "#6cc5b0", "#3ca951", "#ff8ab7", "#a463f2", "#97bbf5"]


def recovery_chart(rows: list[dict], variants: list[str]) -> str:
    """Grouped horizontal bars: one group per (suite, task, metric), one bar per variant, labelled with its
    value so that colour is never the only cue."""
    groups = list(dict.fromkeys((r["task"], r["metric"]) for r in rows))
    if not groups or not variants:
        return ""
    lookup = {(r["task"], r["metric"], r["variant"]): r for r in rows}
    values = [r["recovery"] for r in rows if r["recovery"] is not None]
    values += [r[k] for r in rows for k in ("ci_low", "ci_high") if r.get(k) is not None]
    lo = min([1.0, *values]) - 0.02
    hi = max([1.0, *values]) + 0.02
    bar, gap, label_w, plot_w, right = 16, 14, 210, 480, 150
    height = 30 + len(groups) * (len(variants) * bar + gap) + 30
    x = lambda v: label_w + (v - lo) / (hi - lo) * plot_w  # noqa: E731
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="Recovery per task" '
        f'width="{label_w + plot_w + right}" height="{height}" font-family="sans-serif" font-size="12">'
    ]
    y = 30
    for task, metric in groups:
        out.append(f'<text x="4" y="{y + 12}" font-weight="bold">{escape(task)}</text>')
        out.append(f'<text x="4" y="{y + 26}" fill="#555">{escape(metric)}</text>')
        for i, variant in enumerate(variants):
            r = lookup.get((task, metric, variant))
            color = PALETTE[i % len(PALETTE)]
            if r is None or r["recovery"] is None:
                out.append(f'<text x="{label_w + 4}" y="{y + 12}" fill="#555">{escape(variant)}: n/a</text>')
            else:
                x0, x1 = x(min(1.0, r["recovery"])), x(max(1.0, r["recovery"]))
                out.append(
                    f'<rect x="{x0:.1f}" y="{y + 2}" width="{max(1.0, x1 - x0):.1f}" height="{bar - 4}" '
                    f'fill="{color}"><title>{escape(variant)}: {100 * r["recovery"]:.2f}%</title></rect>'
                )
                if r.get("ci_low") is not None and r.get("ci_high") is not None:
                    a, b, mid = x(r["ci_low"]), x(r["ci_high"]), y + bar / 2
                    out.append(f'<line x1="{a:.1f}" x2="{b:.1f}" y1="{mid}" y2="{mid}" stroke="#222"/>')
                    for e in (a, b):
                        out.append(f'<line x1="{e:.1f}" x2="{e:.1f}" y1="{mid - 4}" y2="{mid + 4}" stroke="#222"/>')
                out.append(
                    f'<text x="{label_w + plot_w + 6}" y="{y + 12}">{escape(variant)} {100 * r["recovery"]:.1f}%</text>'
                )
            y += bar
        y += gap
    span = (hi - lo) * 100
    step = next((s for s in (1, 2, 5, 10, 20, 50) if span / s <= 10), 100)
    for tick in range(math.ceil(lo * 100 / step) * step, math.floor(hi * 100) + 1, step):
        tx = x(tick / 100)
        dash = "" if tick == 100 else ' stroke-dasharray="2,3"'
        out.append(f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="20" y2="{y}" stroke="#999"{dash}/>')
        out.append(f'<text x="{tx:.1f}" y="14" text-anchor="middle" fill="#333">{tick}%</text>')
    out.append("</svg>")
    return "\n".join(out)
