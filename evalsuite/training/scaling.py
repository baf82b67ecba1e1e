"""A scaling law with precision-dependent effective parameters and data (the form of the Quartet study):

    L(N, D, p) = E + A / (N * m_N(p)) ** alpha + B / (D * m_D(p)) ** beta,   m_N(base) = m_D(base) = 1

N counts the decoder's parameters (embeddings excluded), D the training tokens. A precision's cost shows as
m_N, m_D < 1: it trains like a model with fewer parameters, or on fewer tokens. The fit is least squares on
the losses; intervals come from a bootstrap over sweep points. With a GEMM speedup s(p) against the base
precision, a compute budget C (base-precision FLOPs, 6 N D) buys D = s C / (6 N) tokens at N parameters;
`compute_optimal` says which precision reaches the lower loss at each budget, and the break-even speedup
above which the low precision wins.

    points = run_sweep([32, 64, 96], [25, 50, 100], ["bf16", "mxfp4-quartet"])     # trains 18 small models
    law = fit(points, base="bf16"); ci = bootstrap(points, "bf16", iters=200)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Point:
    precision: str
    hidden: int
    params: int  # decoder parameters, embeddings excluded
    tokens: int
    loss: float  # held-out loss of the trained weights, evaluated in float32


def _eval_loss(model, rows: torch.Tensor) -> float:
    with torch.no_grad():
        logits = model(input_ids=rows[:, :-1]).logits  # (B, T, V)
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), rows[:, 1:].flatten()).item()


def run_sweep(
    hiddens: list[int], steps: list[int], precisions: list[str], seed: int = 0, batch: int = 4, seq_len: int = 64
) -> list[Point]:
    """Train one model per (precision, hidden size, steps) from scratch: 2 layers, SwiGLU width 3 x hidden,
    cosine schedule with peak 5e-3; the loss is measured on 16 held-out rows (another data seed)."""
    from .loop import _tokenizer, parse_settings, train, training_rows

    points = []
    for precision in precisions:
        for hidden in hiddens:
            for n_steps in steps:
                settings = parse_settings(
                    dict(recipe=precision, steps=n_steps, hidden=hidden, layers=2, intermediate=3 * hidden, heads=2,
                         batch=batch, seq_len=seq_len, lr=5e-3, warmup=max(1, n_steps // 10), seed=seed, threads=1)
                )  # fmt: skip
                result = train(settings)
                rows = training_rows(_tokenizer(settings), 16, seq_len, seed + 10_000)
                params = sum(p.numel() for p in result.model.get_decoder().layers.parameters())
                loss = _eval_loss(result.model, rows)
                points.append(Point(precision, hidden, params, n_steps * batch * seq_len, loss))
    return points


# ---------------------------------------------------------------------------------------------------------------
# The fit


def _unpack(theta: np.ndarray, others: list[str]) -> dict:
    e, a, alpha, b, beta = theta[:5]
    law = {"E": math.exp(e), "A": math.exp(a), "alpha": alpha, "B": math.exp(b), "beta": beta, "m_N": {}, "m_D": {}}
    for i, p in enumerate(others):
        law["m_N"][p], law["m_D"][p] = math.exp(theta[5 + 2 * i]), math.exp(theta[6 + 2 * i])
    return law


def predict(law: dict, precision: str, params, tokens):
    m_n, m_d = law["m_N"].get(precision, 1.0), law["m_D"].get(precision, 1.0)
    params, tokens = np.asarray(params, dtype=float), np.asarray(tokens, dtype=float)
    return law["E"] + law["A"] / (params * m_n) ** law["alpha"] + law["B"] / (tokens * m_d) ** law["beta"]


def fit(points: list[Point], base: str) -> dict:
    from scipy.optimize import least_squares

    precisions = sorted({p.precision for p in points})
    if base not in precisions:
        raise ValueError(f"scaling-fit: the base precision {base!r} has no sweep points (have: {precisions})")
    others = [p for p in precisions if p != base]
    n = np.array([p.params for p in points], dtype=float)
    d = np.array([p.tokens for p in points], dtype=float)
    loss = np.array([p.loss for p in points])
    # column j of `which` marks the points of others[j]: log m = which @ theta's multipliers (0 for the base)
    which = np.array([[p.precision == o for o in others] for p in points], dtype=float).reshape(len(points), -1)

    def residuals(theta):
        e, a, alpha, b, beta = theta[:5]
        m_n, m_d = np.exp(which @ theta[5::2]), np.exp(which @ theta[6::2])
        return np.exp(e) + np.exp(a) / (n * m_n) ** alpha + np.exp(b) / (d * m_d) ** beta - loss

    lower = [-np.inf, -np.inf, 0.05, -np.inf, 0.05] + [-3.0] * (2 * len(others))
    upper = [np.log(loss.min()), np.inf, 2.0, np.inf, 2.0] + [3.0] * (2 * len(others))
    best = None
    for e0 in (0.0, np.log(loss.min()) - 1.0):
        for alpha0 in (0.3, 0.7):
            theta0 = np.array([min(e0, upper[0] - 1e-3), 2.0, alpha0, 2.0, alpha0] + [0.0] * (2 * len(others)))
            found = least_squares(residuals, theta0, bounds=(lower, upper), max_nfev=4000)
            if best is None or found.cost < best.cost:
                best = found
    law = _unpack(best.x, others)
    law["rmse"] = float(np.sqrt(np.mean(best.fun**2)))
    law["base"] = base
    return law


def bootstrap(points: list[Point], base: str, iters: int = 200, seed: int = 0) -> dict:
    """95% percentile intervals of every precision's m_N and m_D, resampling sweep points within each precision."""
    rng = np.random.default_rng(seed)
    by_precision: dict[str, list[Point]] = {}
    for p in points:
        by_precision.setdefault(p.precision, []).append(p)
    draws: dict[str, list[float]] = {}
    for _ in range(iters):
        sample = [group[i] for group in by_precision.values() for i in rng.integers(0, len(group), len(group))]
        law = fit(sample, base)
        for key in ("m_N", "m_D"):
            for precision, value in law[key].items():
                draws.setdefault(f"{key}:{precision}", []).append(value)
    return {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in draws.items()}


def compute_optimal(law: dict, speedups: dict[str, float], budgets: list[float]) -> list[dict]:
    """Per budget C (base-precision FLOPs): each precision's lowest predicted loss over N (D = s C / 6N), the
    winner, and the speedup each other precision would need to tie the base precision."""
    grid = np.logspace(3, 12, 400)  # parameter counts

    def best_loss(precision: str, speed: float, budget: float) -> tuple[float, float]:
        losses = predict(law, precision, grid, speed * budget / (6 * grid))
        i = int(np.argmin(losses))
        return float(losses[i]), float(grid[i])

    rows = []
    base = law["base"]
    for budget in budgets:
        row = {"budget_flops": budget, "precisions": {}}
        for precision in [base, *law["m_N"]]:
            loss, params = best_loss(precision, speedups.get(precision, 1.0), budget)
            row["precisions"][precision] = {"loss": loss, "params": params}
        row["compute_optimal"] = min(row["precisions"], key=lambda p: row["precisions"][p]["loss"])
        target = row["precisions"][base]["loss"]
        row["break_even_speedup"] = {
            p: _break_even(lambda s, p=p, budget=budget: best_loss(p, s, budget)[0], target) for p in law["m_N"]
        }
        rows.append(row)
    return rows


def _break_even(loss_at, target: float) -> float | None:
    """The speedup s in [1/16, 1024] at which loss_at(s) equals target (bisection on log s); None if out of range."""
    lo, hi = math.log(1 / 16), math.log(1024)
    if loss_at(math.exp(hi)) > target:
        return None
    if loss_at(math.exp(lo)) <= target:
        return math.exp(lo)
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if loss_at(math.exp(mid)) <= target else (mid, hi)
    return math.exp(hi)


def plot(points: list[Point], law: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = {p: m for p, m in zip(sorted({q.precision for q in points}), "os^v", strict=False)}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ci, params in enumerate(sorted({q.params for q in points})):
        for precision, marker in markers.items():
            pts = sorted((q for q in points if q.params == params and q.precision == precision), key=lambda q: q.tokens)
            if not pts:
                continue
            d = np.array([q.tokens for q in pts])
            ax.scatter(d, [q.loss for q in pts], marker=marker, color=colors[ci % len(colors)])
            smooth = np.logspace(np.log10(d.min()), np.log10(d.max()), 50)
            style = "-" if precision == law["base"] else "--"
            ax.plot(smooth, predict(law, precision, params, smooth), style, color=colors[ci % len(colors)],
                    label=f"N={params:,} {precision}")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("training tokens D")
    ax.set_ylabel("held-out loss")
    ms = ", ".join(f"{p}: m_N={law['m_N'][p]:.2f}, m_D={law['m_D'][p]:.2f}" for p in law["m_N"])
    ax.set_title(f"L = E + A/(N m_N)^a + B/(D m_D)^b   ({ms})", fontsize=8)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def points_to_json(points: list[Point]) -> list[dict]:
    return [asdict(p) for p in points]


def points_from_json(rows: list[dict], source: str) -> list[Point]:
    try:
        return [Point(**row) for row in rows]
    except TypeError as err:
        raise ValueError(f"{source}: sweep points need precision, hidden, params, tokens, loss ({err})") from None


def markdown(points: list[Point], law: dict, intervals: dict, speedups: dict, optimal: list[dict]) -> str:
    """A README-ready snippet: the law, each precision's multipliers with intervals and speed, and the
    compute-optimal precision per budget at those speeds."""
    base = law["base"]
    n_range = f"{min(p.params for p in points):,}–{max(p.params for p in points):,}"
    d_range = f"{min(p.tokens for p in points):,}–{max(p.tokens for p in points):,}"
    lines = [
        f"Fit over {len(points)} points (N {n_range} decoder parameters, D {d_range} tokens): "
        f"L = {law['E']:.3f} + {law['A']:.3g}/(N m_N)^{law['alpha']:.3f} + {law['B']:.3g}/(D m_D)^{law['beta']:.3f}, "
        f"rmse {law['rmse']:.4f}.",
        "",
        f"| precision | m_N (95% interval) | m_D (95% interval) | measured speed vs {base} |",
        "|---|---|---|---|",
        f"| {base} | 1 (base) | 1 (base) | 1 |",
    ]
    for p in law["m_N"]:
        (lo_n, hi_n), (lo_d, hi_d) = intervals[f"m_N:{p}"], intervals[f"m_D:{p}"]
        speed = f"{speedups[p]:.2f}x" if p in speedups else "not measured (1 assumed)"
        lines.append(f"| {p} | {law['m_N'][p]:.3f} [{lo_n:.3f}, {hi_n:.3f}] | "
                     f"{law['m_D'][p]:.3f} [{lo_d:.3f}, {hi_d:.3f}] | {speed} |")  # fmt: skip
    lines.append("")
    for p in law["m_N"]:
        (lo_n, hi_n), (lo_d, hi_d) = intervals[f"m_N:{p}"], intervals[f"m_D:{p}"]
        if lo_n <= 1 <= hi_n and lo_d <= 1 <= hi_d:
            lines.append(f"Both intervals of {p} hold 1: this sweep cannot tell its cost from none.")
    winners = sorted({row["compute_optimal"] for row in optimal})
    budgets = f"{optimal[0]['budget_flops']:.0e}–{optimal[-1]['budget_flops']:.0e}"
    lines.append(f"Compute-optimal at the measured speeds, for budgets of {budgets} {base}-FLOPs: "
                 f"**{', '.join(winners)}**.")  # fmt: skip
    for row in optimal:
        even = "; ".join(
            f"{p} ties {base} at {s:.2f}x its speed" if s else f"{p} cannot tie {base} at any speed up to 1024x"
            for p, s in row["break_even_speedup"].items()
        )
        lines.append(f"- {row['budget_flops']:.0e} FLOPs: {row['compute_optimal']} ({even})")
    return "\n".join(lines) + "\n"
