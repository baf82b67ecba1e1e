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

      - suite: judge             # suites without recovery rows have thresholds of their own
        min_win_rate: 45         # percent (see evalsuite.gate_suites)
      - suite: fidelity
        max_kld: 0.01
        use: point               # a rule may override `use` (KLD has no interval)
      - suite: similarity
        metric: rougeL
        min: 0.8

`--min-recovery X` is a rule on every suite average and every task's primary metric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from evalsuite import gate_suites
from evalsuite.errors import UserError
from evalsuite.recovery import reason_text
from evalsuite.yaml_files import format_errors, load_yaml

PASS, FAIL, UNDECIDED = 0, 1, 2


class GateConfigError(UserError, ValueError):
    pass


class Rule(BaseModel):
    """One gate rule: which rows (suite, task, metric, variant) and one threshold. Besides the built-in
    suites' keys, a registered suite's own gate key (`evalsuite.suites.base.GateKey`) is accepted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    suite: str | None = None
    task: str | None = None  # a task, or for judge/fidelity/similarity a prompt or text set
    metric: str | None = None
    variant: str | None = None
    min_recovery: float | None = Field(default=None, gt=0)
    min_win_rate: float | None = Field(default=None, ge=0, le=100)
    max_kld: float | None = Field(default=None, ge=0)
    min: float | None = None
    use: Literal["point", "lower_bound"] | None = None  # overrides the gate's `use` for this rule
    registered: dict[str, float] = Field(default_factory=dict)  # thresholds of registered suites, by their key

    @model_validator(mode="before")
    @classmethod
    def _registered_keys(cls, data):
        """Move the gate keys of registered suites (beyond the typed ones above) into `registered`; any other
        unknown key stays, and is refused naming its line."""
        if not isinstance(data, dict):
            return data
        keys = set(gate_suites.thresholds().values()) - set(cls.model_fields)
        found = {k: v for k, v in data.items() if k in keys}
        for key, value in found.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{key} is a number, not {value!r}")
        return {k: v for k, v in data.items() if k not in keys} | ({"registered": found} if found else {})

    @model_validator(mode="after")
    def _one_threshold(self) -> Rule:
        owners = {key: suite for suite, key in gate_suites.thresholds().items()}
        given = [k for k in ("min_recovery", *owners) if self.value_of(k) is not None]
        if len(given) != 1:
            suites = ", ".join(f"{key} (suite: {suite})" for key, suite in owners.items())
            raise ValueError(
                f"give a rule exactly one threshold: min_recovery (academic, code) or {suites}; "
                f"got {', '.join(given) or 'none'}"
            )
        wanted = owners.get(given[0])
        if wanted and self.suite != wanted:
            raise ValueError(f"{given[0]} is a threshold of suite: {wanted}; add suite: {wanted}")
        if given[0] == "min_recovery" and self.suite in gate_suites.thresholds():
            raise ValueError(f"suite {self.suite} has no recovery rows: use {gate_suites.thresholds()[self.suite]}")
        if wanted and gate_suites.metric_of(wanted) is None and not self.metric:
            raise ValueError(f"a {wanted} rule names its metric (e.g. rougeL, bertscore_f1, sts_cosine)")
        return self

    def value_of(self, key: str) -> float | None:
        return getattr(self, key) if key in type(self).model_fields else self.registered.get(key)

    @property
    def threshold(self) -> float:
        return next(
            v for k in ("min_recovery", *gate_suites.thresholds().values()) if (v := self.value_of(k)) is not None
        )

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
    shown: str = ""  # the observed value as the report shows it (e.g. 93.00%)
    needed: str = ""  # the threshold as the report shows it (e.g. >= 99%)


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
        if rule.min_recovery is not None:
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
    for rule in config.rules:
        use = rule.use or config.use
        if rule.min_recovery is None:
            _suite_checks(rule, data, use, outcome)
            continue
        matched = [r for r in data.get("recovery", []) if _matches(rule, r)]
        if not matched:
            outcome.errors.append(f"rule ({rule.describe()}) matches no recovery row: check the names")
        for row in matched:
            observed = row["recovery"] if use == "point" else row.get("ci_low")
            if row["recovery"] is None:
                reason = f"recovery undefined: {_why(row)}"
                outcome.checks.append(Check(rule, row, None, None, reason))
            elif not math.isfinite(row["recovery"]) or (observed is not None and not math.isfinite(observed)):
                reason = f"recovery is not a number ({row['recovery']}): a score of the run is NaN or infinite"
                outcome.checks.append(Check(rule, row, None, None, reason))
            elif observed is None:
                reason = f"no confidence interval: {_why(row)}; gate on the point estimate instead (use: point)"
                outcome.checks.append(Check(rule, row, None, None, reason))
            else:
                passed, shown = 100 * observed >= rule.min_recovery, f"{100 * observed:.2f}%"
                outcome.checks.append(Check(rule, row, observed, passed, shown=shown, needed=_needed(rule)))
    return outcome


def _why(row: dict) -> str:
    """The row's recorded reason for a missing interval or recovery: its code and what it means."""
    code = f"[{row['reason']}] " if row.get("reason") else ""
    return code + reason_text(row)


def _suite_checks(rule: Rule, data: dict, use: str, outcome: GateOutcome) -> None:
    """Checks of a judge, fidelity or similarity rule against that suite's own measurements."""
    matched = [
        (row, m)
        for row, m in gate_suites.measured_rows(rule.suite, data)
        if (rule.variant is None or row["variant"] == rule.variant)
        and (rule.task is None or row["task"] == rule.task)
        and (rule.metric is None or row["metric"] == rule.metric)
    ]
    if not matched:
        outcome.errors.append(f"rule ({rule.describe()}) matches no {rule.suite} result: check the names")
    for row, measured in matched:
        observed = measured["point"] if use == "point" else measured["bound"]
        if not gate_suites.finite(measured["point"]):
            outcome.checks.append(Check(rule, row, None, None, f"{row['metric']} is {measured['point']}: not a number"))
        elif observed is None:
            reason = f"no interval for {row['metric']}; gate on the point value (use: point on the rule)"
            outcome.checks.append(Check(rule, row, None, None, reason))
        else:
            passed, shown, needed = gate_suites.decide(rule.suite, observed, rule.threshold)
            outcome.checks.append(Check(rule, row, observed, passed, shown=shown, needed=needed))


def row_label(row: dict) -> str:
    what = f"{row['suite']} (average)" if row["scope"] == "suite" else f"{row['task']} {row['metric']}"
    return f"{row['variant']}: {what}"


def format_outcome(outcome: GateOutcome, use: str) -> str:
    lines = [f"error: {e}" for e in outcome.errors]
    for c in outcome.checks:
        if c.passed is None:
            lines.append(f"UNDECIDED  {row_label(c.row)}: {c.reason}")
        elif not c.passed:
            lines.append(f"FAIL  {row_label(c.row)}: {_failure(c, use)}")
    failed = sum(c.passed is False for c in outcome.checks)
    verdict = {PASS: "pass", FAIL: "fail", UNDECIDED: "could not decide"}[outcome.exit_code]
    lines.append(f"gate: {len(outcome.checks)} checks, {failed} failed: {verdict}")
    return "\n".join(lines)


def _basis(check: Check, use: str) -> str:
    bound = (check.rule.use or use) == "lower_bound"
    if check.rule.min_recovery is not None:
        return "lower bound" if bound else "recovery"
    return f"{check.row['metric']} (lower bound)" if bound else check.row["metric"]


def _failure(check: Check, use: str) -> str:
    if check.rule.min_recovery is not None:
        return f"{_basis(check, use)} {check.shown} < {check.rule.min_recovery:g}%"
    return f"{_basis(check, use)} {check.shown}, needs {check.needed}"


def _needed(rule: Rule) -> str:
    return f">= {rule.min_recovery:g}%" if rule.min_recovery is not None else f"threshold {rule.threshold:g}"


def check_rows(outcome: GateOutcome, use: str) -> list[dict]:
    """The checks as plain rows (status pass/fail/undecided, label, observed, threshold, message)."""
    rows = []
    for c in outcome.checks:
        status = "undecided" if c.passed is None else ("pass" if c.passed else "fail")
        observed = c.shown or "n/a"
        message = c.reason or f"{_basis(c, use)} {observed} vs {c.needed}"
        rows.append(
            {
                "status": status,
                "variant": c.row["variant"],
                "label": row_label(c.row),
                "observed": observed,
                "threshold": c.needed or _needed(c.rule),
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
