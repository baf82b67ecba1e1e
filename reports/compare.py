"""Runs side by side (e.g. the same suite across commits): each run's recovery of every variant's suite
averages and primary metrics, and the change against the first run.

    evalsuite report runs/main runs/my-branch        # writes compare.md and compare.html in the current folder
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

from . import format as fmt
from .markdown import table
from .view import Table


def _label(data: dict, path: Path) -> str:
    prov = data["provenance"]
    sha = (prov.get("git_sha") or "")[:10]
    return f"{path.name} ({sha})" if sha else path.name


def build_comparison(runs: list[tuple[str, dict]]) -> Table:
    rows_by_key: dict[tuple, dict[str, dict]] = {}
    for label, data in runs:
        for r in data["recovery"]:
            if r["primary"]:
                what = f"{r['suite']} (average)" if r["scope"] == "suite" else f"{r['task']} · {r['metric']}"
                rows_by_key.setdefault((r["variant"], what), {})[label] = r
    labels = [label for label, _ in runs]
    out = []
    for (variant, what), per_run in rows_by_key.items():
        cells = [variant, what]
        first = per_run.get(labels[0])
        for label in labels:
            r = per_run.get(label)
            cell = "n/a" if r is None else f"{fmt.pct(r['recovery'])} {fmt.interval(r['ci_low'], r['ci_high'])}".strip()
            if (
                r is not None
                and first is not None
                and label != labels[0]
                and None not in (r["recovery"], first["recovery"])
            ):
                cell += f" ({100 * (r['recovery'] - first['recovery']):+.1f} pt)"
            cells.append(cell)
        out.append(cells)
    return Table(["variant", "suite / task"] + labels, out)


def render_comparison(run_dirs: list[str | Path], out_dir: str | Path = ".") -> tuple[Path, Path]:
    runs = []
    for d in run_dirs:
        path = Path(d)
        data = json.loads((path / "results.json" if path.is_dir() else path).read_text())
        runs.append((_label(data, path if path.is_dir() else path.parent), data))
    t = build_comparison(runs)
    out_dir = Path(out_dir)
    md = out_dir / "compare.md"
    md.write_text(
        "# evalsuite: runs side by side\n\nRecovery [95% interval] (change against the first run).\n\n" + table(t)
    )
    head = "".join(f"<th>{escape(h)}</th>" for h in t.header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in t.rows)
    html = out_dir / "compare.html"
    html.write_text(
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>evalsuite: runs side by side</title>'
        "<style>body{font-family:system-ui,sans-serif;margin:2rem}table{border-collapse:collapse}"
        "td,th{border:1px solid #ddd;padding:.3rem .6rem}th{background:#f4f5f7}</style></head><body>"
        "<h1>evalsuite: runs side by side</h1><p>Recovery [95% interval] (change against the first run).</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></body></html>\n"
    )
    return md, html
