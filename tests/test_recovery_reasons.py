"""Every recovery row without an interval (or without a value) records why in results.json, and report.md,
report.html and the gate show that reason."""

import json

import pytest

from evalsuite.cli import main
from evalsuite.gating import GateConfig, Rule, evaluate_gate
from evalsuite.recovery import REASONS, explain, resamples, task_recovery, variant_recovery
from evalsuite.reports.render import render_reports
from evalsuite.results import build, load, write
from evalsuite.suites.academic import MetricResult, TaskResult, _task_result
from evalsuite.suites.academic import ResolvedTask as Resolved


def task(name: str, correct: list[float], resamplable: bool = True, metric: str = "acc", details=None) -> TaskResult:
    samples = [{"doc_id": i, "filter": "none", "prompt_hash": str(i), metric: c} for i, c in enumerate(correct)]
    value = sum(correct) / len(correct)
    result = MetricResult(metric, value, None, True, len(correct), resamplable)
    return TaskResult(name, name, "1", {metric: result}, metric, samples, details or {})


def run_data(base: dict, variant: dict, iters: int = 500) -> dict:
    """results.json of a run with one variant, W8A8_INT8, from {suite: {task: TaskResult}} of each model."""
    provenance = {"suite": "reasons", "seed": 1234, "bootstrap_iters": iters}
    model = {"path": "embedded:tiny", "identity": "0" * 16}
    variants = {"baseline": {"description": "bf16"}, "W8A8_INT8": {"description": "int8"}}
    return build(provenance, model, variants, {"baseline": base, "W8A8_INT8": variant}, iters, 1234)


ONE_OF_FIFTY = [1.0] + [0.0] * 49  # the baseline gets 1 of 50 right
FLIPPED = [0.0, 1.0] + [0.0] * 48  # the variant too, another one: 2 flips, recovery 100%


def test_a_near_zero_baseline_has_no_interval_and_says_why_in_results_and_reports(tmp_path):
    data = run_data(
        {"academic": {"gsm8k": task("gsm8k", ONE_OF_FIFTY)}}, {"academic": {"gsm8k": task("gsm8k", FLIPPED)}}
    )
    row = next(r for r in data["recovery"] if r["scope"] == "task")
    assert row["recovery"] == pytest.approx(1.0) and row["ci_low"] is None and row["ci_high"] is None
    assert row["reason"] == "degenerate_resamples"
    assert "the baseline's score is 0 in" in row["reason_detail"]  # about (49/50)^50 = 36% of the resamples

    write(data, tmp_path)
    stored = next(r for r in load(tmp_path).data["recovery"] if r["scope"] == "task")
    assert (stored["reason"], stored["reason_detail"]) == (row["reason"], row["reason_detail"])
    md, html = render_reports(tmp_path / "results.json")
    text = explain(row)
    assert text.startswith("no interval: " + REASONS["degenerate_resamples"])
    markdown = md.read_text()
    assert "| W8A8_INT8 | 100.0% †1 | 100.0% †1 |" in markdown  # the suite average of one task, and the task
    assert f"- †1 {text}" in markdown
    page = html.read_text()
    assert '<td class="num">100.0% †1</td>' in page
    assert '<div class="footnotes" id="recovery-footnotes"><p class="note">†1 no interval: ' in page


def test_the_gate_quotes_the_reason_when_asked_for_a_lower_bound(tmp_path, capsys):
    data = run_data(
        {"academic": {"gsm8k": task("gsm8k", ONE_OF_FIFTY)}}, {"academic": {"gsm8k": task("gsm8k", FLIPPED)}}
    )
    outcome = evaluate_gate(data, GateConfig(use="lower_bound", rules=[Rule(task="gsm8k", min_recovery=90)]))
    assert outcome.exit_code == 2
    (check,) = outcome.checks
    assert check.reason.startswith("no confidence interval: [degenerate_resamples] recovery is undefined in more")
    assert "gate on the point estimate instead" in check.reason

    write(data, tmp_path)
    assert main(["gate", str(tmp_path), "--min-recovery", "90", "--use", "lower_bound"]) == 2
    assert "UNDECIDED  W8A8_INT8: gsm8k acc: no confidence interval: [degenerate_resamples]" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("base", "variant", "iters", "reason"),
    [
        ([1.0, 0.0, 1.0, 1.0], [1.0, 1.0, 0.0, 1.0], 0, "bootstrap_off"),
        ([1.0], [1.0], 200, "too_few_documents"),
        ([0.0, 0.0, 0.0], [1.0, 0.0, 0.0], 200, "baseline_zero"),
        ([float("nan"), 1.0, 0.0], [1.0, 1.0, 0.0], 200, "score_not_finite"),
    ],
    ids=["bootstrap-off", "one-document", "zero-baseline", "nan-score"],
)
def test_each_missing_interval_or_recovery_has_its_reason(base, variant, iters, reason):
    rows, _ = task_recovery("academic", task("t", variant), task("t", base), "v", resamples(0, "v", iters))
    (row,) = rows
    assert row["reason"] == reason and row["ci_low"] is None
    assert explain(row).endswith(REASONS[reason]) or f"{REASONS[reason]} (" in explain(row)


def test_a_metric_without_per_document_values_names_itself_in_the_suite_average():
    base = {"mc": task("mc", [1.0, 0.0, 1.0, 1.0]), "agg": task("agg", [1.0, 1.0, 0.0], resamplable=False)}
    var = {"mc": task("mc", [1.0, 1.0, 1.0, 0.0]), "agg": task("agg", [1.0, 0.0, 1.0], resamplable=False)}
    rows, _ = variant_recovery("v", {"academic": var}, {"academic": base}, resamples(0, "v", 200))
    by_task = {r["task"]: r for r in rows}
    assert by_task["mc"]["reason"] is None and by_task["mc"]["ci_low"] is not None
    assert by_task["agg"]["reason"] == "no_per_document_values"
    assert by_task[None]["reason"] == "task_without_interval"
    assert by_task[None]["reason_detail"] == f"agg: {REASONS['no_per_document_values']}"


def test_a_skipped_metric_has_a_row_with_its_reason_shown_under_the_table(tmp_path):
    skipped = {"skipped_metrics": {"f1": "no per-document values to pool over the group's subtasks"}}
    base = {"academic": {"group": task("group", [1.0, 0.0, 1.0], details=skipped)}}
    var = {"academic": {"group": task("group", [1.0, 1.0, 1.0], details=skipped)}}
    data = run_data(base, var)
    row = next(r for r in data["recovery"] if r["metric"] == "f1")
    assert (row["recovery"], row["reason"], row["primary"]) == (None, "skipped_metric", False)
    write(data, tmp_path)
    md, html = render_reports(tmp_path / "results.json")
    line = f"Not in the table, {explain(row)}: W8A8_INT8 group · f1"
    assert (
        explain(row)
        == "no recovery: the metric was not scored (no per-document values to pool over the group's subtasks)"
    )
    assert line in md.read_text()
    assert line.replace("'", "&#39;") in html.read_text()


def test_a_group_metric_that_cannot_be_pooled_is_recorded_as_skipped():
    """lm-eval's per-sample values of a metric we cannot aggregate (here: pairs of a metric we do not know)
    leave the group without that metric, and the task result says so."""

    def sample(doc_id, correct):
        resps = [[(-1.0, False)], [(-2.0, False)]]
        return {
            "doc_id": doc_id,
            "filter": "none",
            "arguments": [("q", " a"), ("q", " b")],
            "target": 0,
            "filtered_resps": resps,
            "metrics": ["acc", "f1"],
            "acc": correct,
            "f1": (correct, 1),
        }

    out = {
        "samples": {"leaf_a": [sample(0, 1.0), sample(1, 0.0)], "leaf_b": [sample(0, 1.0)]},
        "results": {leaf: {"acc,none": 0.5, "f1,none": 0.5} for leaf in ("leaf_a", "leaf_b")},
        "higher_is_better": {leaf: {"acc": True, "f1": True} for leaf in ("leaf_a", "leaf_b")},
        "versions": {"leaf_a": 1, "leaf_b": 1},
    }
    result = _task_result(out, Resolved("group", None, 0, None, "acc", "group:key"), seed=0, bootstrap_iters=0)
    assert list(result.metrics) == ["acc"]
    assert result.details["skipped_metrics"] == {"f1": "no per-document values to pool over the group's subtasks"}


def test_rows_of_an_older_results_json_without_reasons_are_still_explained(tmp_path):
    data = run_data({"academic": {"t": task("t", [1.0, 0.0, 1.0])}}, {"academic": {"t": task("t", [1.0, 1.0, 1.0])}}, 0)
    for row in data["recovery"]:
        del row["reason"], row["reason_detail"]
    (tmp_path / "results.json").write_text(json.dumps(data))
    md, _ = render_reports(tmp_path / "results.json")
    assert "- †1 no interval: no reason recorded (results.json written before evalsuite recorded reasons)" in (
        md.read_text()
    )
