"""Seeded sampling for `EvalLM.generate_until`: each row's own generator, seeded from the request's seed and
context, so a sample does not depend on which other requests share its batch; then top-p at the row's
temperature (argmax for greedy rows)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from evalsuite.hashing import digest


@dataclass
class Sampler:
    temperature: float
    top_p: float
    generator: torch.Generator


def sampler(context: str, kwargs: dict, device: torch.device) -> Sampler | None:
    """None for greedy decoding; else the row's temperature, top-p and its own seeded generator."""
    if not kwargs.get("do_sample") or float(kwargs.get("temperature", 1.0)) == 0:
        return None
    if "seed" not in kwargs:
        raise ValueError("sampling needs an explicit seed in the generation settings (seed: N)")
    seed = int(digest(kwargs["seed"], context), 16)
    generator = torch.Generator(device=device).manual_seed(seed)
    return Sampler(float(kwargs.get("temperature", 1.0)), float(kwargs.get("top_p", 1.0)), generator)


def next_tokens(logits: torch.Tensor, samplers: list[Sampler | None]) -> torch.Tensor:
    """(B, V) last-position logits -> (B,) next token ids: argmax, or a top-p sample at the row's temperature."""
    next_ids = logits.argmax(dim=-1)
    for b, row_sampler in enumerate(samplers):
        if row_sampler is None:
            continue
        probs = torch.softmax(logits[b].float() / row_sampler.temperature, dim=-1)
        sorted_probs, order = probs.sort(descending=True)
        outside = sorted_probs.cumsum(0) - sorted_probs > row_sampler.top_p  # keep the smallest set reaching top_p
        sorted_probs[outside] = 0
        pick = torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=row_sampler.generator)
        next_ids[b] = order[pick[0]]
    return next_ids
