"""Pre-quantized checkpoints as variants: a Hugging Face directory whose config.json carries a
`quantization_config` (compressed-tensors INT8 W8A8, FP8, W4A16 pack-quantized; GPTQ and AWQ layouts). Its
codes and scales are moved into our kernels' layouts as they are — never re-quantized — and its linear
layers become QuantLinear modules that run our kernels.

    model, report = load_quantized(path, device="cuda", dtype=torch.bfloat16, backend="triton")
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .args import QuantArgs
from .formats import QuantizedWeight
from .linear import QuantLinear
from .scheme import Scheme

# AutoAWQ packs the eight 4-bit values of columns 8c..8c+7 into an int32 with element ORDER[i] at bits 4i;
# unpacking reads element e from bits 4 * REVERSE[e].
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
AWQ_REVERSE_ORDER = (0, 4, 1, 5, 2, 6, 3, 7)


class CheckpointError(ValueError):
    pass


def quantization_config(path: str | Path) -> dict | None:
    config = json.loads((Path(path) / "config.json").read_text())
    return config.get("quantization_config")


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{path}: a quantized checkpoint needs *.safetensors files")
    out: dict[str, torch.Tensor] = {}
    for f in files:
        out.update(load_file(f))
    return out


# --- what scheme a checkpoint holds ---------------------------------------------------------------------


def _ct_scheme(qc: dict) -> tuple[Scheme, str]:
    groups = qc.get("config_groups") or {}
    if len(groups) != 1:
        raise CheckpointError(f"compressed-tensors checkpoints with {len(groups)} config groups are not supported; one")
    group = next(iter(groups.values()))
    w, a = group.get("weights"), group.get("input_activations")

    def args(d: dict | None) -> QuantArgs | None:
        if not d:
            return None
        keep = {k: d[k] for k in ("num_bits", "type", "symmetric", "strategy", "group_size", "dynamic") if k in d}
        if keep.get("strategy") == "block":
            keep["block_structure"] = tuple(d["block_structure"])
        return QuantArgs(**keep)

    scheme = Scheme(weights=args(w), input_activations=args(a), ignore=tuple(qc.get("ignore") or ()))
    return scheme, qc.get("format") or ""


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


def _wna16(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, group: int, args: QuantArgs):
    """Unsigned codes (N, K) with (N, G) scales and unsigned zero points into the w4a16_gemm layout."""
    from evalsuite.kernels.w4a16_gemm import pack_int4

    n, k = codes.shape
    storage = 4 if args.num_bits <= 4 else 8
    qdata = pack_int4(codes) if storage == 4 else codes
    zero_point = None if zero is None else zero.to(torch.uint8).contiguous()
    return QuantizedWeight(
        "wna16",
        (n, k),
        qdata.contiguous(),
        scale.float().contiguous(),
        zero_point,
        group_size=group,
        bits=args.num_bits,
        storage_bits=storage,
    )


def _ct_weight(prefix: str, t: dict, scheme: Scheme, fmt: str) -> QuantizedWeight:
    w = scheme.weights
    scale = t[f"{prefix}.weight_scale"]
    if fmt == "pack-quantized":
        from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32

        shape = torch.Size(t[f"{prefix}.weight_shape"].tolist())
        q = unpack_from_int32(t[f"{prefix}.weight_packed"], w.num_bits, shape).to(torch.int16)  # signed codes
        zero = None
        if not w.symmetric:
            zp = unpack_from_int32(t[f"{prefix}.weight_zero_point"], w.num_bits, torch.Size(scale.shape), packed_dim=0)
            zero = (zp.to(torch.int16) + 2 ** (w.num_bits - 1)).to(torch.uint8)
        storage = 4 if w.num_bits <= 4 else 8
        codes = (q + 2 ** (storage - 1) if w.symmetric else q + 2 ** (w.num_bits - 1)).to(torch.uint8)
        if not w.symmetric and storage != w.num_bits:
            raise CheckpointError(f"{prefix}: asymmetric {w.num_bits}-bit codes in 8-bit storage are not supported")
        group = shape[1] if w.strategy.value == "channel" else w.group_size
        return _wna16(codes, scale, zero, group, w)
    weight = t[f"{prefix}.weight"]
    if weight.dtype == torch.int8:
        return QuantizedWeight("int8", tuple(weight.shape), weight.contiguous(), scale.float().reshape(-1, 1), bits=8)
    if weight.dtype == torch.float8_e4m3fn:
        s = scale.float()
        s = s.reshape(-1, 1) if s.numel() in (1, weight.shape[0]) else s
        return QuantizedWeight("fp8", tuple(weight.shape), weight.contiguous(), s.contiguous(), bits=8)
    raise CheckpointError(f"{prefix}: compressed-tensors format {fmt!r} with {weight.dtype} weights is not supported")


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
    return _wna16(codes, scales.t().float(), zero, w.group_size, w)


def _awq_weight(prefix: str, t: dict, scheme: Scheme) -> QuantizedWeight:
    w, bits = scheme.weights, scheme.weights.num_bits
    codes = _unpack_int32_rows(t[f"{prefix}.qweight"], bits, AWQ_REVERSE_ORDER).t()  # (K, N/8) packs along N
    zeros = _unpack_int32_rows(t[f"{prefix}.qzeros"], bits, AWQ_REVERSE_ORDER).t()  # (N, G)
    return _wna16(codes.contiguous(), t[f"{prefix}.scales"].t().float(), zeros.contiguous(), w.group_size, w)


# --- the model ------------------------------------------------------------------------------------------


def _linear_prefixes(t: dict) -> set[str]:
    markers = (".weight_packed", ".weight_scale", ".qweight")
    return {k.rsplit(".", 1)[0] for k in t if k.endswith(markers)}


def load_quantized(path: str | Path, device, dtype: torch.dtype, backend: str):
    """Build the architecture from config.json, load the float tensors as they are and every quantized
    linear layer as a QuantLinear over the checkpoint's own codes and scales."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    qc = quantization_config(path)
    if qc is None:
        raise CheckpointError(f"{path}: config.json has no quantization_config")
    method = qc.get("quant_method")
    if method == "compressed-tensors":
        scheme, fmt = _ct_scheme(qc)
    elif method in ("gptq", "awq"):
        scheme, fmt = _gptq_awq_scheme(qc), method
        if method == "awq" and qc.get("version", "gemm").lower() != "gemm":
            raise CheckpointError(f"{path}: AWQ version {qc.get('version')!r}; the GEMM layout is supported")
    else:
        raise CheckpointError(f"{path}: quant_method {method!r} is not supported (compressed-tensors, gptq, awq)")
    config = AutoConfig.from_pretrained(path)
    config.quantization_config = None
    del config.quantization_config
    tensors = _tensors(path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    prefixes = _linear_prefixes(tensors)
    layers, kernels = [], []
    for prefix in sorted(prefixes):
        linear = model.get_submodule(prefix)
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
        module = QuantLinear(weight, None if bias is None else bias.to(dtype), scheme.input_activations, backend)
        parent, _, child = prefix.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, module)
        layers.append(prefix)
        kernels += [k for k in module.kernels if k not in kernels]
    floats = {k: v for k, v in tensors.items() if k.rsplit(".", 1)[0] not in prefixes}
    missing, unexpected = model.load_state_dict(
        {k: v.to(dtype) if v.is_floating_point() else v for k, v in floats.items()}, strict=False, assign=True
    )
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
    return model, {"scheme": scheme, "format": fmt, "layers": layers, "kernels": kernels, "quant_method": method}
