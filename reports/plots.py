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


def distribution_chart(title: str, values: dict[str, list[float]], lo: float = 0.0, hi: float = 1.0) -> str:
    """One row per variant: every per-prompt value as a dot, the median as a bar, the mean as a diamond."""
    if not values:
        return ""
    label_w, plot_w, row_h, right = 150, 420, 26, 140
    height = 40 + row_h * len(values) + 24
    x = lambda v: label_w + (min(max(v, lo), hi) - lo) / (hi - lo) * plot_w  # noqa: E731
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{escape(title)}" '
        f'width="{label_w + plot_w + right}" height="{height}" font-family="sans-serif" font-size="12">',
        f'<text x="4" y="16" font-weight="bold">{escape(title)}</text>',
    ]
    y = 34
    for i, (variant, vals) in enumerate(values.items()):
        color = PALETTE[i % len(PALETTE)]
        mid = y + row_h / 2
        out.append(f'<text x="4" y="{mid + 4}">{escape(variant)}</text>')
        for v in vals:
            out.append(f'<circle cx="{x(v):.1f}" cy="{mid}" r="2.5" fill="{color}" fill-opacity="0.45"/>')
        if vals:
            ordered = sorted(vals)
            median = ordered[len(ordered) // 2] if len(ordered) % 2 else sum(ordered[len(ordered) // 2 - 1 :][:2]) / 2
            mean = sum(vals) / len(vals)
            out.append(
                f'<line x1="{x(median):.1f}" x2="{x(median):.1f}" y1="{mid - 9}" y2="{mid + 9}" stroke="#222" '
                'stroke-width="2"/>'
            )
            out.append(f'<path d="M{x(mean):.1f},{mid - 5} l5,5 l-5,5 l-5,-5 z" fill="#222"/>')
            out.append(f'<text x="{label_w + plot_w + 8}" y="{mid + 4}">median {median:.3f}, mean {mean:.3f}</text>')
        y += row_h
    for tick in (lo, (lo + hi) / 2, hi):
        out.append(f'<text x="{x(tick):.1f}" y="{y + 16}" text-anchor="middle" fill="#333">{tick:g}</text>')
    out.append(f'<line x1="{label_w}" x2="{label_w + plot_w}" y1="{y}" y2="{y}" stroke="#999"/>')
    out.append("</svg>")
    return "\n".join(out)


def scatter_chart(title: str, points: list[dict], x_label: str, y_label: str) -> str:
    """Labelled points (label, x, y, optional y_low/y_high whiskers), e.g. recovery against compression."""
    points = [p for p in points if p["x"] is not None and p["y"] is not None]
    if not points:
        return ""
    w, h, left, bottom, top, right = 560, 300, 60, 40, 30, 150
    xs = [p["x"] for p in points]
    ys = [v for p in points for v in (p["y"], p.get("y_low"), p.get("y_high")) if v is not None]
    x0, x1 = min(xs + [1.0]) * 0.9, max(xs + [1.0]) * 1.1
    y0, y1 = min(ys + [1.0]) - 0.01, max(ys + [1.0]) + 0.01
    px = lambda v: left + (v - x0) / (x1 - x0) * (w - left - right)  # noqa: E731
    py = lambda v: top + (1 - (v - y0) / (y1 - y0)) * (h - top - bottom)  # noqa: E731
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{escape(title)}" width="{w}" height="{h}" '
        'font-family="sans-serif" font-size="12">',
        f'<text x="4" y="16" font-weight="bold">{escape(title)}</text>',
        f'<line x1="{left}" x2="{w - right}" y1="{h - bottom}" y2="{h - bottom}" stroke="#999"/>',
        f'<line x1="{left}" x2="{left}" y1="{top}" y2="{h - bottom}" stroke="#999"/>',
        f'<text x="{(left + w - right) / 2}" y="{h - 8}" text-anchor="middle">{escape(x_label)}</text>',
        f'<text x="12" y="{(top + h - bottom) / 2}" transform="rotate(-90 12 {(top + h - bottom) / 2})" '
        f'text-anchor="middle">{escape(y_label)}</text>',
        f'<line x1="{left}" x2="{w - right}" y1="{py(1.0):.1f}" y2="{py(1.0):.1f}" stroke="#bbb" '
        'stroke-dasharray="3,3"/>',
        f'<text x="{left - 4}" y="{py(1.0) + 4:.1f}" text-anchor="end">100%</text>',
    ]
    for i, p in enumerate(points):
        color = PALETTE[i % len(PALETTE)]
        cx, cy = px(p["x"]), py(p["y"])
        if p.get("y_low") is not None and p.get("y_high") is not None:
            out.append(
                f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{py(p["y_low"]):.1f}" y2="{py(p["y_high"]):.1f}" '
                'stroke="#222"/>'
            )
        out.append(
            f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="{color}"><title>{escape(p["label"])}: '
            f"{p['x']:.2f}x, {100 * p['y']:.1f}%</title></circle>"
        )
        out.append(
            f'<text x="{cx + 8:.1f}" y="{cy + 4:.1f}">{escape(p["label"])} ({p["x"]:.2f}x, {100 * p["y"]:.1f}%)</text>'
        )
    out.append("</svg>")
    return "\n".join(out)
