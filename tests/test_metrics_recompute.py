"""A crash after inference (while building the results) loses nothing: the rerun makes no model call and its
metrics equal those of an uninterrupted run."""

import pytest

from evalsuite import results
from evalsuite.config import parse_suite
from evalsuite.runner import run_suite


def suite():
    return parse_suite(
        {
            "name": "crash",
            "model": {"path": "embedded:tiny"},
            "variants": ["W4A16"],
            "suites": {"academic": {"tasks": ["tiny_mc", "tiny_arith"], "limit": 6}},
            "run": {"batch_size": 4, "bootstrap_iters": 20},
        }
    )


class Crash(RuntimeError):
    pass


def test_a_crash_while_building_results_recomputes_only_the_metrics(tmp_path, monkeypatch):
    build = results.build
    attempts = []

    def crash_once(*args, **kwargs):
        attempts.append(1)
        if len(attempts) == 1:
            raise Crash("after all inference")
        return build(*args, **kwargs)

    monkeypatch.setattr(results, "build", crash_once)
    with pytest.raises(Crash):
        run_suite(suite(), tmp_path / "crashed")
    assert not (tmp_path / "crashed" / results.RESULTS_FILE).exists()
    resumed = run_suite(suite(), tmp_path / "crashed")
    assert len(attempts) == 2
    calls = {name: info["model_calls_by_task"] for name, info in resumed.data["variants"].items()}
    assert calls == {name: {"academic/tiny_mc": 0, "academic/tiny_arith": 0} for name in ("baseline", "W4A16")}
    assert all(info["model_calls"] == 0 for info in resumed.data["variants"].values())

    straight = run_suite(suite(), tmp_path / "straight")
    assert all(c > 0 for info in straight.data["variants"].values() for c in info["model_calls_by_task"].values())
    for key in ("metrics", "recovery", "flips", "suites"):
        assert resumed.data[key] == straight.data[key], f"{key} after the crash differ from an uninterrupted run"
