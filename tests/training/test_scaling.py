"""The scaling-law fit recovers known multipliers from points drawn from the law, its bootstrap intervals
surround its estimates, and the compute-optimal choice turns at the break-even speedup."""

import numpy as np
import pytest

from evalsuite.training.scaling import Point, bootstrap, compute_optimal, fit, predict

TRUE = {"E": 1.5, "A": 40.0, "alpha": 0.35, "B": 60.0, "beta": 0.3, "m_N": {"low": 0.5}, "m_D": {"low": 0.8}}


def _points(noise: float, seed: int = 0) -> list[Point]:
    rng = np.random.default_rng(seed)
    points = []
    for precision in ("base", "low"):
        for params in (2e4, 8e4, 3e5, 1e6):
            for tokens in (2e4, 1e5, 5e5, 2e6):
                loss = float(predict(TRUE, precision, params, tokens)) + noise * rng.standard_normal()
                points.append(Point(precision, 0, int(params), int(tokens), loss))
    return points


def test_fit_recovers_known_multipliers_and_the_intervals_hold_them():
    law = fit(_points(0.0), "base")
    assert law["m_N"]["low"] == pytest.approx(0.5, rel=0.02) and law["m_D"]["low"] == pytest.approx(0.8, rel=0.02)
    noisy = _points(0.003)
    estimate = fit(noisy, "base")
    intervals = bootstrap(noisy, "base", iters=20)
    for key, truth in (("m_N", 0.5), ("m_D", 0.8)):
        lo, hi = intervals[f"{key}:low"]
        assert estimate[key]["low"] == pytest.approx(truth, rel=0.15)
        assert lo <= estimate[key]["low"] <= hi and 0 < hi - lo < 0.5, (key, lo, hi)


def test_compute_optimal_turns_at_the_break_even_speedup():
    law = {**TRUE, "base": "base"}
    [row] = compute_optimal(law, {"low": 1.0}, [1e13])
    assert row["compute_optimal"] == "base"  # the same speed and a cost: the base precision wins
    needed = row["break_even_speedup"]["low"]
    assert needed > 1
    assert compute_optimal(law, {"low": needed * 1.05}, [1e13])[0]["compute_optimal"] == "low"
    assert compute_optimal(law, {"low": needed * 0.95}, [1e13])[0]["compute_optimal"] == "base"


def test_a_missing_base_precision_is_named():
    with pytest.raises(ValueError, match="base precision 'bf16' has no sweep points"):
        fit(_points(0.0), "bf16")


def test_markdown_snippet_states_the_multipliers_the_speeds_and_the_winner():
    from evalsuite.training.scaling import markdown

    points = _points(0.0)
    law = fit(points, "base")
    intervals = {"m_N:low": [0.45, 0.55], "m_D:low": [0.7, 0.9]}
    optimal = compute_optimal(law, {"low": 3.0}, [1e12, 1e13])
    text = markdown(points, law, intervals, {"low": 3.0}, optimal)
    assert f"| low | {law['m_N']['low']:.3f} [0.450, 0.550] | {law['m_D']['low']:.3f} [0.700, 0.900] | 3.00x |" in text
    assert f"**{optimal[0]['compute_optimal']}" in text and "cannot tell" not in text
    wide = markdown(points, law, {"m_N:low": [0.1, 2.0], "m_D:low": [0.5, 1.5]}, {}, optimal)
    assert "Both intervals of low hold 1" in wide and "not measured (1 assumed)" in wide
