"""The answer first: for each failed variant that `evalsuite explain` or `fix` examined (their JSON beside
results.json, in explain/NAME/ and fix/NAME/), the layers responsible with their measured share of the loss,
and the recipe that passes with its cost in bytes and tok/s."""

from __future__ import annotations

import json
from pathlib import Path

from .view import Table


def _share(f: dict) -> str:
    if f.get("share") is None:
        return "n/a"
    interval = f" [{100 * f['low']:.0f}, {100 * f['high']:.0f}]" if f.get("low") is not None else ""
    return f"{100 * f['share']:.0f}%{interval} ({f['basis']})"


def _cost(c: dict) -> str:
    parts = [f"{c['weight_bytes']:,} B" if c.get("weight_bytes") else "?"]
    for key in ("prefill_tok_s", "decode_tok_s"):
        if c.get(key):
            parts.append(f"{c[key]:,.0f} tok/s {key.split('_')[0]}")
    return ", ".join(parts)


def diagnosis(run_dir: str | Path) -> Table:
    run_dir = Path(run_dir)
    rows = []
    fixes = {p.parent.name: json.loads(p.read_text()) for p in sorted(run_dir.glob("fix/*/fix.json"))}
    explained = {p.parent.name: json.loads(p.read_text()) for p in sorted(run_dir.glob("explain/*/explain.json"))}
    for variant in sorted(set(fixes) | set(explained)):
        fixed = fixes.get(variant)
        rounds = fixed["rounds"] if fixed else [explained[variant]]
        found = [r["findings"][0] for r in rounds if r["findings"]]
        responsible = "; ".join(f"{f['group']}: {_share(f)}" for f in found) or "none measured"
        recipe, cost = "not searched (evalsuite fix)", ""
        if fixed and fixed["passed"]:
            last = fixed["verified"][-1]
            recipe = f"{last['variant']}: {len(fixed['restored'])} layer(s) as {fixed['keep_as']}, gate passes"
            cost = " vs ".join(_cost(last["variants"][v]) for v in (last["variant"], variant))
        elif fixed:
            recipe = f"none passed: {fixed['stopped']}"
        rows.append([variant, responsible, recipe, cost])
    return Table(
        ["variant", "layers responsible (share of the loss recovered)", "recipe", "cost (recipe vs variant)"], rows
    )
