import math

import numpy as np
import pytest

from evalsuite import stats


def test_recovery_directions_and_undefined_cases():
    assert stats.recovery(0.8, 0.78, True) == pytest.approx(0.975)
    assert stats.recovery(10.0, 12.5, False) == pytest.approx(0.8)  # perplexity went up: 80% recovery
    assert stats.recovery(0.0, 0.5, True) is None
    assert stats.recovery(None, 0.5, True) is None
    assert stats.recovery(float("nan"), 0.5, True) is None


def test_pair_aggregates_match_lm_eval_formulas():
    values = stats.values_of("word_perplexity", [(-10.0, 5), (-20.0, 5)])
    assert values.aggregate() == pytest.approx(math.exp(3.0))
    bpb = stats.values_of("bits_per_byte", [(-10.0, 5), (-20.0, 5)])
    assert bpb.aggregate() == pytest.approx(3.0 / math.log(2))
    assert stats.values_of("f1", [(1, 2)]) is None


def test_paired_bootstrap_is_seeded_and_covers_the_point_estimate():
    rng = np.random.default_rng(0)
    base = rng.random(400) < 0.8
    variant = base.copy()
    variant[:20] = ~variant[:20]
    b, v = stats.values_of("acc", base.tolist()), stats.values_of("acc", variant.tolist())
    point = stats.recovery(b.aggregate(), v.aggregate(), True)
    lo, hi = stats.paired_bootstrap_recovery(b, v, True, 2000, seed=1)
    assert lo <= point <= hi and hi - lo < 0.1
    assert stats.paired_bootstrap_recovery(b, v, True, 2000, seed=1) == (lo, hi)
    identical = stats.paired_bootstrap_recovery(b, b, True, 500, seed=1)
    assert identical == (1.0, 1.0)  # pairing: identical answers give a zero-width interval


def test_mcnemar_counts_and_exact_p_value():
    base = np.array([1, 1, 1, 0, 0, 1, 1, 1, 1, 1])
    variant = np.array([0, 0, 1, 0, 1, 1, 1, 1, 1, 1])
    out = stats.mcnemar(base, variant)
    assert (out["correct_to_wrong"], out["wrong_to_correct"], out["flips"]) == (2, 1, 3)
    assert out["p_value"] == pytest.approx(1.0)  # 2 * P(X <= 1 | n=3, 1/2) = 2 * 4/8, capped at 1
    lost = stats.mcnemar(np.ones(20), np.r_[np.zeros(10), np.ones(10)])
    assert lost["p_value"] == pytest.approx(2 / 2**10)


def test_stderr_of_a_mean_is_the_sample_standard_error():
    values = stats.values_of("acc", [1, 0, 1, 1])
    assert stats.stderr(values, 0, 0) == pytest.approx(np.std([1, 0, 1, 1], ddof=1) / 2)


def test_resampled_aggregates_equal_those_of_the_drawn_documents():
    """Draw counts are the drawn indices in another form: the same aggregates, perplexity included."""
    values = stats.values_of("word_perplexity", [(-10.0, 5), (-20.0, 7), (-3.0, 2)])
    counts = stats.Resamples(7, 50).counts("academic/t", 3)  # (50, 3)
    assert (counts.sum(axis=1) == 3).all()
    idx = np.stack([np.repeat(np.arange(3), row.astype(int)) for row in counts])  # (50, 3)
    np.testing.assert_allclose(values.resampled(counts), values.aggregate(idx), rtol=1e-12, atol=0)
    assert np.array_equal(stats.Resamples(7, 50).counts("academic/t", 3), counts)  # seeded
