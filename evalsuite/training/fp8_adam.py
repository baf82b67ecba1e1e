"""AdamW whose moments are stored in FP8: the first in E4M3, the second in E5M2 (more range, as the squared
gradients need), each with one fp32 scale per tensor (absmax / the format's largest value).

    opt = FP8AdamW(params, lr=1e-3, betas=(0.9, 0.98), weight_decay=0.05)

Each step dequantizes the moments, updates them in fp32 as AdamW does (decoupled weight decay, bias
correction), updates the parameter from the fp32 values, and stores the moments quantized again. `moments(p)`
gives the dequantized pair for inspection.
"""

from __future__ import annotations

import torch

from .linear import QuantOps


class FP8AdamW(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, ops: QuantOps | None = None):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.ops = ops or QuantOps("torch-ref")

    def _store(self, state: dict, m: torch.Tensor, v: torch.Tensor) -> None:
        m_q, m_scale = self.ops.e4m3_quantize(m.reshape(1, -1), "tensor")
        v_q, v_scale = self.ops.e5m2_quantize(v.reshape(1, -1), "tensor")
        state.update(m_q=m_q, m_scale=m_scale, v_q=v_q, v_scale=v_scale)

    def moments(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        state = self.state[p]
        m = (state["m_q"].float() * state["m_scale"]).reshape(p.shape)
        v = (state["v_q"].float() * state["v_scale"]).reshape(p.shape)
        return m, v

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    zero = torch.zeros_like(p, dtype=torch.float32)
                    self._store(state, zero, zero)
                state["step"] += 1
                m, v = self.moments(p)
                g = p.grad.float()
                m = beta1 * m + (1 - beta1) * g
                v = beta2 * v + (1 - beta2) * g * g
                t = state["step"]
                m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_((m_hat / (v_hat.sqrt() + group["eps"])).to(p.dtype), alpha=-group["lr"])
                self._store(state, m, v)
        return loss
