"""A suite's recovery is the recovery of its average primary score, not the average of its tasks' recoveries
(which lets an easy task's big relative swing dominate: the study's definition)."""

import pytest

from evalsuite.results import suite_recovery
from evalsuite.suites.academic import MetricResult, TaskResult


def _task(name: str, correct: list[int]) -> TaskResult:
    samples = [{"doc_id": i, "filter": "none", "prompt_hash": str(i), "acc": float(c)} for i, c in enumerate(correct)]
    metric = MetricResult("acc", sum(correct) / len(correct), None, True, len(correct), True)
    return TaskResult(name, name, "1", {"acc": metric}, "acc", samples)


def test_suite_recovery_is_the_recovery_of_the_average_score():
    base = {"easy": _task("easy", [1] * 9 + [0]), "hard": _task("hard", [1] + [0] * 9)}
    variant = {"easy": _task("easy", [1] * 9 + [0]), "hard": _task("hard", [1, 1] + [0] * 8)}
    row = suite_recovery("academic", "v", variant, base, 200, 0)
    assert row["baseline"] == pytest.approx(0.5) and row["value"] == pytest.approx(0.55)
    assert row["recovery"] == pytest.approx(1.1)  # the mean of the task recoveries (1.0 and 2.0) would be 1.5
    assert row["ci_low"] <= row["recovery"] <= row["ci_high"]
