"""Statistics over per-sample records: aggregates, standard errors, paired-bootstrap recovery intervals and
McNemar's test for paired correct/wrong outcomes.

A metric's per-sample values are either numbers (aggregated by their mean: accuracy, exact match) or
(loglikelihood, count) pairs (perplexities and bits per byte, aggregated as lm-eval does). Intervals come
from a seeded paired bootstrap (`Resamples`): the same resampled documents for the baseline and the variant,
for every metric of a task and for every average over tasks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from evalsuite.hashing import text_digest

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

    def resampled(self, counts: np.ndarray) -> np.ndarray:
        """The aggregate in each resample, from how often each sample was drawn: counts (R, n) -> (R,)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.kind == "mean":
                return counts @ self.num / counts.sum(axis=-1)
            ratio = (counts @ self.num) / (counts @ self.den)
        return np.exp(-ratio) if self.kind == "perplexity" else -ratio / math.log(2)


class Resamples:
    """One paired bootstrap: `iters` draws with replacement of each task's documents, kept as draw counts so
    that every metric of the task, and every average over tasks, reads the same draws.

        boot = Resamples(seed, 1000)
        counts = boot.counts("academic/gsm8k", 50)     # (1000, 50): how often each document was drawn
        values.resampled(counts)                        # (1000,): the metric's aggregate in each resample

    A task's draws depend only on the seed, its key and its number of documents, not on the other tasks."""

    def __init__(self, seed: int, iters: int):
        self.seed, self.iters = seed, iters
        self._counts: dict[tuple[str, int], np.ndarray] = {}

    def counts(self, key: str, n: int) -> np.ndarray:
        if (key, n) not in self._counts:
            rng = np.random.default_rng([self.seed, int(text_digest(key), 16), n])
            idx = rng.integers(0, n, size=(self.iters, n))  # (R, n) document indices
            flat = (idx + n * np.arange(self.iters)[:, None]).ravel()
            counts = np.bincount(flat, minlength=self.iters * n).reshape(self.iters, n)  # (R, n)
            self._counts[(key, n)] = counts.astype(np.float64)
        return self._counts[(key, n)]


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


MIN_DEFINED = 0.99  # share of resamples in which the recovery must be defined for an interval to be given


def recovery_samples(base: np.ndarray, variant: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Recovery in each resample; NaN where the score it divides by is 0."""
    num, den = (variant, base) if higher_is_better else (base, variant)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den != 0, num / den, np.nan)


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float] | None:
    """The percentile interval of the finite samples; None when fewer than MIN_DEFINED of them are finite."""
    finite = samples[np.isfinite(samples)]
    if len(finite) < len(samples) * MIN_DEFINED or len(finite) == 0:
        return None
    alpha = (1 - level) / 2
    return float(np.quantile(finite, alpha)), float(np.quantile(finite, 1 - alpha))


def paired_bootstrap_recovery(
    base: Values, variant: Values, higher_is_better: bool, iters: int, seed: int, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile interval of the recovery over paired resamples of the same documents (one metric alone)."""
    if iters <= 0 or base.n != variant.n or base.n < 2:
        return None
    counts = Resamples(seed, iters).counts("", base.n)
    samples = recovery_samples(base.resampled(counts), variant.resampled(counts), higher_is_better)
    return percentile_interval(samples, level)


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
