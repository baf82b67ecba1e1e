"""`evalsuite fix`: the fewest layers to keep in higher precision so that a failed variant passes the gate.

1. Rank: explain the variant once (`evalsuite.sensitivity`): the groups by the measured share of its loss
   they recover beyond the subset's noise, then by the share of the KLD they recover; then those not
   measured, in proxy order.
2. Screen on the subset: restore the first k groups of that ranking, k = 1, 2, 4, ... until the subset
   passes the gate's rules at its point estimate, then halve the last step down to the smallest such k.
3. Verify with full runs of the suite (the failed run's store serves every answer already computed; the
   first also times both variants, and a recipe found later is run once more for its speed),
   deciding the gate on its own terms (its lower bound when it says so). A failing k is followed by larger
   ones (k + 1, + 2, + 4, ...); from the first pass, halving down to the smallest k that passes a full run
   (between it and the largest k that failed one; the variant itself, k = 0, failed). Restoring every group to
   float is the baseline itself, so with `keep: float` the search ends with a pass unless the budget of
   model calls runs out first; when it runs out after a full run passed, the smallest k that passed is the
   recipe, and `stopped` says that a smaller one was not tried.

The result is a new variant, `NAME-fixed`, in a suite file beside the verification run
(`RUN_DIR/fix/NAME/suite.yaml`), ready for `evalsuite export`; its size and speed beside the original's.

    outcome = fix(failed, gate_config, probe)
    outcome["restored"], outcome["passed"], outcome["variants"]
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml

from evalsuite.gating import GateConfig, evaluate_gate, format_outcome
from evalsuite.loss_shares import helps, rank_key
from evalsuite.probing import BudgetExhausted, FailedRun, Probe, restored_overrides
from evalsuite.sensitivity import explain, format_explanation, groups_of, proxy_order
from evalsuite.suites.fidelity import remember_reference

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


def verify(failed: FailedRun, restored: list[str], keep, gate: GateConfig, probe: Probe, speed: bool = False) -> dict:
    """A full run of the suite with the fixed variant beside the original, on the failed run's store; the gate
    decided on the fixed variant's rows. With `speed`, both variants' speed is measured too (run on a recipe
    already verified, every answer then comes from the store)."""
    from evalsuite.config import parse_suite
    from evalsuite.runner import run_suite

    name = failed.spec.name
    original = failed.data["variants"][name]
    cost = original.get("model_calls") or 0
    if not speed and probe.spent + cost > probe.budget:
        raise BudgetExhausted(
            f"the budget of {probe.budget} model calls is spent ({probe.spent} used); verifying a recipe takes "
            f"about {cost} (the failed variant's own calls)"
        )
    raw = failed.config.model_dump(exclude={"source"})
    raw["variants"] = [failed.spec.model_dump(), fixed_spec(failed, restored, keep)]
    raw["run"].update({"out_dir": None, "measure_speed": speed, "noise_floor": False})
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
        "speed": speed,
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


def ranking(found: dict, layers: list[dict], by: str) -> list[tuple[str, list[str]]]:
    """Groups in the order to restore them: those measured to recover something (by `rank_key`: the share
    beyond the subset's noise, then the KLD share), then the unmeasured ones in proxy order, then those
    measured to recover nothing."""
    groups = groups_of(layers, by)
    measured = {f["group"]: f for f in found["findings"]}
    useful = sorted((g for g, f in measured.items() if helps(f)), key=lambda g: rank_key(measured[g]), reverse=True)
    rest = [g for g in proxy_order(groups, layers) if g not in measured]
    idle = [g for g in proxy_order(groups, layers) if g in measured and g not in useful]
    return [(g, groups[g]) for g in useful + rest + idle]


def _prefix(order: list[tuple[str, list[str]]], k: int) -> list[str]:
    return sorted(n for _, layers in order[:k] for n in layers)


def screen(probe: Probe, order: list, result: dict) -> int:
    """The smallest k whose first k groups, restored, pass the gate on the subset (point estimates): k
    doubles until one passes, then the last step is halved. Without a pass, every group (len(order))."""
    n, passed_at, failed_at, k = len(order), None, 0, 1
    while passed_at is None and failed_at < n:
        k = min(k, n)
        m = probe.measure([_prefix(order, k)])[0]
        result["screened"].append({"k": k, "passed": m.screened, "recovery": m.recovery, "kld": m.kld})
        if m.screened:
            passed_at = k
        else:
            failed_at, k = k, 2 * k
    if passed_at is None:
        return n
    while passed_at - failed_at > 1:
        k = (passed_at + failed_at) // 2
        m = probe.measure([_prefix(order, k)])[0]
        result["screened"].append({"k": k, "passed": m.screened, "recovery": m.recovery, "kld": m.kld})
        passed_at, failed_at = (k, failed_at) if m.screened else (passed_at, k)
    return passed_at


def fix(
    failed: FailedRun,
    gate: GateConfig,
    probe: Probe,
    by: str = "layer",
    keep: str | dict = "float",
    measure: str = "bisect",
) -> dict:
    """Rank once (`measure` as in `explain`), screen prefixes of the ranking on the subset, verify with full runs
    until one passes (or the budget ends); the recipe's size and speed beside the original's."""
    probe.gate = gate
    result = {"variant": failed.spec.name, "keep_as": keep, "by": by, "measure": measure}
    result |= {"rounds": [], "screened": [], "verified": []}
    result |= {"passed": False, "stopped": None, "restored": [], "groups": []}
    passed = None
    with remember_reference():
        try:
            found = explain(probe, by, measure=measure)
            result["rounds"].append(found)
            if found["stopped"]:
                raise BudgetExhausted(found["stopped"])
            order = ranking(found, failed.layers, by)
            result["order"] = [g for g, _ in order]
            k = screen(probe, order, result)
            passed = _verify_from(failed, gate, probe, keep, order, k, result)
            if passed is None:
                result["stopped"] = (
                    f"no prefix of the {len(order)} groups passes the full run, every group restored included"
                )
        except BudgetExhausted as err:
            result["stopped"] = str(err)
            passes = [v["k"] for v in result["verified"] if v["passed"]]
            passed = min(passes) if passes else None
            if passed is None:
                log.warning("fix stopped: %s", err)
            else:
                log.warning("fix stopped: %s; keeping the smallest recipe that passed a full run", err)
        if passed is not None:
            result["passed"], result["restored"] = True, _prefix(order, passed)
            result["groups"] = [g for g, _ in order[:passed]]
            timed = next(v for v in result["verified"] if v["k"] == passed)
            if not timed["speed"] or result["verified"][-1]["k"] != passed:
                # timed here when the first full run was another k; run again so that suite.yaml, which
                # each full run rewrites, holds the recipe (every answer comes from the store: no budget asked)
                timed = verify(failed, result["restored"], keep, gate, probe, speed=True)
            result["recipe"] = {k: v for k, v in timed.items() if k not in ("k", "restored")}
    result["calls"] = probe.spent
    out = failed.run_dir / "fix" / failed.spec.name
    out.mkdir(parents=True, exist_ok=True)
    (out / "fix.json").write_text(json.dumps(result, indent=2) + "\n")
    result["path"] = str(out / "fix.json")
    return result


def _verify_from(failed, gate, probe, keep, order, k: int, result: dict) -> int | None:
    """Full runs from k up (k + 1, + 2, + 4, ...) to the first pass, then down by halves to the smallest k
    that passes, between it and the largest k a full run failed (0, the variant itself, at first: the
    subset's verdicts below k are not trusted, its intervals being wider); None if even every group fails."""
    n, passed_at, failed_at, step = len(order), None, 0, 1

    def run(k: int) -> bool:  # speed is timed on the first full run, the likeliest recipe
        verdict = verify(failed, _prefix(order, k), keep, gate, probe, speed=not result["verified"])
        result["verified"].append({"k": k, "restored": _prefix(order, k), **verdict})
        return verdict["passed"]

    while passed_at is None:
        if run(k):
            passed_at = k
        elif k >= n:
            return None
        else:
            failed_at, k, step = k, min(n, k + step), 2 * step
    while passed_at - failed_at > 1:
        mid = (passed_at + failed_at) // 2
        passed_at, failed_at = (mid, failed_at) if run(mid) else (passed_at, mid)
    return passed_at


def format_fix(result: dict) -> str:
    lines = [format_explanation(found) for found in result["rounds"]]
    for s in result["screened"]:
        lines.append(f"subset, first {s['k']} group(s) restored: {'passes' if s['passed'] else 'fails'} (point)")
    for v in result["verified"]:
        lines.append(f"full run, {len(v['restored'])} layer(s) restored: {'pass' if v['passed'] else 'fail'}")
        lines.append("  " + v["gate"].replace("\n", "\n  "))
    if result["passed"] and result["stopped"]:
        lines.append(
            f"search cut short ({result['stopped']}): the recipe is the smallest that passed a full run, a smaller "
            "prefix was not tried; give a larger --budget to go on"
        )
    if result["passed"]:
        recipe = result["recipe"]
        lines.append(f"recipe: {recipe['variant']} keeps {', '.join(result['restored'])} as {result['keep_as']}")
        for name, cost in recipe["variants"].items():
            lines.append(f"  {name}: {_describe_cost(cost)}")
        lines.append(
            f"suite file: {recipe['suite_file']}  (evalsuite export it --variant {recipe['variant']} --out DIR)"
        )
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
