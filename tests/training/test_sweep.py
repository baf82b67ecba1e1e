"""The GPU sweep's planning and time guard, on the CPU: the planned runs fit the budget, every precision gets
the same grid in cost order, a passed deadline stops training, and bad devices are named before any model."""

import time

import pytest
import torch

from evalsuite.training import sweep
from evalsuite.training.loop import TrainingCutShort, TrainSettingsError, parse_settings, train
from tests.training.common import micro

SIZES = [(32, 1), (64, 2)]
CFG = sweep.SweepConfig(device="cpu", batch=4, seq_len=32, min_steps=4)
RATES = {((32, 1), "bf16"): 4000.0, ((32, 1), "mxfp4-quartet"): 500.0,
         ((64, 2), "bf16"): 2000.0, ((64, 2), "mxfp4-quartet"): 250.0}  # fmt: skip
OVERHEADS = dict.fromkeys(RATES, 0.5)


def _planned_seconds(steps_max: int) -> float:
    plan = sweep.order_plan(SIZES, ["bf16", "mxfp4-quartet"], steps_max, CFG, RATES)
    return sum(steps * CFG.tokens_per_step / RATES[(size, p)] + OVERHEADS[(size, p)] for size, p, steps in plan)


def test_planned_runs_fit_the_budget_and_one_more_step_would_not():
    steps = sweep.plan_steps(RATES, OVERHEADS, CFG, seconds=60.0)
    assert steps > 16
    assert _planned_seconds(steps) <= 60.0 + 1.0  # rounding of the fractions' steps
    assert _planned_seconds(int(steps * 1.1)) > 60.0
    assert sweep.plan_steps(RATES, OVERHEADS, CFG, seconds=0.0) == 16  # the floor: min_steps at the smallest fraction


def test_plan_gives_every_precision_the_same_cells_cheapest_first():
    plan = sweep.order_plan(SIZES, ["bf16", "mxfp4-quartet"], 40, CFG, RATES)
    assert len(plan) == 2 * 3 * 2
    pairs = [plan[i : i + 2] for i in range(0, len(plan), 2)]
    assert all(a[0] == b[0] and a[2] == b[2] and (a[1], b[1]) == ("bf16", "mxfp4-quartet") for a, b in pairs)
    costs = [sum(c[2] * CFG.tokens_per_step / RATES[(c[0], c[1])] for c in pair) for pair in pairs]
    assert costs == sorted(costs)
    assert sorted({c[2] for c in plan}) == [10, 20, 40]


def test_a_passed_deadline_stops_training_and_the_sweep_lists_the_cut_runs():
    with pytest.raises(TrainingCutShort, match="after 0 of 5 steps"):
        train(micro("bf16", 5), deadline=time.time() - 1)
    plan = [((32, 1), "bf16", 8), ((32, 1), "mxfp4-quartet", 8)]
    seen = []
    cut = sweep.run_points(plan, torch.zeros(32, 33, dtype=torch.long), torch.zeros(2, 33, dtype=torch.long), CFG,
                           time.time() - 1, lambda point, timing: seen.append(point))  # fmt: skip
    assert seen == [] and [c["precision"] for c in cut] == ["bf16", "mxfp4-quartet"]


def test_training_data_of_the_wrong_shape_is_named():
    with pytest.raises(ValueError, match=r"hold \(3, 33\) token rows; 20 rows of 33 needed"):
        train(micro("bf16", 5), data=torch.zeros(3, 33, dtype=torch.long))


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"device": "gpu"}, "device must be cpu, cuda or cuda:N, got 'gpu'"),
        ({"backend": "cublas"}, "backend must be 'torch-ref' or 'triton', got 'cublas'"),
    ],
)
def test_bad_device_or_backend_is_named(fields, message):
    with pytest.raises(TrainSettingsError, match=message):
        parse_settings({"recipe": "bf16", "steps": 1, **fields})


def test_the_default_backend_follows_the_device(monkeypatch):
    assert parse_settings({"recipe": "fp8", "steps": 1}).backend == "torch-ref"
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(TrainSettingsError, match="backend 'triton' on device cpu needs TRITON_INTERPRET=1"):
        parse_settings({"recipe": "fp8", "steps": 1, "backend": "triton"})
    if not torch.cuda.is_available():
        with pytest.raises(TrainSettingsError, match="torch sees no CUDA device"):
            parse_settings({"recipe": "fp8", "steps": 1, "device": "cuda"})
    else:
        assert parse_settings({"recipe": "fp8", "steps": 1, "device": "cuda"}).backend == "triton"
