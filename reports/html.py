"""report.html: one self-contained file (inline CSS and SVG, no scripts from elsewhere) that opens from disk."""

from __future__ import annotations

from pathlib import Path

import jinja2

from .plots import distribution_chart, recovery_chart, scatter_chart
from .view import ReportView

TEMPLATES = Path(__file__).resolve().parent / "templates"


def render_html(view: ReportView, variants: list[str]) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
    charts = {
        section.id: [distribution_chart(name, values) for name, values in section.distributions.items()]
        for section in view.sections
    }
    return env.get_template("report.html.j2").render(
        view=view,
        chart=recovery_chart(view.chart_rows, variants),
        section_charts=charts,
        compression_chart=scatter_chart(
            "Recovery (first suite's average) against weight compression",
            view.compression_points,
            "times smaller than the baseline",
            "recovery",
        ),
        speed_chart=scatter_chart(
            "Recovery against decode speed", view.speed_points, "decode speed / baseline's", "recovery"
        ),
    )
