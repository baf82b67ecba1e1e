"""Statistics over per-sample records: aggregates, standard errors, paired-bootstrap recovery intervals and
McNemar's test for paired correct/wrong outcomes.

A metric's per-sample values are either numbers (aggregated by their mean: accuracy, exact match) or
(loglikelihood, count) pairs (perplexities and bits per byte, aggregated as lm-eval does). Intervals come
from a seeded paired bootstrap: the same resampled documents for the baseline and the variant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PAIR_AGGREGATES = {"word_perplexity": "perplexity", "byte_perplexity": "perplexity", "bits_per_byte": "bpb"}


@dataclass(frozen=True)
class Values:
    """One metric's per-sample values in a form that can be resampled: `num` (and `den` for ratios)."""

    kind: str  # "mean", "perplexity" or "bpb"
    num: np.ndarray
    den: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.num)

    def aggregate(self, idx: np.ndarray | None = None) -> np.ndarray | float:
        """The aggregate over all samples, or over each row of resampled indices idx (R, n) -> (R,)."""
        num = self.num if idx is None else self.num[idx]
        if self.kind == "mean":
            return num.mean(axis=-1)
        den = self.den if idx is None else self.den[idx]
        ratio = num.sum(axis=-1) / den.sum(axis=-1)
        return np.exp(-ratio) if self.kind == "perplexity" else -ratio / math.log(2)


def values_of(metric: str, raw: list) -> Values | None:
    """Per-sample values from lm-eval's sample records, or None when the aggregation is not one we know."""
    if not raw:
        return None
    if all(isinstance(v, (int, float, bool)) for v in raw):
        return Values("mean", np.asarray(raw, dtype=np.float64))
    if metric in PAIR_AGGREGATES and all(isinstance(v, (list, tuple)) and len(v) == 2 for v in raw):
        arr = np.asarray(raw, dtype=np.float64)
        return Values(PAIR_AGGREGATES[metric], arr[:, 0], arr[:, 1])
    return None


def stderr(values: Values, iters: int, seed: int) -> float | None:
    if values.n < 2:
        return None
    if values.kind == "mean":
        return float(values.num.std(ddof=1) / math.sqrt(values.n))
    if iters <= 0:
        return None
    idx = np.random.default_rng(seed).integers(0, values.n, size=(iters, values.n))
    return float(np.std(values.aggregate(idx), ddof=1))


def recovery(base: float, variant: float, higher_is_better: bool) -> float | None:
    """variant / baseline (higher is better) or baseline / variant (lower is better); None when undefined."""
    if base is None or variant is None or not math.isfinite(base) or not math.isfinite(variant):
        return None
    num, den = (variant, base) if higher_is_better else (base, variant)
    return None if den == 0 else num / den


def _ratio(base: np.ndarray, variant: np.ndarray, higher_is_better: bool) -> np.ndarray:
    num, den = (variant, base) if higher_is_better else (base, variant)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den != 0, num / den, np.nan)


def _interval(samples: np.ndarray, level: float) -> tuple[float, float] | None:
    finite = samples[np.isfinite(samples)]
    if len(finite) < len(samples) * 0.99 or len(finite) == 0:
        return None
    alpha = (1 - level) / 2
    return float(np.quantile(finite, alpha)), float(np.quantile(finite, 1 - alpha))


def paired_bootstrap_recovery(
    base: Values, variant: Values, higher_is_better: bool, iters: int, seed: int, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile interval of the recovery over paired resamples of the same documents."""
    if iters <= 0 or base.n != variant.n or base.n < 2:
        return None
    idx = np.random.default_rng(seed).integers(0, base.n, size=(iters, base.n))
    return _interval(_ratio(base.aggregate(idx), variant.aggregate(idx), higher_is_better), level)


def suite_bootstrap_recovery(
    pairs: list[tuple[Values, Values]], iters: int, seed: int, level: float = 0.95
) -> tuple[float, float] | None:
    """Interval of the recovery of the average score over tasks (higher is better), each task resampled."""
    if iters <= 0 or not pairs or any(b.n != v.n or b.n < 2 for b, v in pairs):
        return None
    rng = np.random.default_rng(seed)
    base_avg, var_avg = np.zeros(iters), np.zeros(iters)
    for base, variant in pairs:
        idx = rng.integers(0, base.n, size=(iters, base.n))
        base_avg += base.aggregate(idx) / len(pairs)
        var_avg += variant.aggregate(idx) / len(pairs)
    return _interval(_ratio(base_avg, var_avg, True), level)


def mcnemar(base_correct: np.ndarray, variant_correct: np.ndarray) -> dict:
    """Flips between paired binary outcomes and McNemar's exact (binomial) two-sided p-value."""
    base_correct, variant_correct = base_correct.astype(bool), variant_correct.astype(bool)
    lost = int(np.sum(base_correct & ~variant_correct))  # correct -> wrong
    gained = int(np.sum(~base_correct & variant_correct))  # wrong -> correct
    n = lost + gained
    if n == 0:
        p = 1.0
    else:
        k = min(lost, gained)
        tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
        p = min(1.0, 2 * tail)
    total = len(base_correct)
    return {
        "correct_to_wrong": lost,
        "wrong_to_correct": gained,
        "flips": n,
        "flip_rate": n / total if total else 0.0,
        "p_value": p,
        "n": total,
    }
