"""Write report.md and report.html next to a run's results.json."""

from __future__ import annotations

from pathlib import Path

from .html import render_html
from .markdown import render_markdown
from .view import build_view


def render_reports(results_path: str | Path) -> tuple[Path, Path]:
    results_path = Path(results_path)
    from evalsuite.results import load

    from .diagnosis import diagnosis

    data = load(results_path).data
    view = build_view(data)
    view.diagnosis = diagnosis(results_path.parent)
    variants = [v for v in data["variants"] if v != "baseline"]
    md = results_path.parent / "report.md"
    html = results_path.parent / "report.html"
    md.write_text(render_markdown(view))
    html.write_text(render_html(view, variants))
    return md, html
