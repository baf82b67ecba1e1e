"""The gate: thresholds on recovery, decided from results.json. Exit 0 = every check passes, 1 = some fail
(the failing rows are printed), 2 = it cannot decide (bad gate file, missing or zero baseline, a rule that
matches nothing, no interval where the lower bound was asked for).

gate.yaml:

    use: point                  # or lower_bound: decide on the 95% interval's lower end
    rules:
      - suite: academic          # the suite average
        min_recovery: 99         # percent
      - task: tiny_arith         # a task's primary metric, every variant
        min_recovery: 96
      - task: tiny_mc
        metric: acc
        variant: W4A16
        min_recovery: 95

`--min-recovery X` is a rule on every suite average and every task's primary metric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from evalsuite.errors import UserError
from evalsuite.yaml_files import format_errors, load_yaml

PASS, FAIL, UNDECIDED = 0, 1, 2


class GateConfigError(UserError, ValueError):
    pass


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    suite: str | None = None
    task: str | None = None
    metric: str | None = None
    variant: str | None = None
    min_recovery: float = Field(gt=0)

    def describe(self) -> str:
        parts = [f"{k}={getattr(self, k)}" for k in ("suite", "task", "metric", "variant") if getattr(self, k)]
        return ", ".join(parts) or "every primary row"


class GateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    use: Literal["point", "lower_bound"] = "point"
    rules: list[Rule] = Field(min_length=1)


@dataclass
class Check:
    rule: Rule
    row: dict
    observed: float | None
    passed: bool | None  # None: could not decide
    reason: str = ""


@dataclass
class GateOutcome:
    checks: list[Check] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.errors or any(c.passed is None for c in self.checks):
            return UNDECIDED
        return FAIL if any(c.passed is False for c in self.checks) else PASS


def check_percent(value: float, where: str) -> float:
    if value <= 2:
        raise GateConfigError(f"{where}: min_recovery is a percentage: write 99 for 99%, not {value}")
    return value


def load_gate_config(path: str | Path) -> GateConfig:
    path = Path(path)
    if not path.is_file():
        raise GateConfigError(f"gate file {path} does not exist")
    data, lines = load_yaml(path, GateConfigError)
    return parse_gate_config(data or {}, str(path), lines)


def parse_gate_config(data: object, where: str, lines: dict[tuple, int] | None = None) -> GateConfig:
    """A gate config from gate.yaml's shape; `where` names its origin and `lines` its key lines in errors."""
    lines = lines or {}
    if not isinstance(data, dict):
        raise GateConfigError(f"{where}: a gate file is a mapping with use and rules (a list of rules)")
    try:
        config = GateConfig(**data)
    except ValidationError as err:
        raise GateConfigError(format_errors(err, where, lines, "gate file")) from None
    for i, rule in enumerate(config.rules):
        line = lines.get(("rules", i, "min_recovery"))
        check_percent(rule.min_recovery, f"{where}:{line}: rules[{i}]" if line else f"{where}: rules[{i}]")
    return config


def min_recovery_config(percent: float, use: str = "point") -> GateConfig:
    check_percent(percent, "--min-recovery")
    return parse_gate_config({"use": use, "rules": [{"min_recovery": percent}]}, "--min-recovery")


def _matches(rule: Rule, row: dict) -> bool:
    if rule.variant and row["variant"] != rule.variant:
        return False
    if rule.suite and row["suite"] != rule.suite:
        return False
    if rule.task is None and rule.metric is None:
        return row["scope"] == "suite" if rule.suite else row["primary"]
    if row["scope"] != "task" or (rule.task and row["task"] != rule.task):
        return False
    return row["metric"] == rule.metric if rule.metric else row["primary"]


def evaluate_gate(data: dict, config: GateConfig) -> GateOutcome:
    outcome = GateOutcome()
    if not any(v != "baseline" for v in data.get("variants", {})):
        outcome.errors.append("the results hold no quantized variant to gate")
    rows = data.get("recovery", [])
    for rule in config.rules:
        matched = [r for r in rows if _matches(rule, r)]
        if not matched:
            outcome.errors.append(f"rule ({rule.describe()}) matches no recovery row: check the names")
        for row in matched:
            observed = row["recovery"] if config.use == "point" else row.get("ci_low")
            if row["recovery"] is None:
                reason = "recovery undefined: the baseline score is missing or zero"
                outcome.checks.append(Check(rule, row, None, None, reason))
            elif not math.isfinite(row["recovery"]) or (observed is not None and not math.isfinite(observed)):
                reason = f"recovery is not a number ({row['recovery']}): a score of the run is NaN or infinite"
                outcome.checks.append(Check(rule, row, None, None, reason))
            elif observed is None:
                reason = "no confidence interval for this metric; gate on the point estimate instead"
                outcome.checks.append(Check(rule, row, None, None, reason))
            else:
                outcome.checks.append(Check(rule, row, observed, 100 * observed >= rule.min_recovery))
    return outcome


def row_label(row: dict) -> str:
    what = f"{row['suite']} (average)" if row["scope"] == "suite" else f"{row['task']} {row['metric']}"
    return f"{row['variant']}: {what}"


def format_outcome(outcome: GateOutcome, use: str) -> str:
    lines = [f"error: {e}" for e in outcome.errors]
    for c in outcome.checks:
        if c.passed is None:
            lines.append(f"UNDECIDED  {row_label(c.row)}: {c.reason}")
        elif not c.passed:
            basis = "lower bound" if use == "lower_bound" else "recovery"
            lines.append(f"FAIL  {row_label(c.row)}: {basis} {100 * c.observed:.2f}% < {c.rule.min_recovery:g}%")
    failed = sum(c.passed is False for c in outcome.checks)
    verdict = {PASS: "pass", FAIL: "fail", UNDECIDED: "could not decide"}[outcome.exit_code]
    lines.append(f"gate: {len(outcome.checks)} checks, {failed} failed: {verdict}")
    return "\n".join(lines)


def check_rows(outcome: GateOutcome, use: str) -> list[dict]:
    """The checks as plain rows (status pass/fail/undecided, label, observed, threshold, message)."""
    rows = []
    for c in outcome.checks:
        status = "undecided" if c.passed is None else ("pass" if c.passed else "fail")
        observed = "n/a" if c.observed is None else f"{100 * c.observed:.2f}%"
        basis = "lower bound" if use == "lower_bound" else "recovery"
        message = c.reason or f"{basis} {observed} vs minimum {c.rule.min_recovery:g}%"
        rows.append(
            {
                "status": status,
                "variant": c.row["variant"],
                "label": row_label(c.row),
                "observed": observed,
                "threshold": f">= {c.rule.min_recovery:g}%",
                "message": message,
            }
        )
    return rows


def publish(outcome: GateOutcome, use: str, junit_path: Path, summary_path: str | None) -> None:
    """Write JUnit XML, and append a Markdown summary to $GITHUB_STEP_SUMMARY when it is set."""
    from evalsuite.reports.junit import render_junit, render_summary

    rows = check_rows(outcome, use)
    junit_path.parent.mkdir(parents=True, exist_ok=True)
    junit_path.write_text(render_junit(rows, outcome.errors))
    if summary_path:
        verdict = {PASS: "pass", FAIL: "fail", UNDECIDED: "could not decide"}[outcome.exit_code]
        with open(summary_path, "a") as f:
            f.write(render_summary(rows, outcome.errors, verdict))
