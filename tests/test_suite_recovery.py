"""A suite's recovery is the recovery of its average primary score, not the average of its tasks' recoveries
(which lets an easy task's big relative swing dominate: the study's definition)."""

import pytest

from evalsuite.recovery import resamples, suite_recovery, variant_recovery
from evalsuite.suites.academic import MetricResult, TaskResult


def _task(name: str, correct: list[int]) -> TaskResult:
    samples = [{"doc_id": i, "filter": "none", "prompt_hash": str(i), "acc": float(c)} for i, c in enumerate(correct)]
    metric = MetricResult("acc", sum(correct) / len(correct), None, True, len(correct), True)
    return TaskResult(name, name, "1", {"acc": metric}, "acc", samples)


def test_suite_recovery_is_the_recovery_of_the_average_score():
    base = {"easy": _task("easy", [1] * 9 + [0]), "hard": _task("hard", [1] + [0] * 9)}
    variant = {"easy": _task("easy", [1] * 9 + [0]), "hard": _task("hard", [1, 1] + [0] * 8)}
    row = suite_recovery("academic", "v", variant, base, resamples(0, "v", 200))
    assert row["baseline"] == pytest.approx(0.5) and row["value"] == pytest.approx(0.55)
    assert row["recovery"] == pytest.approx(1.1)  # the mean of the task recoveries (1.0 and 2.0) would be 1.5
    assert row["ci_low"] <= row["recovery"] <= row["ci_high"]


def test_a_one_task_suite_has_exactly_its_task_interval():
    """One bootstrap per variant: the suite average and the task rows read the same resampled documents."""
    base = {"only": _task("only", [1] * 30 + [0] * 10)}
    variant = {"only": _task("only", [1] * 27 + [0] * 10 + [1] * 3)}
    boot = resamples(1234, "W4A16", 1000)
    rows, _ = variant_recovery("W4A16", {"academic": variant}, {"academic": base}, boot)
    task_row = next(r for r in rows if r["scope"] == "task")
    suite_row = next(r for r in rows if r["scope"] == "suite")
    assert task_row["ci_low"] is not None and task_row["ci_low"] < task_row["ci_high"]
    assert (suite_row["ci_low"], suite_row["ci_high"]) == (task_row["ci_low"], task_row["ci_high"])
    assert suite_row["recovery"] == task_row["recovery"]


def test_intervals_are_reproducible_from_the_seed_and_a_task_s_draws_are_its_own():
    base = {"easy": _task("easy", [1] * 35 + [0] * 5), "hard": _task("hard", [1] * 12 + [0] * 28)}
    variant = {"easy": _task("easy", [1] * 32 + [0] * 8), "hard": _task("hard", [1] * 10 + [0] * 30)}

    def rows(seed, tasks=("easy", "hard")):
        picked = lambda d: {"academic": {t: d[t] for t in tasks}}  # noqa: E731
        found, _ = variant_recovery("W4A16", picked(variant), picked(base), resamples(seed, "W4A16", 500))
        return {(r["scope"], r["task"]): r for r in found}

    first, again, other = rows(1234), rows(1234), rows(99)
    assert first == again  # the same run.seed: the same intervals, to the last bit
    assert [r["recovery"] for r in other.values()] == [r["recovery"] for r in first.values()]
    assert [(r["ci_low"], r["ci_high"]) for r in other.values()] != [
        (r["ci_low"], r["ci_high"]) for r in first.values()
    ]
    alone = rows(1234, ("easy",))  # dropping a task does not move another task's interval
    assert (alone[("task", "easy")]["ci_low"], alone[("task", "easy")]["ci_high"]) == (
        first[("task", "easy")]["ci_low"],
        first[("task", "easy")]["ci_high"],
    )
