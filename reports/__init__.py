"""How results are shown: Markdown and self-contained HTML reports rendered from results.json alone."""

from .render import render_reports

__all__ = ["render_reports"]
