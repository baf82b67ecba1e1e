"""`evalsuite fix`: the fewest layers to keep in higher precision so that a failed variant passes the gate.

Greedy over measured sensitivity: explain the variant (`evalsuite.sensitivity`), restore the group that
recovers the largest share of its loss, verify with a full run of the suite (the failed run's store serves
every answer already computed) and decide the gate on it; if it still fails, explain the variant with that
group restored and add the next. The result is a new variant, `NAME-fixed`, in a suite file beside the
verification run (`RUN_DIR/fix/NAME/suite.yaml`), ready for `evalsuite export`.

    outcome = fix(failed, gate_config, probe)
    outcome["restored"], outcome["passed"], outcome["sizes"], outcome["speed"]
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml

from evalsuite.gating import GateConfig, evaluate_gate, format_outcome
from evalsuite.probing import BudgetExhausted, FailedRun, Probe, restored_overrides
from evalsuite.sensitivity import explain, format_explanation

log = logging.getLogger("evalsuite")


def failing_tasks(data: dict, variant: str, gate: GateConfig | None) -> list[str]:
    """The academic tasks behind the variant's failed checks (a failed suite average: all its tasks); without
    a gate, the tasks whose primary recovery is under 100%."""
    rows = [r for r in data.get("recovery", []) if r["variant"] == variant and r["scope"] == "task" and r["primary"]]
    if gate is None:
        return sorted({r["task"] for r in rows if r["recovery"] is not None and r["recovery"] < 1})
    failed = [c.row for c in evaluate_gate(data, gate).checks if c.passed is False and c.row["variant"] == variant]
    tasks = set()
    for row in failed:
        if row.get("scope") == "task":
            tasks.add(row["task"])
        elif row.get("scope") == "suite":
            tasks |= {r["task"] for r in rows if r["suite"] == row["suite"]}
    return sorted(tasks)


def failing_variants(data: dict, gate: GateConfig) -> list[str]:
    outcome = evaluate_gate(data, gate)
    return sorted({c.row["variant"] for c in outcome.checks if c.passed is False})


def fixed_spec(failed: FailedRun, restored: list[str], keep: str | dict) -> dict:
    spec = failed.spec
    scheme = spec.resolved_scheme.model_dump()
    scheme["overrides"] = restored_overrides(restored, keep) + list(scheme.get("overrides", ()))
    return {**spec.model_dump(exclude={"scheme", "overrides", "name"}), "name": f"{spec.name}-fixed", "scheme": scheme}


def _retargeted(gate: GateConfig, old: str, new: str) -> GateConfig:
    rules = [r.model_copy(update={"variant": new}) if r.variant == old else r for r in gate.rules]
    return gate.model_copy(update={"rules": rules})


def verify(failed: FailedRun, restored: list[str], keep, gate: GateConfig, probe: Probe) -> dict:
    """A full run of the suite with the fixed variant beside the original (speed measured for both), on the
    failed run's store; the gate decided on the fixed variant's rows."""
    from evalsuite.config import parse_suite
    from evalsuite.runner import run_suite

    name = failed.spec.name
    original = failed.data["variants"][name]
    cost = original.get("model_calls") or 0
    if probe.spent + cost > probe.budget:
        raise BudgetExhausted(
            f"the budget of {probe.budget} model calls is spent ({probe.spent} used); verifying a recipe takes "
            f"about {cost} (the failed variant's own calls)"
        )
    raw = failed.config.model_dump(exclude={"source"})
    raw["variants"] = [failed.spec.model_dump(), fixed_spec(failed, restored, keep)]
    raw["run"].update({"out_dir": None, "measure_speed": True, "noise_floor": False})
    config = parse_suite(raw, failed.config.source)
    out = failed.run_dir / "fix" / name
    log.info("verifying %s with %d layer(s) restored: a full run into %s", name, len(restored), out)
    data = run_suite(config, out, store_path=failed.run_dir / "store.sqlite").data
    probe.spent += sum(v.get("model_calls") or 0 for v in data["variants"].values())
    fixed = f"{name}-fixed"
    outcome = evaluate_gate(data, _retargeted(gate, name, fixed))
    checks = [c for c in outcome.checks if c.row["variant"] == fixed]
    suite_file = out / "suite.yaml"
    raw["run"]["measure_speed"] = False
    plain = json.loads(json.dumps({**raw, "name": f"{config.name}-fixed"}))  # tuples as lists
    suite_file.write_text(yaml.safe_dump(plain, sort_keys=False))
    return {
        "run_dir": str(out),
        "suite_file": str(suite_file),
        "variant": fixed,
        "passed": bool(checks) and all(c.passed for c in checks),
        "gate": format_outcome(type(outcome)(checks=checks), gate.use),
        "variants": {v: _cost(data["variants"][v]) for v in (name, fixed)},
    }


def _cost(record: dict) -> dict:
    speed = record.get("speed") or {}
    return {
        "weight_bytes": record.get("weight_bytes"),
        "compression_ratio": record.get("compression_ratio"),
        "prefill_tok_s": speed.get("prefill_tok_s"),
        "decode_tok_s": speed.get("decode_tok_s"),
    }


def fix(failed: FailedRun, gate: GateConfig, probe: Probe, by: str = "layer", keep: str | dict = "float") -> dict:
    """Restore groups in order of measured share until the full run passes the gate, or the budget ends."""
    restored: list[str] = []
    result = {"variant": failed.spec.name, "keep_as": keep, "by": by, "rounds": [], "verified": [], "passed": False}
    result["stopped"] = None
    while True:
        found = explain(probe, by, base=restored)
        result["rounds"].append(found)
        if found["stopped"]:
            result["stopped"] = found["stopped"]
            break
        best = found["findings"][0] if found["findings"] else None
        if best is None or best["share"] is None or best["share"] <= 0:
            result["stopped"] = "no group left recovers any of the loss on the subset: the gate cannot be met here"
            break
        restored = sorted(restored + best["layers"])
        try:
            verdict = verify(failed, restored, keep, gate, probe)
        except BudgetExhausted as err:
            result["stopped"] = str(err)
            break
        result["verified"].append({"restored": restored, **verdict})
        if verdict["passed"]:
            result["passed"] = True
            break
    result["restored"] = restored if result["passed"] else []
    result["calls"] = probe.spent
    out = failed.run_dir / "fix" / failed.spec.name
    out.mkdir(parents=True, exist_ok=True)
    (out / "fix.json").write_text(json.dumps(result, indent=2) + "\n")
    result["path"] = str(out / "fix.json")
    return result


def format_fix(result: dict) -> str:
    lines = []
    for found in result["rounds"]:
        lines.append(format_explanation(found))
    for v in result["verified"]:
        lines.append(f"verified with {len(v['restored'])} layer(s) restored: {'pass' if v['passed'] else 'fail'}")
        lines.append("  " + v["gate"].replace("\n", "\n  "))
    if result["passed"]:
        last = result["verified"][-1]
        lines.append(f"recipe: {last['variant']} keeps {', '.join(result['restored'])} as {result['keep_as']}")
        for name, cost in last["variants"].items():
            lines.append(f"  {name}: {_describe_cost(cost)}")
        lines.append(f"suite file: {last['suite_file']}  (evalsuite export it --variant {last['variant']} --out DIR)")
    else:
        lines.append(f"no passing recipe found: {result['stopped']}")
    lines.append(f"model calls: {result['calls']}; written: {result['path']}")
    return "\n".join(lines)


def _describe_cost(cost: dict) -> str:
    parts = [f"{cost['weight_bytes']:,} bytes of weights"] if cost.get("weight_bytes") else []
    if cost.get("compression_ratio"):
        parts.append(f"{cost['compression_ratio']:.2f}x smaller than the baseline")
    for key, label in (("prefill_tok_s", "prefill"), ("decode_tok_s", "decode")):
        if cost.get(key):
            parts.append(f"{label} {cost[key]:,.0f} tok/s")
    return ", ".join(parts)


def write_explanation(failed: FailedRun, result: dict) -> Path:
    out = failed.run_dir / "explain" / failed.spec.name
    out.mkdir(parents=True, exist_ok=True)
    (out / "explain.json").write_text(json.dumps(result, indent=2) + "\n")
    return out / "explain.json"
