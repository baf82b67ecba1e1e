"""report.md: the same tables as the HTML report, as GitHub-flavoured Markdown."""

from __future__ import annotations

from .view import ReportView, Table


def table(t: Table) -> str:
    if not t.rows:
        return "_none_\n"
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, t.header)) + " |", "|" + "---|" * len(t.header)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in t.rows]
    return "\n".join(lines) + "\n"


def render_markdown(view: ReportView) -> str:
    parts = [f"# {view.title}\n"]
    parts += [f"- {line}" for line in view.summary] + [""]
    parts += ["## Recovery\n", table(view.recovery)]
    parts += ["## Scores\n", table(view.scores)]
    parts += ["## Variants\n", table(view.variants)]
    parts += ["## Answer flips (primary metric, per sample)\n", table(view.flips)]
    for title, t in (
        ("Fidelity (token-level, against the baseline)", view.fidelity),
        ("Text similarity to the baseline's answers", view.similarity),
        ("Judged against the baseline (both orders)", view.judge),
        ("Code execution", view.code),
        ("Per-layer sensitivity (worst layers, output SQNR on calibration data)", view.sensitivity),
    ):
        if t.rows:
            parts += [f"## {title}\n", table(t)]
    parts += ["## Provenance\n", table(view.provenance)]
    parts += ["## Notes\n"] + [f"- {n}" for n in view.notes]
    return "\n".join(parts) + "\n"
