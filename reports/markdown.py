"""report.md: the same tables as the HTML report, as GitHub-flavoured Markdown."""

from __future__ import annotations

from .view import ReportView, Table


def table(t: Table) -> str:
    notes = ["", *(f"- {note}" for note in t.footnotes)] if t.footnotes else []
    if not t.rows:
        return "\n".join(["_none_", *notes]) + "\n"
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, t.header)) + " |", "|" + "---|" * len(t.header)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in t.rows]
    return "\n".join(lines + notes) + "\n"


def render_markdown(view: ReportView) -> str:
    parts = [f"# {view.title}\n"]
    if view.diagnosis.rows:
        parts += ["## Why it fails, and the recipe that passes\n", table(view.diagnosis)]
    parts += [f"- {line}" for line in view.summary] + [""]
    parts += ["## Recovery\n", table(view.recovery)]
    parts += ["## Scores\n", table(view.scores)]
    parts += ["## Variants\n", table(view.variants)]
    parts += ["## Answer flips (primary metric, per sample)\n", table(view.flips)]
    for section in view.sections:
        parts += [f"## {section.title}\n", table(Table(section.header, section.rows))]
        if section.note:
            parts += [section.note + "\n"]
    if view.sensitivity.rows:
        parts += ["## Per-layer sensitivity (worst layers, output SQNR on calibration data)\n", table(view.sensitivity)]
    parts += ["## Provenance\n", table(view.provenance)]
    parts += ["## Notes\n"] + [f"- {n}" for n in view.notes]
    return "\n".join(parts) + "\n"
