"""The graph decoder's L2 prefetch of a layer's weights while the layer's small kernels run.

At batch 1 the q/k/v GEMV, the attention and the o GEMV are bound by latency (launch, ramp, round trips), not
by HBM, which sits mostly idle through them; the gate/up and down GEMVs that follow are bound by HBM. At the
start of each layer the step forks a side stream that prefetches (`kernels/l2_prefetch.py`) all or part of o's
weight and part of the fused gate/up weight into L2, and joins it before o: the o and gate/up kernels then find
those rows in L2. A prefetch changes no memory, so the step's outputs are the same bits with it or without.

    Prefetch(o=1.0, gate_up=0.5)     # all of o's rows, 8 of every 16 of gate/up's
    Prefetch.parse("1/0.5")           # the same, as `bench e2e --decoders graph-prefetch=1/0.5` names it
    Prefetch.parse("1/0.5/last")      # the same rows at evict-last priority in L2
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from evalsuite.fused_linears import FusedGroup

log = logging.getLogger(__name__)

MIN_BYTES = 1 << 16  # tensors smaller than this (biases, global scales) are left to the kernel's own reads
# A layer never prefetches more than this share of the GPU's L2: o's fraction, then gate/up's, is lowered (in
# steps of 1/PERIOD of the rows) to fit, so that the fractions measured on an 8B model cannot flood the cache
# with a larger model's rows that would evict one another before they are read.
L2_SHARE = 0.75


@dataclass(frozen=True)
class Prefetch:
    """Fractions of the rows of o's and of gate/up's weights (codes and scales alike) that a layer prefetches,
    and whether at evict-last priority (so that the gate/up GEMV's own stream of the other rows evicts older
    lines of normal priority first, rather than the prefetched rows it has yet to read)."""

    o: float
    gate_up: float
    evict_last: bool = False

    def __post_init__(self):
        for name in ("o", "gate_up"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"Prefetch.{name}: a fraction of the weight's rows in [0, 1], got {value}")

    @classmethod
    def parse(cls, text: str) -> Prefetch:
        """O/GU or O/GU/last, e.g. 1/0.5."""
        parts = text.split("/")
        last = len(parts) == 3 and parts[2] == "last"
        try:
            o, gate_up = (float(p) for p in (parts[:2] if last else parts))
        except ValueError:
            raise ValueError(
                f"prefetch {text!r}: expected O/GU or O/GU/last, two fractions in [0, 1] such as 1/0.5"
            ) from None
        return cls(o, gate_up, last)

    def __str__(self) -> str:
        return f"{self.o:g}/{self.gate_up:g}" + ("/last" if self.evict_last else "")


# Off until measured: the batch-1 step with and without it, side by side, is
# `evalsuite bench e2e --decoders graph,graph-prefetch=1/0.5`.
PREFETCH: Prefetch | None = None
TRIAL = Prefetch(o=1.0, gate_up=0.5)  # what `--decoders graph-prefetch` (no fractions) runs while PREFETCH is off


def weight_tensors(module: torch.nn.Module) -> list[torch.Tensor]:
    """The module's own weights (parameters and buffers, not its children's) that bulk prefetch can take: 2-D,
    row-contiguous, 16-byte aligned rows, at least MIN_BYTES."""
    from evalsuite.kernels.l2_prefetch import prefetchable

    found = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
    return [t for t in found if t is not None and t.nbytes >= MIN_BYTES and prefetchable(t)]


class LayerPrefetch:
    """Per layer, the (tensor, fraction) pairs to prefetch; `fork(i)` launches layer i's on the side stream,
    `join()` makes the step's stream wait for them (the graph then holds them as a branch)."""

    def __init__(self, layers, groups, choice: Prefetch, device: torch.device, l2_bytes: int):
        self.choice, self.l2_bytes = choice, l2_bytes
        self.plan, self.capped = [], 0
        for layer, (_, gate_up) in zip(layers, groups, strict=True):
            mlp = layer.mlp
            mlp_modules = [gate_up.layer] if isinstance(gate_up, FusedGroup) else [mlp.gate_proj, mlp.up_proj]
            room = L2_SHARE * l2_bytes
            pairs = []
            for tensors, wanted in (
                (weight_tensors(layer.self_attn.o_proj), choice.o),
                ([t for m in mlp_modules for t in weight_tensors(m)], choice.gate_up),
            ):
                size = sum(t.nbytes for t in tensors)
                fraction = _fit(wanted, size, room)
                room -= fraction * size
                self.capped += fraction < wanted
                pairs += [(t, fraction) for t in tensors if fraction > 0]
            self.plan.append(pairs)
        self.device = device
        self.side = None  # made at the first fork (CUDA only)

    def fork(self, i: int) -> None:
        from evalsuite.kernels.l2_prefetch import l2_prefetch

        if not self.plan[i]:
            return
        if self.side is None:
            self.side = torch.cuda.Stream(self.device)
        self.side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.side):
            for t, fraction in self.plan[i]:
                l2_prefetch(t, fraction, self.choice.evict_last)

    def join(self, i: int) -> None:
        if self.plan[i]:
            torch.cuda.current_stream().wait_stream(self.side)

    def describe(self) -> str:
        layers = sum(bool(p) for p in self.plan)
        mb = sum(t.nbytes * f for p in self.plan for t, f in p) / len(self.plan) / 1e6
        capped = f", lowered {self.capped} times to fit {L2_SHARE:.0%} of the L2" if self.capped else ""
        return (
            f"L2 prefetch during q/k/v and attention of o's and gate/up's weights ({self.choice}: fractions of their "
            f"rows) in {layers}/{len(self.plan)} layers, {mb:.1f} MB a layer{capped}"
        )


def _fit(fraction: float, size: int, room: float) -> float:
    """The largest fraction <= `fraction`, in steps of 1/PERIOD, whose share of `size` bytes fits in `room`."""
    from evalsuite.kernels.l2_prefetch import PERIOD, rows_taken

    if size == 0:
        return fraction
    steps = min(rows_taken(fraction), max(0, int(PERIOD * room // size)))
    return steps / PERIOD


def layer_prefetch(layers, groups, choice: Prefetch | None, device: torch.device, batch: int, max_m: int):
    """A LayerPrefetch, or None and why not (None when not asked for)."""
    from evalsuite.kernels.l2_prefetch import bulk_prefetch

    if choice is None:
        return None, None
    if device.type != "cuda" or not bulk_prefetch(device):
        return None, f"L2 prefetch {choice} asked for but off: it needs an NVIDIA GPU of compute capability 9.0+"
    if batch > max_m:
        return None, f"L2 prefetch {choice} asked for but off at batch {batch}: it serves steps of <= {max_m} tokens"
    l2_bytes = torch.cuda.get_device_properties(device).L2_cache_size
    return LayerPrefetch(layers, groups, choice, device, l2_bytes), None
