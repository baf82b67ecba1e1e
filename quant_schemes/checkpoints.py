"""Pre-quantized checkpoints as variants: a Hugging Face directory whose config.json carries a
`quantization_config` (compressed-tensors INT8 W8A8, FP8, W4A16 pack-quantized; GPTQ and AWQ layouts). Its
codes and scales are moved into our kernels' layouts as they are — never re-quantized — and its linear
layers become QuantLinear modules that run our kernels. Static activation scales (`input_scale`,
`input_activations.dynamic: false`) are kept and used; weight-only int8 with a zero point runs the w4a16_gemm
kernel with zero points. A layer tensor that no loader reads is refused, never dropped.

    model, report = load_quantized(path, device="cuda", dtype=torch.bfloat16, backend="triton")
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from pydantic import ValidationError

from .args import QuantArgs
from .linear import QuantLinear, check_static_scale
from .scheme import Scheme
from .weight_formats import QuantizedWeight

# AutoAWQ packs the eight 4-bit values of columns 8c..8c+7 into an int32 with element ORDER[i] at bits 4i;
# unpacking reads element e from bits 4 * REVERSE[e].
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
AWQ_REVERSE_ORDER = (0, 4, 1, 5, 2, 6, 3, 7)


class CheckpointError(ValueError):
    pass


class _Tensors(dict):
    """The checkpoint's tensors by name, remembering which ones a loader read: a quantized layer's tensor that
    nothing read would be dropped silently, so the loader refuses it instead."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        super().__init__(tensors)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self:
            raise CheckpointError(f"the checkpoint has no tensor {key!r}, which its quantization_config implies")
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default=None):
        self.read.add(key)
        return super().get(key, default)

    def unread(self, prefix: str) -> list[str]:
        return sorted(k for k in self if k.startswith(prefix + ".") and k not in self.read)


def quantization_config(path: str | Path) -> dict | None:
    config = json.loads((Path(path) / "config.json").read_text())
    return config.get("quantization_config")


def _tensors(path: Path) -> _Tensors:
    from safetensors.torch import load_file

    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{path}: a quantized checkpoint needs *.safetensors files")
    out: dict[str, torch.Tensor] = {}
    for f in files:
        out.update(load_file(f))
    return _Tensors(out)


# --- what scheme a checkpoint holds ---------------------------------------------------------------------


def check_quantization_config(path: str | Path) -> dict:
    """The checks of a checkpoint's quantization_config that need no tensor, so that a checkpoint variant is
    refused before any model loads; returns the config."""
    path = Path(path)
    qc = quantization_config(path)
    if qc is None:
        raise CheckpointError(f"{path}: config.json has no quantization_config")
    method = qc.get("quant_method")
    if method == "compressed-tensors":
        if qc.get("kv_cache_scheme"):
            raise CheckpointError(
                f"{path}: its kv_cache_scheme (quantized KV cache with stored k/v scales) is not supported; "
                "a checkpoint variant quantizes linear layers only"
            )
        groups = qc.get("config_groups") or {}
        if not groups:
            raise CheckpointError(f"{path}: quantization_config.config_groups is empty: no layer is quantized")
        if len(groups) > 1 and any(t == "Linear" or t.startswith("re:") for g in groups.values() for t in g["targets"]):
            raise CheckpointError(
                f"{path}: quantization_config has {len(groups)} config groups; several groups are supported when "
                "each names its layers (targets by module name, as evalsuite export writes them)"
            )
    elif method == "awq" and str(qc.get("version", "gemm")).lower() != "gemm":
        raise CheckpointError(f"{path}: AWQ version {qc.get('version')!r}; the GEMM layout is supported")
    elif method not in ("gptq", "awq"):
        raise CheckpointError(f"{path}: quant_method {method!r} is not supported (compressed-tensors, gptq, awq)")
    return qc


def _ct_schemes(qc: dict, path: Path, tensors: _Tensors) -> dict[str | None, tuple[Scheme, str]]:
    """Each config group's scheme and format, by layer name (None: every layer, for a single group)."""
    groups = list(qc["config_groups"].values())
    if len(groups) == 1:
        return {None: _ct_scheme(groups[0], qc, path, tensors)}
    return {name: _ct_scheme(g, qc, path, tensors) for g in groups for name in g["targets"]}


def _ct_scheme(group: dict, qc: dict, path: Path, tensors: _Tensors) -> tuple[Scheme, str]:
    w, a = group.get("weights"), group.get("input_activations")
    if a:  # the W8A8 GEMMs apply no zero point: refuse asymmetric operands here, naming a layer
        for what, args_dict, tensor in (
            ("weights", w, "weight_zero_point"),
            ("input activations", a, "input_zero_point"),
        ):
            if args_dict and not args_dict.get("symmetric", True):
                named = sorted(k.removesuffix("." + tensor) for k in tensors if k.endswith("." + tensor))
                named = named or sorted(_linear_prefixes(tensors))
                raise CheckpointError(
                    f"{path}: layer {named[0]}{f' (and {len(named) - 1} more)' if len(named) > 1 else ''} has "
                    f"asymmetric {args_dict.get('type', 'int')}{args_dict.get('num_bits', 8)} {what} ({tensor}) "
                    "in a W8A8 scheme, and the W8A8 GEMMs apply no zero point. Supported: symmetric weights and "
                    "input activations for W8A8, or asymmetric int weights without input_activations "
                    "(weight-only, e.g. W8A16 / W4A16 asym)"
                )

    def args(d: dict | None) -> QuantArgs | None:
        if not d:
            return None
        keep = {k: d[k] for k in ("num_bits", "type", "symmetric", "strategy", "group_size", "dynamic") if k in d}
        if keep.get("strategy") == "block":
            keep["block_structure"] = tuple(d["block_structure"])
        return QuantArgs(**keep)

    try:
        scheme = Scheme(weights=args(w), input_activations=args(a), ignore=tuple(qc.get("ignore") or ()))
    except ValidationError as e:
        reasons = "; ".join(err["msg"].removeprefix("Value error, ") for err in e.errors())
        raise CheckpointError(f"{path}: its quantization_config is not a scheme evalsuite runs: {reasons}") from e
    return scheme, group.get("format") or qc.get("format") or ""


def _gptq_awq_scheme(qc: dict) -> Scheme:
    bits, group = int(qc.get("bits", qc.get("w_bit", 4))), int(qc.get("group_size", qc.get("q_group_size", 128)))
    symmetric = bool(qc.get("sym", False)) if qc.get("quant_method") == "gptq" else not qc.get("zero_point", True)
    return Scheme(weights=QuantArgs(num_bits=bits, type="int", strategy="group", group_size=group, symmetric=symmetric))


# --- per-layer conversion into our layouts --------------------------------------------------------------


def _unpack_int32_rows(packed: torch.Tensor, bits: int, order=None) -> torch.Tensor:
    """int32 words holding 32/bits values each, along the last dim -> unsigned codes, last dim x 32/bits;
    element i of a word sits at bits `bits * order[i]` (default: i)."""
    per = 32 // bits
    shifts = torch.tensor([bits * (order[i] if order else i) for i in range(per)], dtype=torch.int32)
    codes = (packed.to(torch.int32).unsqueeze(-1) >> shifts) & ((1 << bits) - 1)
    return codes.reshape(*packed.shape[:-1], -1).to(torch.uint8)


def _zero_point(prefix: str, t: _Tensors, name: str, symmetric: bool) -> torch.Tensor | None:
    """The layer's `name` zero point: required when asymmetric; when symmetric, absent or all zero."""
    key = f"{prefix}.{name}"
    if not symmetric:
        return t[key]
    zp = t.get(key)
    if zp is not None and bool((zp != 0).any()):
        raise CheckpointError(f"{prefix}: {name} has nonzero values but the quantization_config says symmetric")
    return None


def _ct_weight(prefix: str, t: _Tensors, scheme: Scheme, fmt: str) -> QuantizedWeight:
    """The weight of layer `prefix`, read by the scheme's weight format from its compressed-tensors tensors."""
    w = scheme.weights
    scale = t[f"{prefix}.weight_scale"]
    zp = _zero_point(prefix, t, "weight_zero_point", w.symmetric)
    return scheme.resolved_format().from_compressed_tensors(prefix, t, w, fmt, scale, zp)


def _ct_input_scale(prefix: str, t: _Tensors, scheme: Scheme) -> torch.Tensor | None:
    """A static (calibrated) per-tensor input scale as (1, 1) fp32, exactly as stored; None when dynamic."""
    a = scheme.input_activations
    if a is None or a.dynamic:
        return None
    key = f"{prefix}.input_scale"
    if key not in t:
        raise CheckpointError(f"{prefix}: input_activations are static (dynamic: false) but {key} is missing")
    scale = t[key]
    if scale.numel() != 1:
        raise CheckpointError(
            f"{prefix}: static input_scale of shape {tuple(scale.shape)}; per-tensor (one element) is supported"
        )
    _zero_point(prefix, t, "input_zero_point", a.symmetric)
    try:
        return check_static_scale(scale)  # (1, 1)
    except ValueError as err:
        raise CheckpointError(f"{prefix}: {err}") from None


def _gptq_weight(prefix: str, t: dict, scheme: Scheme) -> QuantizedWeight:
    w, bits = scheme.weights, scheme.weights.num_bits
    qweight, qzeros, scales = t[f"{prefix}.qweight"], t[f"{prefix}.qzeros"], t[f"{prefix}.scales"]
    codes = _unpack_int32_rows(qweight.t(), bits)  # (N, K): qweight packs along K
    n, k = codes.shape
    g_idx = t.get(f"{prefix}.g_idx")
    if g_idx is not None and not torch.equal(g_idx.long(), torch.arange(k) // w.group_size):
        raise CheckpointError(f"{prefix}: act-order (desc_act) GPTQ groups are not contiguous; not supported")
    zeros = _unpack_int32_rows(qzeros, bits)[:, :n].t() + 1  # (N, G); stored minus one (GPTQ v1 format)
    zero = None if w.symmetric and bool((zeros == 2 ** (bits - 1)).all()) else zeros
    return scheme.resolved_format().stored(codes, scales.t().float(), zero, w.group_size, w)


def _awq_weight(prefix: str, t: dict, scheme: Scheme) -> QuantizedWeight:
    w, bits = scheme.weights, scheme.weights.num_bits
    codes = _unpack_int32_rows(t[f"{prefix}.qweight"], bits, AWQ_REVERSE_ORDER).t()  # (K, N/8) packs along N
    zeros = _unpack_int32_rows(t[f"{prefix}.qzeros"], bits, AWQ_REVERSE_ORDER).t()  # (N, G)
    scales = t[f"{prefix}.scales"].t().float()
    return scheme.resolved_format().stored(codes.contiguous(), scales, zeros.contiguous(), w.group_size, w)


# --- the model ------------------------------------------------------------------------------------------


def _linear_prefixes(t: dict) -> set[str]:
    markers = (".weight_packed", ".weight_scale", ".qweight")
    return {k.rsplit(".", 1)[0] for k in t if k.endswith(markers)}


def load_quantized(path: str | Path, device, dtype: torch.dtype, backend: str):
    """Build the architecture from config.json, load the float tensors as they are and every quantized
    linear layer as a QuantLinear over the checkpoint's own codes and scales."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    qc = check_quantization_config(path)
    method = qc["quant_method"]
    tensors = _tensors(path)
    if method == "compressed-tensors":
        by_layer = _ct_schemes(qc, path, tensors)
    else:
        by_layer = {None: (_gptq_awq_scheme(qc), method)}
    config = AutoConfig.from_pretrained(path)
    config.quantization_config = None
    del config.quantization_config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    prefixes = _linear_prefixes(tensors)
    layers, kernels = [], []
    for prefix in sorted(prefixes):
        linear = model.get_submodule(prefix)
        if prefix not in by_layer and None not in by_layer:
            raise CheckpointError(f"{path}: layer {prefix} has quantized tensors but no config group names it")
        scheme, fmt = by_layer.get(prefix) or by_layer[None]
        if fmt == "gptq":
            weight = _gptq_weight(prefix, tensors, scheme)
        elif fmt == "awq":
            weight = _awq_weight(prefix, tensors, scheme)
        else:
            weight = _ct_weight(prefix, tensors, scheme, fmt)
        if weight.shape != (linear.out_features, linear.in_features):
            raise CheckpointError(
                f"{prefix}: quantized weight of shape {weight.shape}, the layer is "
                f"{(linear.out_features, linear.in_features)}"
            )
        bias = tensors.get(f"{prefix}.bias")
        input_scale = _ct_input_scale(prefix, tensors, scheme) if method == "compressed-tensors" else None
        unread = tensors.unread(prefix)
        if unread:
            raise CheckpointError(
                f"{prefix}: the checkpoint's {', '.join(unread)} would be ignored: the {fmt} loader for "
                f"{scheme.describe()} does not use them, and this layout is not supported"
            )
        module = QuantLinear(
            weight, None if bias is None else bias.to(dtype), scheme.input_activations, backend, input_scale
        )
        parent, _, child = prefix.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, module)
        layers.append(prefix)
        kernels += [k for k in module.kernels if k not in kernels]
    floats = {k: v for k, v in tensors.items() if k.rsplit(".", 1)[0] not in prefixes}
    missing, unexpected = model.load_state_dict(
        {k: v.to(dtype) if v.is_floating_point() else v for k, v in floats.items()}, strict=False, assign=True
    )
    unexpected = [u for u in unexpected if not u.endswith("rotary_emb.inv_freq")]
    if unexpected:
        raise CheckpointError(f"{path}: tensors the model has no place for (refused, not dropped): {unexpected[:5]}")
    quantized_names = {n for n, _ in model.named_buffers() if n.rsplit(".", 1)[0] in prefixes}
    missing = [m for m in missing if m not in quantized_names and not m.endswith("rotary_emb.inv_freq")]
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
        missing = [m for m in missing if m != "lm_head.weight"]
    if missing:
        raise CheckpointError(f"{path}: tensors missing from the checkpoint: {', '.join(missing[:5])}")
    for name, module in list(model.named_modules()):  # buffers computed at init (rotary inv_freq): build anew
        if any(b.device.type == "meta" for b in module.buffers(recurse=False)):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, type(module)(config=config))
    left = [n for n, b in model.named_buffers() if b.device.type == "meta"]
    if left:
        raise CheckpointError(f"{path}: buffers not initialised: {', '.join(left[:5])}")
    model.to(device).eval()
    schemes = list(dict.fromkeys(s for s, _ in by_layer.values()))
    if len(schemes) > 1:  # the first group's scheme, the others as its per-layer overrides
        names = {n: s for n, (s, _) in by_layer.items()}
        extra = [{"layers": n, "scheme": s} for n, s in sorted(names.items()) if s != schemes[0]]
        scheme = Scheme(**{**schemes[0].model_dump(), "overrides": extra})
    else:
        scheme = schemes[0]
    fmt = qc.get("format") or fmt
    return model, {"scheme": scheme, "format": fmt, "layers": layers, "kernels": kernels, "quant_method": method}
