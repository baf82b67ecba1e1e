"""FP8 Adam moments (E4M3 first, E5M2 second, per-tensor scales) against torch's fp32 AdamW on the same
gradient stream: a stated error bound, measured."""

import torch

from evalsuite.training.fp8_adam import FP8AdamW
from evalsuite.training.loop import train
from tests.training.common import micro

# Measured on the stream below, worst over 100 steps (relative Frobenius): first moment 6.5%, second 21.5%.
# The second moment errs more: E5M2 has 2 mantissa bits, and a step with beta2 = 0.98 moves v by less than
# half its spacing, so round-to-nearest can hold v still where fp32 moves it.
M_BOUND, V_BOUND = 0.10, 0.25


def test_fp8_moments_stay_within_the_stated_error_of_fp32_moments():
    gen = torch.Generator().manual_seed(0)
    p32, p8 = torch.nn.Parameter(torch.zeros(64, 96)), torch.nn.Parameter(torch.zeros(64, 96))
    o32 = torch.optim.AdamW([p32], lr=1e-3, betas=(0.9, 0.98), weight_decay=0.0)
    o8 = FP8AdamW([p8], lr=1e-3, betas=(0.9, 0.98), weight_decay=0.0)
    columns = torch.logspace(-3, 0, 96)  # gradients over three decades, with a drift
    worst_m = worst_v = 0.0
    for _ in range(100):
        grad = torch.randn(64, 96, generator=gen) * columns + 0.3 * columns
        p32.grad, p8.grad = grad.clone(), grad.clone()
        o32.step()
        o8.step()
        m8, v8 = o8.moments(p8)
        ref = o32.state[p32]
        worst_m = max(worst_m, float((m8 - ref["exp_avg"]).norm() / ref["exp_avg"].norm()))
        worst_v = max(worst_v, float((v8 - ref["exp_avg_sq"]).norm() / ref["exp_avg_sq"].norm()))
    assert worst_m < M_BOUND, f"first moment off by {worst_m:.3f}"
    assert worst_v < V_BOUND, f"second moment off by {worst_v:.3f}"
    assert o8.state[p8]["m_q"].dtype == torch.float8_e4m3fn and o8.state[p8]["v_q"].dtype == torch.float8_e5m2
    assert float((p8 - p32).detach().norm() / p32.detach().norm()) < 0.1  # the parameters follow


def test_fp8_moments_train_as_fp32_moments_do():
    plain, fp8 = train(micro("fp8-smooth", 30)), train(micro("fp8-smooth-adam8", 30))
    assert isinstance(fp8.optimizer, FP8AdamW)
    last = lambda r: sum(r.losses[-5:]) / 5  # noqa: E731
    assert last(fp8) < fp8.losses[0] - 1.0
    assert abs(last(fp8) - last(plain)) < 0.25, f"{last(fp8):.3f} vs {last(plain):.3f}"
