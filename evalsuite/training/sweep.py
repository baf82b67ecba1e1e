"""A scaling sweep fitted to a wall-clock budget: models of the embedded model's architecture family (Llama,
SwiGLU width 3 x hidden, heads of 64) trained from scratch on its generated training data, for several
precisions and token counts, with the speed of every precision measured on the device it runs on.

    pool = token_pool(rows, seq_len, seed=0, workers=8)         # before CUDA starts: generation forks
    rate = calibrate(size, "bf16", pool, cfg)                    # tokens/s of a short run (also warms Triton)
    steps = plan_steps(rates, cfg, seconds)                      # the largest token count the budget allows
    point = train_point(size, "mxfp4-quartet", steps, pool, held_out, cfg, deadline)

The budget picks the token counts: D_max is the largest count such that every (size, precision, fraction of
D_max) run fits the seconds left at the measured speeds; the same fractions of D_max make the token axis.
"""

from __future__ import annotations

import concurrent.futures
import math
import multiprocessing
import statistics
import time
from dataclasses import dataclass

import torch

from .loop import TrainingCutShort, _tokenizer, parse_settings, train, training_rows
from .scaling import Point, _eval_loss

HEAD_DIM = 64
SIZES = {  # (hidden, layers): decoder parameters from about 0.4M to 28M, at the speeds of one H100
    "h100": [(128, 2), (256, 2), (384, 4), (512, 4), (768, 4)],
    "tiny": [(32, 1), (64, 1)],  # seconds on a CPU: tests the pipeline, fits nothing meaningful
}


@dataclass(frozen=True)
class SweepConfig:
    device: str = "cuda"
    batch: int = 64
    seq_len: int = 256
    lr: float = 2e-3
    seed: int = 0
    fractions: tuple[float, ...] = (0.25, 0.5, 1.0)  # token counts as fractions of D_max
    min_steps: int = 8  # the smallest run of the sweep (at the smallest fraction)
    calibration_steps: int = 8

    @property
    def tokens_per_step(self) -> int:
        return self.batch * self.seq_len


def _rows_worker(args: tuple[int, int, int]) -> torch.Tensor:
    n_rows, seq_len, seed = args
    from evalsuite.training.loop import TrainSettings

    return training_rows(_tokenizer(TrainSettings(recipe="bf16", steps=1)), n_rows, seq_len, seed)


def token_pool(n_rows: int, seq_len: int, seed: int, workers: int) -> torch.Tensor:
    """(n_rows, seq_len + 1) training rows: `workers` generator streams (seeds seed+1 .. seed+workers) in
    parallel processes, concatenated in seed order (the same rows for the same arguments). Call it before
    CUDA is initialized: the workers are forked."""
    per = -(-n_rows // workers)
    jobs = [(per, seq_len, seed + 1 + i) for i in range(workers)]
    if workers == 1:
        parts = [_rows_worker(jobs[0])]
    else:
        ctx = multiprocessing.get_context("fork")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            parts = list(pool.map(_rows_worker, jobs))
    return torch.cat(parts)[:n_rows]


def held_out_rows(n_rows: int, seq_len: int, seed: int) -> torch.Tensor:
    """Evaluation rows from a generator stream no training row comes from."""
    return _rows_worker((n_rows, seq_len, seed + 10_000))


def _settings(size: tuple[int, int], precision: str, steps: int, cfg: SweepConfig):
    hidden, layers = size
    return parse_settings(
        dict(recipe=precision, steps=steps, hidden=hidden, layers=layers, intermediate=3 * hidden,
             heads=max(1, hidden // HEAD_DIM), batch=cfg.batch, seq_len=cfg.seq_len, lr=cfg.lr,
             warmup=max(1, steps // 20), seed=cfg.seed, device=cfg.device, threads=1, stats=False)
    )  # fmt: skip


def _tokens_per_second(step_seconds: list[float], cfg: SweepConfig) -> float:
    """From the median step time after the first steps (which compile the kernels)."""
    steady = step_seconds[len(step_seconds) // 2 :] or step_seconds
    return cfg.tokens_per_step / statistics.median(steady)


def _free(result) -> None:
    del result
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def calibrate(
    size: tuple[int, int], precision: str, pool: torch.Tensor, held_out: torch.Tensor, cfg: SweepConfig
) -> tuple[float, float]:
    """(tokens per second, seconds a run costs besides its steps: building, evaluating) of a short run; its
    first steps also compile the Triton kernels, so the steady speed comes from its later steps, and the
    compilation counts in neither number (it is paid once, here)."""
    start = time.time()
    _, timing = train_point(size, precision, cfg.calibration_steps, pool, held_out, cfg, None)
    return timing["tokens_per_second"], max(0.0, time.time() - start - timing["seconds"])


def plan_steps(rates: dict, overheads: dict, cfg: SweepConfig, seconds: float) -> int:
    """The steps of the largest run (D_max / tokens per step) such that all runs, each with its fixed cost
    (`overheads`, per (size, precision) like `rates`), fit in `seconds`."""
    seconds -= len(cfg.fractions) * sum(overheads.values())
    seconds_per_step = sum(sum(cfg.fractions) * cfg.tokens_per_step / rate for rate in rates.values())
    return max(int(seconds / seconds_per_step), math.ceil(cfg.min_steps / min(cfg.fractions)))


def train_point(
    size: tuple[int, int],
    precision: str,
    steps: int,
    pool: torch.Tensor,
    held_out: torch.Tensor,
    cfg: SweepConfig,
    deadline: float | None,
) -> tuple[Point, dict]:
    """Train one sweep point; (the point, its timing record). Raises TrainingCutShort at the deadline."""
    settings = _settings(size, precision, steps, cfg)
    result = train(settings, data=pool[: steps * cfg.batch], deadline=deadline)
    params = sum(p.numel() for p in result.model.get_decoder().layers.parameters())
    loss = _eval_loss(result.model, held_out.to(cfg.device))
    point = Point(precision, size[0], params, steps * cfg.tokens_per_step, loss)
    timing = {
        "precision": precision, "hidden": size[0], "layers": size[1], "params": params, "steps": steps,
        "tokens": point.tokens, "train_loss_last": result.losses[-1], "seconds": result.seconds,
        "tokens_per_second": _tokens_per_second(result.step_seconds, cfg), "backend": settings.backend,
    }  # fmt: skip
    _free(result)
    return point, timing


def gemm_throughput(precision: str, m: int, k: int, n: int, device: str, reps: int = 10) -> dict:
    """Forward + backward of one linear layer of the recipe at (M tokens, K in, N out): median seconds and
    TFLOP/s (6 M N K per forward and backward), on the backend the training uses on that device."""
    from .linear import LowPrecisionLinear, QuantOps
    from .recipes import get_recipe

    backend = "torch-ref" if device == "cpu" else "triton"
    gen = torch.Generator(device=device).manual_seed(0)
    base = torch.nn.Linear(k, n, bias=False, device=device)
    layer = LowPrecisionLinear(base, get_recipe(precision), QuantOps(backend), gen)
    x = torch.randn(m, k, device=device, requires_grad=True)
    g = torch.randn(m, n, device=device)
    times = []
    for i in range(reps + 2):
        if device != "cpu":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        layer(x).backward(g)
        if device != "cpu":
            torch.cuda.synchronize(device)
        if i >= 2:  # the first two compile and warm up
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {"precision": precision, "backend": backend, "m": m, "k": k, "n": n, "seconds": seconds,
            "tflops": 6 * m * n * k / seconds / 1e12}  # fmt: skip


def kernels_vs_emulation(precision: str, m: int, k: int, n: int, device: str) -> dict:
    """One linear layer's output and gradients on our kernels against the emulation (torch references, fp32
    matmuls), same weights, inputs and stochastic-rounding seed: max |difference| / max |emulated| of each."""
    from .linear import LowPrecisionLinear, QuantOps
    from .recipes import get_recipe

    torch.manual_seed(0)
    base = torch.nn.Linear(k, n, bias=False, device=device)
    x, g = torch.randn(m, k, device=device), torch.randn(m, n, device=device)
    results = []
    for backend in ("torch-ref", "triton"):
        gen = torch.Generator(device=device).manual_seed(1)
        layer = LowPrecisionLinear(base, get_recipe(precision), QuantOps(backend), gen)
        xi = x.clone().requires_grad_(True)
        base.weight.grad = None
        y = layer(xi)
        y.backward(g)
        results.append((y.detach(), xi.grad, base.weight.grad.clone()))
    errors = {
        what: ((kern - ref).abs().max() / ref.abs().max()).item()
        for what, ref, kern in zip(("output", "input_grad", "weight_grad"), *results, strict=True)
    }
    return {"precision": precision, "m": m, "k": k, "n": n, "relative_error": errors}


def run_points(
    plan: list[tuple[tuple[int, int], str, int]],
    pool: torch.Tensor,
    held_out: torch.Tensor,
    cfg: SweepConfig,
    deadline: float,
    on_point,
) -> list[dict]:
    """Train the planned (size, precision, steps) in order until the deadline; `on_point(point, timing)` after
    each. Returns the runs the deadline cut (with the steps they reached)."""
    cut = []
    for size, precision, steps in plan:
        if time.time() > deadline:
            cut.append({"hidden": size[0], "layers": size[1], "precision": precision, "steps": steps, "reached": 0})
            continue
        try:
            on_point(*train_point(size, precision, steps, pool, held_out, cfg, deadline))
        except TrainingCutShort as stop:
            cut.append({"hidden": size[0], "layers": size[1], "precision": precision, "steps": steps,
                        "reached": stop.steps_done})  # fmt: skip
    return cut


def order_plan(sizes, precisions, steps_max: int, cfg: SweepConfig, rates) -> list[tuple[tuple[int, int], str, int]]:
    """Every (size, fraction) with all precisions back to back, cheapest first: a deadline cuts the most
    expensive points and leaves every precision the same grid."""
    cells = []
    for size in sizes:
        for frac in cfg.fractions:
            steps = max(1, round(steps_max * frac))
            cost = sum(steps * cfg.tokens_per_step / rates[(size, p)] for p in precisions)
            cells.append((cost, size, steps))
    cells.sort()
    return [(size, p, steps) for _, size, steps in cells for p in precisions]
