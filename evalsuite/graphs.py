"""Batched decoding: over a static KV cache with each step replayed from a CUDA graph (GPU), or eagerly
over a growing cache (CPU). Both take left-padded contexts and give the last position's logits.

    decoder = StaticDecoder(model, batch_size=32, max_len=1024, graphs=True)
    logits = decoder.prefill(contexts)          # left-padded batch of token lists -> (B, V) last logits
    logits = decoder.step(next_ids)             # (B,) -> (B, V), one token for every row

The cache, the input ids, the positions and the attention mask live in fixed buffers, so a decode step has
static shapes and addresses: it is captured once and replayed, which removes the per-layer launch overhead
that dominates eager decoding of small batches. The attention mask is passed as a 4D boolean tensor
(True = attend), so no mask is built inside the captured region. On CPU (or with graphs=False) the same
code runs eagerly.
"""

from __future__ import annotations

import inspect

import torch


def cache_argument(model: torch.nn.Module) -> str:
    """The forward argument that takes the KV cache: `cache` from transformers 5.25, `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def left_padded(contexts: list[list[int]], batch_size: int, max_len: int, device: torch.device):
    """The contexts as a left-padded (batch_size, W) batch, unused rows repeating the last context: token ids,
    which positions are real tokens, and each token's position (pads at 0). W must leave the cache room."""
    if len(contexts) > batch_size:
        raise ValueError(f"{len(contexts)} contexts for a decoder built for {batch_size}")
    contexts = contexts + [contexts[-1]] * (batch_size - len(contexts))  # fill unused rows
    width = max(len(c) for c in contexts)
    if width >= max_len:
        raise ValueError(f"context of {width} tokens does not fit a cache of {max_len}")
    ids = torch.tensor([[0] * (width - len(c)) + c for c in contexts], device=device)
    real = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in contexts], device=device).bool()
    return ids, real, (real.long().cumsum(-1) - 1).clamp(min=0)


class StaticDecoder:
    def __init__(self, model: torch.nn.Module, batch_size: int, max_len: int, graphs: bool = True):
        from transformers import StaticCache

        self.model = model
        self.device = next(model.parameters()).device
        self.batch_size, self.max_len = batch_size, max_len
        self.graphs = graphs and self.device.type == "cuda"
        self.cache = StaticCache(config=model.config, max_cache_len=max_len)
        self.cache_arg = cache_argument(model)
        self.ids = torch.zeros(batch_size, 1, dtype=torch.long, device=self.device)
        self.positions = torch.zeros(batch_size, 1, dtype=torch.long, device=self.device)
        self.mask = torch.zeros(batch_size, 1, 1, max_len, dtype=torch.bool, device=self.device)
        self.length = 0  # tokens in the cache
        self.graph = None
        self.logits = None
        self.calls = 0

    def _reset_cache_length(self, length: int) -> None:
        for layer in self.cache.layers:
            if getattr(layer, "is_initialized", False):
                layer.cumulative_length.fill_(length)

    @torch.no_grad()
    def prefill(self, contexts: list[list[int]]) -> torch.Tensor:
        """Left-pad the contexts, run them through the model into the cache; the last position's logits."""
        ids, real, positions = left_padded(contexts, self.batch_size, self.max_len, self.device)
        width = ids.shape[1]
        causal = torch.ones(width, width, dtype=torch.bool, device=self.device).tril()
        mask = torch.zeros(self.batch_size, 1, width, self.max_len, dtype=torch.bool, device=self.device)
        mask[:, 0, :, :width] = causal[None] & real[:, None, :]
        mask[:, 0, :, :width] |= torch.eye(width, dtype=torch.bool, device=self.device)[None]  # pads see themselves
        self._reset_cache_length(0)
        self.calls += 1
        out = self.model(
            input_ids=ids,
            position_ids=positions,
            attention_mask=mask,
            **{self.cache_arg: self.cache},
            use_cache=True,
            logits_to_keep=1,
        )
        self.length = width
        self.mask.zero_()
        self.mask[:, 0, 0, :width] = real
        self.positions.copy_(positions[:, -1:])
        return out.logits[:, -1]

    def _run_step(self) -> torch.Tensor:
        out = self.model(
            input_ids=self.ids,
            position_ids=self.positions,
            attention_mask=self.mask,
            **{self.cache_arg: self.cache},
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1]

    def _capture(self) -> None:
        """Warm up once on a side stream (which writes one throwaway token into the cache), then capture."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self._run_step()
        torch.cuda.current_stream().wait_stream(stream)
        self._reset_cache_length(self.length)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = self._run_step()
        self._reset_cache_length(self.length)

    @torch.no_grad()
    def step(self, next_ids: torch.Tensor) -> torch.Tensor:
        """Append one token per row and return the next logits (B, V)."""
        if self.length >= self.max_len:
            raise ValueError(f"the cache of {self.max_len} tokens is full")
        self.ids[: len(next_ids), 0] = next_ids
        self.positions += 1
        self.mask[:, 0, 0, self.length] = True
        self.calls += 1
        if not self.graphs:
            logits = self._run_step()
        else:
            if self.graph is None:
                self._capture()
            self.graph.replay()
            logits = self.logits
        self.length += 1
        return logits


class DynamicDecoder:
    """Eager decoding over a growing cache with a 2D padding mask: the path where CUDA graphs do not apply."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.device = next(model.parameters()).device
        self.cache_arg = cache_argument(model)

    @torch.no_grad()
    def prefill(self, contexts: list[list[int]]) -> torch.Tensor:
        from transformers import DynamicCache

        width = max(len(c) for c in contexts)
        self.mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in contexts], device=self.device)
        ids = torch.tensor([[0] * (width - len(c)) + c for c in contexts], device=self.device)
        self.positions = (self.mask.cumsum(-1) - 1).clamp(min=0)[:, -1:]
        self.cache = DynamicCache()
        out = self.model(
            input_ids=ids,
            attention_mask=self.mask,
            position_ids=(self.mask.cumsum(-1) - 1).clamp(min=0),
            **{self.cache_arg: self.cache},
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1]

    @torch.no_grad()
    def step(self, next_ids: torch.Tensor) -> torch.Tensor:
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        self.positions = self.positions + 1
        out = self.model(
            input_ids=next_ids[:, None],
            attention_mask=self.mask,
            position_ids=self.positions,
            **{self.cache_arg: self.cache},
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1]
