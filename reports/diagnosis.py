"""The answer first: for each failed variant that `evalsuite explain` or `fix` examined (their JSON beside
results.json, in explain/NAME/ and fix/NAME/), the layers responsible with their measured share of the loss,
and the recipe that passes with its cost in bytes and tok/s."""

from __future__ import annotations

import json
from pathlib import Path

from evalsuite.loss_shares import helps, within_noise

from .view import Table


def _share(f: dict) -> str:
    if f.get("share") is None:
        return "n/a"
    interval = f" [{100 * f['low']:.0f}, {100 * f['high']:.0f}]" if f.get("low") is not None else ""
    basis = f["basis"] + ("; within noise" if within_noise(f) else "")
    kld = f", KLD {100 * f['kld_share']:.0f}%" if f.get("kld_share") is not None else ""
    return f"{100 * f['share']:.0f}%{interval} ({basis}{kld})"


def _cost(c: dict) -> str:
    parts = [f"{c['weight_bytes']:,} B" if c.get("weight_bytes") else "?"]
    for key in ("prefill_tok_s", "decode_tok_s"):
        if c.get(key):
            parts.append(f"{c[key]:,.0f} tok/s {key.split('_')[0]}")
    return ", ".join(parts)


def _responsible(found: dict, groups: list[str] | None) -> str:
    """The groups the recipe restores (or, from explain alone, the five that recover most), each with its
    measured share of the loss (with `--measure without`, the share it holds); one not measured says so."""
    shares = {f["group"]: f for f in found.get("findings", [])}
    if groups is None:  # findings are stored in rank order
        groups = [f["group"] for f in found.get("findings", []) if helps(f)][:5]
    verb = "holds " if found.get("measure") == "without" else ""  # left quantized alone: the loss that stays
    parts = [f"{g}: {verb + _share(shares[g]) if g in shares else 'not measured'}" for g in groups]
    return "; ".join(parts) or "none measured"


def diagnosis(run_dir: str | Path) -> Table:
    run_dir = Path(run_dir)
    rows = []
    fixes = {p.parent.name: json.loads(p.read_text()) for p in sorted(run_dir.glob("fix/*/fix.json"))}
    explained = {p.parent.name: json.loads(p.read_text()) for p in sorted(run_dir.glob("explain/*/explain.json"))}
    for variant in sorted(set(fixes) | set(explained)):
        fixed = fixes.get(variant)
        found = fixed["rounds"][0] if fixed and fixed["rounds"] else explained.get(variant, {})
        responsible = _responsible(found, fixed["groups"] if fixed and fixed["passed"] else None)
        recipe, cost = "not searched (evalsuite fix)", ""
        if fixed and fixed["passed"]:
            last = fixed["recipe"]
            recipe = (
                f"{last['variant']}: {len(fixed['restored'])} layer(s) as {fixed['keep_as']}, "
                f"gate passes (full run); suite file {last['suite_file']}"
            )
            cost = " vs ".join(_cost(last["variants"][v]) for v in (last["variant"], variant))
        elif fixed:
            recipe = f"none passed: {fixed['stopped']}"
        rows.append([variant, responsible, recipe, cost])
    return Table(
        [
            "variant",
            "layers responsible (measured share of the loss it recovers, or holds when left quantized; 95% interval)",
            "recipe that passes",
            "cost: recipe vs variant (weight bytes, tok/s)",
        ],
        rows,
    )
