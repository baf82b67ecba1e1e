"""Recovery rows of results.json, per task and metric and per suite average, each with the 95% interval of
one paired bootstrap per variant, or the reason it has none.

    boot = resamples(run_seed, "W4A16", 1000)
    rows, flips = variant_recovery("W4A16", task_results["W4A16"], task_results["baseline"], boot)

Recovery (higher is better) = variant / baseline; (lower is better, e.g. perplexity) = baseline / variant.
A suite's recovery is the recovery of its average primary score over its higher-is-better tasks (the
published method), not the mean of its tasks' recoveries.

One bootstrap per variant, seeded once from run.seed: each task's documents are drawn `iters` times
(`stats.Resamples`) and every interval of the variant, each metric of each task and each suite average, is
computed from those same draws. A one-task suite's interval is its task's; an average's moves with its tasks'.

A row without an interval or without a recovery says why: `reason` is a key of REASONS and `reason_detail`
the numbers behind it (or null); `explain(row)` is the sentence the reports and the gate show.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from evalsuite import stats
from evalsuite.hashing import text_digest
from evalsuite.pairing import aligned, documents, filter_of, flipped_samples, metric_values, values_of

REASONS = {
    # no interval
    "bootstrap_off": "run.bootstrap_iters is 0, so no resamples were drawn",
    "too_few_documents": "fewer than 2 documents, too few to resample",
    "no_per_document_values": (
        "the metric has no per-document values that reproduce its score (an aggregate lm-eval computes its "
        "own way), so it cannot be resampled"
    ),
    "degenerate_resamples": (
        f"recovery is undefined in more than {100 * (1 - stats.MIN_DEFINED):.0f}% of resamples, those where the "
        "score it divides by is 0: a zero or near-zero baseline, such as 1 of 50 correct"
    ),
    "task_without_interval": "a task of this average has no interval",
    # no recovery
    "baseline_zero": "the baseline score is 0, so variant ÷ baseline is undefined",
    "variant_zero": "the variant's score is 0 on a lower-is-better metric, so baseline ÷ variant is undefined",
    "score_not_finite": "a score is missing, NaN or infinite",
    "skipped_metric": "the metric was not scored",
}


def reason_text(row: dict) -> str:
    """Why a row lacks its interval or its recovery, in words, with the numbers behind it."""
    reason = row.get("reason")
    if reason is None:
        return "no reason recorded (results.json written before evalsuite recorded reasons)"
    text = REASONS.get(reason, reason)
    return f"{text} ({row['reason_detail']})" if row.get("reason_detail") else text


def explain(row: dict) -> str | None:
    """'no recovery: …' or 'no interval: …' for a row that lacks one, None for a row that has both."""
    if row.get("recovery") is None:
        return f"no recovery: {reason_text(row)}"
    if row.get("ci_low") is None or row.get("ci_high") is None:
        return f"no interval: {reason_text(row)}"
    return None


def resamples(seed: int, variant: str, iters: int) -> stats.Resamples:
    """The one bootstrap of a variant, seeded from run.seed and the variant's name."""
    return stats.Resamples(int(text_digest(f"{seed}|{variant}"), 16), iters)


@dataclass(frozen=True)
class Draws:
    """A metric's aggregate in each resample, for the baseline and the variant, or why there is none."""

    base: np.ndarray | None = None  # (R,)
    variant: np.ndarray | None = None  # (R,)
    reason: str | None = None
    detail: str | None = None


def draws(boot: stats.Resamples, key: str, base: list[dict], variant: list[dict], metric: str, ok: bool) -> Draws:
    """The metric's aggregates over the task's resampled documents (`key` names the task's draws); `ok` is
    False when either side's metric cannot be resampled."""
    if boot.iters <= 0:
        return Draws(reason="bootstrap_off")
    docs = documents(base)
    filt = filter_of(metric, base)
    (bv, bpos), (vv, vpos) = metric_values(base, metric, filt, docs), metric_values(variant, metric, filt, docs)
    if len(bpos) < 2:
        return Draws(reason="too_few_documents", detail=f"{len(bpos)} document{'s' * (len(bpos) != 1)}")
    if not ok or bv is None or vv is None or bpos != vpos:
        return Draws(reason="no_per_document_values")
    counts = boot.counts(key, len(docs))[:, bpos]  # (R, n): how often each value's document was drawn
    return Draws(bv.resampled(counts), vv.resampled(counts))


def interval(d: Draws, higher_is_better: bool) -> tuple[tuple[float, float] | None, str | None, str | None]:
    """(interval, reason, detail): the percentile interval of recovery over the draws, or None and why."""
    if d.reason:
        return None, d.reason, d.detail
    samples = stats.recovery_samples(d.base, d.variant, higher_is_better)
    found = stats.percentile_interval(samples)
    if found is not None:
        return found, None, None
    side, den = ("baseline", d.base) if higher_is_better else ("variant", d.variant)
    zero, undefined_share = np.mean(den == 0), np.mean(~np.isfinite(samples))
    what = f"the {side}'s score is 0" if zero == undefined_share else "undefined"
    return None, "degenerate_resamples", f"{what} in {100 * undefined_share:.1f}% of {len(samples)} resamples"


def undefined(base: float | None, value: float | None, higher_is_better: bool) -> tuple[str, str | None]:
    """(reason, detail) of a recovery that stats.recovery leaves undefined."""
    if base is None or value is None or not math.isfinite(base) or not math.isfinite(value):
        return "score_not_finite", f"baseline {base}, variant {value}"
    return ("baseline_zero" if higher_is_better else "variant_zero"), None


def _row(row: dict, found: tuple[float, float] | None, reason: str | None, detail: str | None) -> dict:
    return {
        **row,
        "ci_low": found[0] if found else None,
        "ci_high": found[1] if found else None,
        "reason": reason,
        "reason_detail": detail,
    }


def task_recovery(suite: str, task, base_task, variant: str, boot: stats.Resamples) -> tuple[list[dict], dict | None]:
    """Recovery rows of every metric of one task (skipped ones with their reason), and the flip statistics of
    its primary metric."""
    base_recs, var_recs = aligned(base_task.samples, task.samples, f"{suite}/{task.task} ({variant})")
    rows = []
    for name, metric in task.metrics.items():
        base_metric = base_task.metrics.get(name)
        if base_metric is None:
            continue  # scored for the variant only: a skipped row below
        higher = metric.higher_is_better
        rec = stats.recovery(base_metric.value, metric.value, higher)
        if rec is None:
            found, (reason, detail) = None, undefined(base_metric.value, metric.value, higher)
        else:
            ok = metric.resamplable and base_metric.resamplable
            found, reason, detail = interval(draws(boot, f"{suite}/{task.task}", base_recs, var_recs, name, ok), higher)
        row = {
            "scope": "task",
            "suite": suite,
            "task": task.task,
            "metric": name,
            "variant": variant,
            "primary": name == task.primary,
            "higher_is_better": higher,
            "baseline": base_metric.value,
            "value": metric.value,
            "recovery": rec,
            "n": metric.n,
        }
        rows.append(_row(row, found, reason, detail))
    return rows + skipped_rows(suite, task, base_task, variant), _flips(suite, task, base_recs, var_recs)


def skipped_rows(suite: str, task, base_task, variant: str) -> list[dict]:
    """A row for every metric a suite skipped (its task's `skipped_metrics` detail: {metric: why}) or scored
    for one side only."""
    skipped = {**base_task.details.get("skipped_metrics", {}), **task.details.get("skipped_metrics", {})}
    for name in sorted(task.metrics.keys() ^ base_task.metrics.keys()):
        skipped.setdefault(name, f"not scored for the {'baseline' if name in task.metrics else 'variant'}")
    rows = []
    for name, why in skipped.items():
        base_metric, metric = base_task.metrics.get(name), task.metrics.get(name)
        row = {
            "scope": "task",
            "suite": suite,
            "task": task.task,
            "metric": name,
            "variant": variant,
            "primary": False,
            "higher_is_better": (metric or base_metric).higher_is_better if (metric or base_metric) else None,
            "baseline": base_metric.value if base_metric else None,
            "value": metric.value if metric else None,
            "recovery": None,
            "n": metric.n if metric else None,
        }
        rows.append(_row(row, None, "skipped_metric", why))
    return rows


def _flips(suite: str, task, base_recs: list[dict], var_recs: list[dict]) -> dict | None:
    """Answer flips of the primary metric with McNemar's test, where it is correct/wrong per document."""
    name = task.primary
    filt = filter_of(name, base_recs)
    bv, vv = values_of(base_recs, name, filt), values_of(var_recs, name, filt)
    binary = bv is not None and bv.kind == "mean" and np.isin(bv.num, (0.0, 1.0)).all()
    if not binary or vv is None:
        return None
    flips = {"suite": suite, "task": task.task, "metric": name, **stats.mcnemar(bv.num, vv.num)}
    flips["samples"] = flipped_samples(base_recs, var_recs, name, filt)
    return flips


def suite_recovery(suite: str, variant: str, tasks: dict, base_tasks: dict, boot: stats.Resamples) -> dict | None:
    """Recovery of the average primary score over the suite's higher-is-better tasks; its interval from the
    same draws as its tasks' rows."""
    names = [t for t, r in tasks.items() if r.metrics[r.primary].higher_is_better]
    if not names:
        return None
    base_avg = float(np.mean([base_tasks[t].metrics[base_tasks[t].primary].value for t in names]))
    var_avg = float(np.mean([tasks[t].metrics[tasks[t].primary].value for t in names]))
    rec = stats.recovery(base_avg, var_avg, True)
    if rec is None:
        found, (reason, detail) = None, undefined(base_avg, var_avg, True)
    elif boot.iters <= 0:
        found, reason, detail = None, "bootstrap_off", None
    else:
        per_task = {}
        for t in names:
            primary = tasks[t].primary
            b, v = aligned(base_tasks[t].samples, tasks[t].samples, f"{suite}/{t}")
            ok = tasks[t].metrics[primary].resamplable and base_tasks[t].metrics[primary].resamplable
            per_task[t] = draws(boot, f"{suite}/{t}", b, v, primary, ok)
        missing = {t: d for t, d in per_task.items() if d.reason}
        if missing:
            found, reason = None, "task_without_interval"
            detail = "; ".join(f"{t}: {REASONS[d.reason]}" for t, d in missing.items())
        else:
            base_draws = np.mean([d.base for d in per_task.values()], axis=0)  # (R,) average over tasks
            var_draws = np.mean([d.variant for d in per_task.values()], axis=0)
            found, reason, detail = interval(Draws(base_draws, var_draws), True)
    row = {
        "scope": "suite",
        "suite": suite,
        "task": None,
        "metric": "average of primary metrics",
        "variant": variant,
        "primary": True,
        "higher_is_better": True,
        "baseline": base_avg,
        "value": var_avg,
        "recovery": rec,
        "n": len(names),
        "tasks": names,
        "excluded_lower_is_better": [t for t in tasks if t not in names],
    }
    return _row(row, found, reason, detail)


def variant_recovery(variant: str, suites: dict, base: dict, boot: stats.Resamples) -> tuple[list[dict], list[dict]]:
    """Every recovery row of one variant (its tasks' and its suites' averages, all from `boot`) and its flips.
    suites: {suite: {task: TaskResult}}; base: the baseline's, in the same shape."""
    rows, flips = [], []
    for suite, tasks in suites.items():
        for name, task in tasks.items():
            task_rows, flip = task_recovery(suite, task, base[suite][name], variant, boot)
            rows += task_rows
            if flip:
                flips.append(flip)
        suite_row = suite_recovery(suite, variant, tasks, base[suite], boot)
        if suite_row:
            rows.append(suite_row)
    return rows, flips
