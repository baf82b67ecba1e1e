"""A decode step of our own for Llama-family models, captured whole as one CUDA graph.

    decoder = GraphDecoder(model, batch_size=1, max_len=1024)   # graphs on CUDA, eager elsewhere (it says so)
    logits = decoder.prefill(contexts)      # left-padded batch of token lists -> (B, V) last-position logits
    logits = decoder.step(next_ids)         # (B,) -> (B, V)

The HF forward (`graphs.StaticDecoder`, kept as the reference) launches some forty kernels per layer for the norms,
RoPE, the cache update, the mask and attention. Captured in a CUDA graph their launch cost is gone but each still
runs as its own small kernel, which at batch 1 takes about as long as the layer's GEMMs. Here the step calls the
model's own modules for every linear layer (so each variant's kernels run unchanged) and does the rest in four
pure-torch functions, which on CUDA are compiled by `torch.compile` (Inductor fuses each into one or two kernels):
add+RMSNorm, RoPE, attention over the static cache, SiLU-gate. The functions themselves, run eagerly, are the
reference. A fused gate/up layer whose kernel applies the SiLU-gate itself (the weight-only formats: in the decode
GEMV's epilogue, `QuantLinear.silu_gated`) returns silu(gate) * up directly, and the step's SiLU-gate kernel is
gone. On NVIDIA GPUs the step's attention is our Triton decode kernel instead (kernels/decode_attention.py): split
along the cache for parallelism at batch 1, and reading only the slots filled so far, where the compiled `attend`
reads the whole cache allocated for the longest generation. The cache is one (2, B, Hkv, L, D) tensor per layer,
written by the RoPE function with one `index_copy_`, or in the step, where the Triton kernel attends, by that kernel,
which also applies RoPE (and Qwen3's q/k norms) to the projections as the fused q/k/v layer left them: no kernel of
its own for RoPE or the cache write, where there were three; the step's position, write index and mask live in
device buffers that the graph updates itself, so a step is one copy of the new ids plus one replay. With
`layer_ops` (by default where the layers' format asks for it, see LAYER_OPS), where the linear layers are of a
weight-only format on our kernels (`QuantLinear.fuses_ops`) and a step has at most GEMV_MAX_M tokens, the layers
do the RMSNorms and residual adds too (`LayerOps`): the fused q/k/v and gate/up GEMVs normalize their input in
their prologue, o and down add the residual in their epilogue, so a layer is five kernels (q/k/v, attention, o,
gate/up, down) and one RMSNorm of its own runs, before the output layer.

Capture-safety: the compiled functions are compiled and autotuned in two eager warm-up steps before capture,
and capture runs under `torch.compiler.set_stance("fail_on_recompile")`, so a recompile there fails loudly
instead of compiling inside the graph. No step reads a device value on the host.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from evalsuite.fused_linears import FusedGroup, fused
from evalsuite.quant_schemes.linear import QuantLinear

log = logging.getLogger(__name__)

SUPPORTED_TYPES = ("llama", "mistral", "qwen2", "qwen3")
# Whether the step lets weight-only layers normalize their input and add the residual in their own kernels
# (`LayerOps`): None, where their format's `decode_layer_ops` says so (the integer weight-only formats; FP4's
# decode loop has more instructions per code, so the per-value normalization costs it more than the two kernels
# it saves); True or False, for every format that can. Measured side by side on an H100 (2026-12-07, batch-1
# step at 8B shapes, `benchmarks/layer_ops_ab.py`, benchmarks/layer-ops-h100-1207/): W4A16 364 -> 371 tok/s,
# NVFP4 313 -> 297.
LAYER_OPS: bool | None = None


def unsupported(model: torch.nn.Module, max_len: int) -> str | None:
    """Why this decoder cannot run `model` (None when it can): the architecture must be a Llama-style stack."""
    config = model.config
    if config.model_type not in SUPPORTED_TYPES:
        return f"model type {config.model_type!r} (the graph decoder knows {', '.join(SUPPORTED_TYPES)})"
    window = getattr(config, "sliding_window", None)
    if window and getattr(config, "use_sliding_window", True) and window < max_len:
        return f"sliding-window attention ({window} tokens) with a cache of {max_len}"
    if getattr(config, "hidden_act", None) != "silu":
        return f"activation {getattr(config, 'hidden_act', None)!r} (the graph decoder's MLP is SiLU-gated)"
    implementation = getattr(config, "_attn_implementation", None)
    if implementation not in (None, "eager", "sdpa", "flash_attention_2", "flash_attention_3"):
        return f"attention routed through {implementation!r} (e.g. KV-cache quantization), which this step bypasses"
    devices = set(getattr(model, "hf_device_map", {}).values())
    if len(devices) > 1:
        return f"a model spread over several devices ({sorted(map(str, devices))})"
    inner = getattr(model, "model", None)
    needed = ("embed_tokens", "layers", "norm", "rotary_emb")
    if inner is None or not all(hasattr(inner, n) for n in needed) or not hasattr(model, "lm_head"):
        return f"{type(model).__name__} lacks model.{{{', '.join(needed)}}} or lm_head"
    attn, mlp = inner.layers[0].self_attn, inner.layers[0].mlp
    for owner, names in (
        (attn, ("q_proj", "k_proj", "v_proj", "o_proj")),
        (mlp, ("gate_proj", "up_proj", "down_proj")),
    ):
        if not all(hasattr(owner, n) for n in names):
            return f"{type(owner).__name__} lacks one of {names}"
    return None


# --- the step's non-GEMM work, as pure torch (the reference, and what torch.compile fuses) --------------------


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """As the HF Llama RMSNorm computes it: in float32, cast back, then scaled."""
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(x.dtype)


def add_norm(h: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor, eps: float):
    """The residual add followed by the next RMSNorm: (new residual, its normed input)."""
    h = h + delta
    return h, rms_norm(h, weight, eps)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def rope(q, k, v, cos, sin, head_dim: int, qk_norm: tuple | None, cache: torch.Tensor, index: torch.Tensor):
    """(B, T, H*D) projections -> q (B, H, T, D), RoPE applied to q and k (after Qwen3's per-head norms when the
    model has them); the new keys and values are written into the cache (2, B, Hkv, L, D) at slots index (T,).
    The write is part of the function so that, compiled, it lands in the kernel that rotates k: at batch 1 a
    separate `index_copy_` was one more launch per layer (2.6 us a layer, 84 us of the 3.1 ms W4A16 step on an
    H100)."""
    b, t = q.shape[:2]
    q = q.view(b, t, -1, head_dim)
    k = k.view(b, t, -1, head_dim)
    if qk_norm is not None:
        q, k = rms_norm(q, qk_norm[0], qk_norm[2]), rms_norm(k, qk_norm[1], qk_norm[2])
    cos, sin = cos[:, :, None], sin[:, :, None]
    q = _rotate(q, cos, sin).transpose(1, 2)
    k = _rotate(k, cos, sin).transpose(1, 2)
    cache.index_copy_(3, index, torch.stack((k, v.view(b, t, -1, head_dim).transpose(1, 2))))
    return q


def attend(q: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """q (B, H, T, D) over the cache kv (2, B, Hkv, L, D) where mask (B, T, L) is True -> (B, T, H*D). Query
    heads are grouped over their shared key head (head h reads key head h // (H / Hkv)), as HF's repeat_kv
    does, without copying the cache; softmax in float32 as in HF's eager attention."""
    b, heads, t, d = q.shape
    kv_heads = kv.shape[2]
    group = heads // kv_heads
    qg = q.reshape(b, kv_heads, group * t, d)
    scores = torch.matmul(qg, kv[0].transpose(-1, -2)).float() * scale  # (B, Hkv, G*T, L)
    allowed = mask[:, None, None].expand(b, 1, group, t, mask.shape[-1]).reshape(b, 1, group * t, -1)
    probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1).to(q.dtype)
    out = torch.matmul(probs, kv[1]).view(b, heads, t, d)
    return out.transpose(1, 2).reshape(b, t, heads * d)


def attend_prefill(q: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """The prefill's attention (T > 1), as HF's SDPA path does it: keys and values repeated per query head,
    then SDPA with the boolean mask (B, T, L), which keeps memory linear in T where SDPA's kernels allow."""
    b, heads, t, d = q.shape
    group = heads // kv.shape[2]
    k, v = kv[0].repeat_interleave(group, dim=1), kv[1].repeat_interleave(group, dim=1)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None], scale=scale)
    return out.transpose(1, 2).reshape(b, t, heads * d)


def gated(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.silu(gate) * up


EAGER = {"norm": rms_norm, "add_norm": add_norm, "rope": rope, "attend": attend, "gated": gated}
PREFILL = {**EAGER, "attend": attend_prefill}
_COMPILED: dict = {}


def compiled(backend: str = "inductor") -> dict:
    """The step functions compiled once per process and backend, without graph breaks (fullgraph), with batch
    size and cache length dynamic from the first compile: a generation run's batches change both, and with
    static first shapes each of the two changes recompiled once, inside the timed work (torch still compiles a
    one-row batch separately: it specializes sizes 0 and 1)."""
    if backend not in _COMPILED:
        _COMPILED[backend] = {name: _unducked(torch.compile(fn, fullgraph=True, backend=backend, dynamic=True))
                              for name, fn in EAGER.items()}  # fmt: skip
    return _COMPILED[backend]


def _unducked(fn):
    """`fn` compiled without duck sizing, which would tie the batch to any other dimension of the same size at
    the first compile (2 rows to the stacked keys/values' 2, 32 rows to 32 heads) and recompile when a later
    batch breaks the tie. Python runs here only outside CUDA graphs (warm-up, prefill, eager steps)."""
    from torch.fx.experimental import _config

    def call(*args):
        with _config.patch(use_duck_shape=False):
            return fn(*args)

    return call


def _no_recompile():
    stance = getattr(torch.compiler, "set_stance", None)
    if stance is None:  # torch < 2.6: nothing to enforce it with; the warm-ups compiled what capture runs
        from contextlib import nullcontext

        return nullcontext()
    return stance("fail_on_recompile")


def _key_values(k: torch.Tensor, v: torch.Tensor, head_dim: int) -> torch.Tensor:
    """The new keys and values (B, 1, Hkv*D) each as one (B, 2, Hkv, D) tensor for the attention kernel: a view
    where the fused q/k/v layer left them side by side in its output, else (separate layers) a stacked copy."""
    b, _, width = k.shape
    if k.stride() == v.stride() and k.stride(-1) == 1 and v.data_ptr() == k.data_ptr() + width * k.element_size():
        return k.as_strided((b, 2, width // head_dim, head_dim), (k.stride(0), width, head_dim, 1))
    return torch.stack((k, v), dim=1).view(b, 2, -1, head_dim)


def _fused_ops_max_m() -> int:
    """Tokens up to which the linear layers' RMSNorm and residual add run fused: where the decode GEMV runs (more
    tokens take the GEMM paths, which compute both in torch, slower than the step's compiled add+RMSNorm)."""
    from evalsuite.kernels._weight_only_gemv import GEMV_MAX_M

    return GEMV_MAX_M


def _gates_itself(group) -> bool:
    """Whether a fused gate/up group's layer applies the SiLU-gate in its own kernel (QuantLinear.silu_gated:
    the weight-only formats' GEMV epilogue), so the step calls no separate `gated`."""
    if not isinstance(group, FusedGroup) or not isinstance(group.layer, QuantLinear):
        return False
    return group.layer.fuses_ops and len(group.sizes) == 2 and group.sizes[0] == group.sizes[1]


@dataclass(frozen=True)
class LayerOps:
    """Which of a layer's RMSNorms and residual adds its linear layers' kernels do themselves (`QuantLinear`
    with `fuses_ops`: in the decode GEMV's prologue and epilogue), so the step runs no kernel for them."""

    qkv_norm: bool = False  # the fused q/k/v layer normalizes its input (input_layernorm)
    o_residual: bool = False  # o_proj adds the residual
    gate_norm: bool = False  # the fused, SiLU-gated gate/up layer normalizes its input (post_attention_layernorm)
    down_residual: bool = False  # down_proj adds the residual

    @classmethod
    def of(cls, layer, qkv, gate_up, dtype: torch.dtype, every: bool) -> LayerOps:
        """Everything the layer's linear layers can do themselves, or with `every` False only where their format
        asks for it (`decode_layer_ops`)."""
        attn, mlp = layer.self_attn, layer.mlp

        def fuses(module) -> bool:
            if not (isinstance(module, QuantLinear) and module.fuses_ops):
                return False
            return every or module.format.decode_layer_ops

        def norm_ok(norm) -> bool:  # the kernels normalize as `rms_norm` does, with a weight of h's dtype
            return norm.weight.dtype == dtype

        return cls(
            qkv_norm=isinstance(qkv, FusedGroup) and fuses(qkv.layer) and norm_ok(layer.input_layernorm),
            o_residual=fuses(attn.o_proj),
            gate_norm=_gates_itself(gate_up) and fuses(gate_up.layer) and norm_ok(layer.post_attention_layernorm),
            down_residual=fuses(mlp.down_proj),
        )

    def count(self) -> int:
        return sum((self.qkv_norm, self.o_residual, self.gate_norm, self.down_residual))


class GraphDecoder:
    def __init__(
        self,
        model: torch.nn.Module,
        batch_size: int,
        max_len: int,
        graphs: bool = True,
        fuse: str | None = "auto",
        attention: str = "auto",
        layer_ops: bool | None = None,
    ):
        """`fuse`: the torch.compile backend for the step's non-GEMM functions ("auto": Inductor on CUDA, none
        elsewhere; None: run them eagerly). `attention`: the step's attention, "triton" (our decode kernel,
        kernels/decode_attention.py, which reads only the filled part of the cache), "torch" (`attend`, through
        `fuse`), or "auto": the kernel on NVIDIA GPUs, `attend` elsewhere. `layer_ops`: whether layers that can
        do the RMSNorms and residual adds in their own kernels do (`LayerOps`; None: LAYER_OPS, whose None
        leaves it to each layer's format)."""
        reason = unsupported(model, max_len)
        if reason:
            raise ValueError(f"the graph decoder cannot run this model: {reason}")
        self.model, self.inner = model, model.model
        self.device = next(model.parameters()).device
        self.dtype = self.inner.embed_tokens.weight.dtype
        self.batch_size, self.max_len = batch_size, max_len
        self.graphs = graphs and self.device.type == "cuda"
        if fuse == "auto":
            fuse = "inductor" if self.device.type == "cuda" else None
        self.fuse = fuse
        self.fns = compiled(fuse) if fuse else EAGER
        if attention == "auto":
            attention = "triton" if self.device.type == "cuda" and torch.version.hip is None else "torch"
        if attention not in ("triton", "torch"):
            raise ValueError(f"GraphDecoder: attention must be 'auto', 'triton' or 'torch', got {attention!r}")
        config = model.config
        attn0 = self.inner.layers[0].self_attn
        self.head_dim = getattr(attn0, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.scale = float(getattr(attn0, "scaling", self.head_dim**-0.5))
        kv_heads = config.num_key_value_heads
        shape = (2, batch_size, kv_heads, max_len, self.head_dim)
        self.kv = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in self.inner.layers]
        self.ids = torch.zeros(batch_size, 1, dtype=torch.long, device=self.device)
        self.positions = torch.zeros(batch_size, 1, dtype=torch.long, device=self.device)
        self.write = torch.zeros(1, dtype=torch.long, device=self.device)  # the cache slot of the newest token
        self.keep = torch.zeros(batch_size, max_len, dtype=torch.bool, device=self.device)  # False at pads
        self.slots = torch.arange(max_len, device=self.device)
        self.length = 0
        if attention == "triton":
            from evalsuite.kernels.decode_attention import decode_attention

            write = self.write
            self.fns = {**self.fns, "attend_write": lambda q, kv, mask, scale, new_kv, rope, qk_norm: decode_attention(
                q, kv, mask, scale, write, new_kv=new_kv, rope=rope, qk_norm=qk_norm)}  # fmt: skip
        self.graph = None
        self.logits = None
        self.calls = 0
        self.groups = [self._fuse(layer) for layer in self.inner.layers]
        fused = sum(isinstance(g, FusedGroup) for pair in self.groups for g in pair)
        self.gate_in_kernel = [_gates_itself(gate_up) for _, gate_up in self.groups]
        choice = LAYER_OPS if layer_ops is None else layer_ops
        self.ops = [
            LayerOps() if choice is False else LayerOps.of(layer, qkv, gate_up, self.dtype, every=choice is True)
            for layer, (qkv, gate_up) in zip(self.inner.layers, self.groups, strict=True)
        ]
        self.ops_max_m = _fused_ops_max_m() if any(op.count() for op in self.ops) else 0
        self.path = ("cuda-graph" if self.graphs else "eager") + (f", {fuse}-compiled" if fuse else "")
        if fused:
            self.path += f"; q/k/v and gate/up fused in {fused}/{2 * len(self.groups)} groups"
        if any(self.gate_in_kernel):
            self.path += f"; SiLU-gate in the gate/up kernel in {sum(self.gate_in_kernel)}/{len(self.groups)} layers"
        if attention == "triton":
            self.path += "; step attention: Triton decode kernel, which applies RoPE and writes the new keys and values"
        fused_ops = sum(op.count() for op in self.ops) if batch_size <= self.ops_max_m else 0
        if fused_ops:
            self.path += (f"; RMSNorm and residual add in the linear layers' kernels ({fused_ops}/{4 * len(self.ops)}: "
                          "q/k/v, gate/up normalize, o, down add)")  # fmt: skip
        if not self.graphs:
            why = "switched off" if self.device.type == "cuda" else "they need CUDA"
            log.info("graph decoder on %s: CUDA graphs skipped (%s), steps run eagerly", self.device, why)

    def describe(self) -> str:
        return f"graph decoder ({self.path})"

    @staticmethod
    def _fuse(layer) -> tuple:
        """The layer's (q, k, v) and (gate, up) projections as fused groups where they can be (fused_linears)."""
        attn, mlp = layer.self_attn, layer.mlp
        return fused(attn.q_proj, attn.k_proj, attn.v_proj), fused(mlp.gate_proj, mlp.up_proj)

    def _forward(self, ids, positions, index, mask, fns: dict, span: int | None = None) -> torch.Tensor:
        """One pass over T new tokens per row: writes their keys/values at cache slots `index` (T,), attends
        over the first `span` slots (all: None) where mask (B, T, span) is True, returns the last position's
        logits (B, V). Where a layer's kernels normalize their input or add the residual themselves (LayerOps,
        up to `ops_max_m` tokens), h carries the residual stream and `pending` a layer output not yet added."""
        h = self.inner.embed_tokens(ids)
        b, heads = ids.shape[0], self.model.config.num_attention_heads
        cos, sin = self.inner.rotary_emb(h, positions)
        layers = self.inner.layers
        fused_ops = ids.numel() <= self.ops_max_m
        pending = None
        for i, layer in enumerate(layers):
            attn, mlp = layer.self_attn, layer.mlp
            qkv, gate_up = self.groups[i]
            ops = self.ops[i] if fused_ops else LayerOps()
            qk_norm = None
            if hasattr(attn, "q_norm"):
                qk_norm = (attn.q_norm.weight, attn.k_norm.weight, attn.q_norm.variance_epsilon)
            h, x, norm = self._input(h, pending, layer.input_layernorm, fns, ops.qkv_norm)
            if norm is not None:
                projections = qkv(x, norm=norm)
            elif isinstance(qkv, FusedGroup):
                projections = qkv(x)
            else:
                projections = (attn.q_proj(x), attn.k_proj(x), attn.v_proj(x))
            if "attend_write" in fns:  # one token per row; the attention kernel rotates it and writes the cache
                q, k, v = projections
                q = q.view(b, 1, heads, self.head_dim).transpose(1, 2)
                new_kv = _key_values(k, v, self.head_dim)
                rotation = (cos[:, 0], sin[:, 0])
                attended = fns["attend_write"](q, self.kv[i], mask, self.scale, new_kv, rotation, qk_norm)
            else:
                q = fns["rope"](*projections, cos, sin, self.head_dim, qk_norm, self.kv[i], index)
                attended = fns["attend"](q, self.kv[i][..., :span, :], mask, self.scale)
            h, pending = (attn.o_proj(attended, residual=h), None) if ops.o_residual else (h, attn.o_proj(attended))
            h, x, norm = self._input(h, pending, layer.post_attention_layernorm, fns, ops.gate_norm)
            if self.gate_in_kernel[i]:
                act = gate_up.layer.silu_gated(x, norm=norm)
            else:
                gate, up = gate_up(x) if isinstance(gate_up, FusedGroup) else (mlp.gate_proj(x), mlp.up_proj(x))
                act = fns["gated"](gate, up)
            h, pending = (mlp.down_proj(act, residual=h), None) if ops.down_residual else (h, mlp.down_proj(act))
        _, x, _ = self._input(h, pending, self.inner.norm, fns, False)
        return self.model.lm_head(x[:, -1:]).squeeze(1)

    @staticmethod
    def _input(h, pending, norm, fns: dict, fused: bool):
        """(h with `pending` added, the next layer's input, the `norm` argument that layer takes): h itself and
        (weight, eps) where the layer normalizes its input and nothing is pending, else the compiled
        add+RMSNorm's (or RMSNorm's) output and None."""
        if fused and pending is None:
            return h, h, (norm.weight, norm.variance_epsilon)
        if pending is None:
            return h, fns["norm"](h, norm.weight, norm.variance_epsilon), None
        h, x = fns["add_norm"](h, pending, norm.weight, norm.variance_epsilon)
        return h, x, None

    @torch.no_grad()
    def prefill(self, contexts: list[list[int]]) -> torch.Tensor:
        """Left-pad the contexts and run them (eagerly: their length varies) into the cache from slot 0."""
        from evalsuite.graphs import left_padded

        ids, real, positions = left_padded(contexts, self.batch_size, self.max_len, self.device)
        width = ids.shape[1]
        self.keep.fill_(True)
        self.keep[:, :width] = real
        causal = torch.ones(width, width, dtype=torch.bool, device=self.device).tril()
        mask = (causal[None] & real[:, None, :]) | torch.eye(width, dtype=torch.bool, device=self.device)
        logits = self._forward(ids, positions, self.slots[:width], mask, PREFILL, span=width)  # eager: T varies
        self.calls += 1
        self.length = width
        self.write.fill_(width - 1)
        self.positions.copy_(positions[:, -1:])
        return logits

    def _step(self) -> torch.Tensor:
        """What the graph holds: advance the position and the write slot, then one token per row."""
        self.write += 1
        self.positions += 1
        mask = (self.keep & (self.slots <= self.write))[:, None, :]
        return self._forward(self.ids, self.positions, self.write, mask, self.fns)

    def _warm_up(self) -> None:
        """Steps run before capture (they compile and autotune what the graph will hold), then the position
        and write slot put back: their throwaway tokens went into slots that the real steps overwrite before
        anything reads them. Two steps where the cache has room, else one."""
        write, positions = self.write.clone(), self.positions.clone()
        for _ in range(min(2, self.max_len - self.length)):
            self._step()
        self.write.copy_(write)
        self.positions.copy_(positions)

    def _capture(self) -> None:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self._warm_up()
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with _no_recompile(), torch.cuda.graph(self.graph):
            self.logits = self._step()

    @torch.no_grad()
    def step(self, next_ids: torch.Tensor) -> torch.Tensor:
        """Append one token per row and return the next logits (B, V)."""
        if self.length >= self.max_len:
            raise ValueError(f"the cache of {self.max_len} tokens is full")
        self.ids[: len(next_ids), 0] = next_ids
        self.calls += 1
        if self.graphs and self.graph is None:
            self._capture()
        self.length += 1
        if not self.graphs:
            return self._step()
        self.graph.replay()
        return self.logits


def pick_decoder(model: torch.nn.Module, batch: int, length: int, cuda_graphs: bool = True, step: bool = True):
    """The decoder the harness generates with, and a line saying which and why (recorded in results.json): on
    CUDA this module's step (`GraphDecoder`), or the HF forward in a CUDA graph (graphs.StaticDecoder) for a
    model the step cannot run (logged as a fallback) or when the caller asks for it (`step=False`); the eager
    HF decoder off CUDA or with CUDA graphs switched off. Measured on an H100 (2026-12-06, Llama-3.1-8B shapes,
    batch 1, `bash benchmarks/gpu_e2e_graph.sh`): the step decodes 1.29-1.42x faster than the HF forward in a
    CUDA graph, with the eager forward's greedy tokens in float32 (tests/test_decode_graph.py). Inductor
    compiles the step's functions once per process, with dynamic shapes (and once more for a one-row
    batch)."""
    from evalsuite.graphs import DynamicDecoder, StaticDecoder

    device = next(model.parameters()).device
    if device.type != "cuda" or not cuda_graphs:
        why = "CUDA graphs switched off" if device.type == "cuda" else f"no CUDA device ({device.type})"
        decoder, path = DynamicDecoder(model), f"eager HF decoder: graph decoder skipped, {why}"
    elif not step:
        decoder, path = StaticDecoder(model, batch, length), "HF forward in a CUDA graph (asked for)"
    elif reason := unsupported(model, length):
        decoder = StaticDecoder(model, batch, length)
        path = f"HF forward in a CUDA graph: fallback, the graph decoder cannot run {reason}"
    else:
        decoder = GraphDecoder(model, batch, length)
        path = decoder.describe()
    if path not in _LOGGED:
        _LOGGED.add(path)
        log.log(logging.WARNING if "fallback" in path else logging.INFO, "decoding with the %s", path)
    return decoder, path


_LOGGED: set[str] = set()
