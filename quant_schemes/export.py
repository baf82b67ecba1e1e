"""Export a variant quantized by evalsuite as a compressed-tensors checkpoint (what vLLM and transformers
load): pack-quantized for integer weight-only schemes, int-quantized for W8A8 INT8, float-quantized for
W8A8 FP8. The codes and scales are written as they are; the float tensors (embeddings, norms — smoothed ones
included) at the checkpoint's dtype.

    export_compressed_tensors(model, report, baseline_dir, out_dir, dtype=torch.bfloat16)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from torch import nn

from .args import Strategy
from .linear import QuantLinear
from .weight_formats import WeightFormat

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "generation_config.json",
)


class ExportError(ValueError):
    pass


def _format(fmt: WeightFormat) -> str:
    if fmt.checkpoint_format is None:
        raise ExportError(f"exporting {fmt.name} weights to compressed-tensors is not supported yet (int and fp8 are)")
    return fmt.checkpoint_format


def _args_dict(args) -> dict | None:
    if args is None:
        return None
    d = {
        "num_bits": args.num_bits,
        "type": args.type.value,
        "symmetric": args.symmetric,
        "strategy": args.strategy.value,
        "dynamic": args.dynamic,
    }
    if args.strategy == Strategy.GROUP:
        d["group_size"] = args.group_size
    if args.strategy == Strategy.BLOCK:
        d["block_structure"] = list(args.block_structure)
    return d


def _layer_tensors(prefix: str, layer: QuantLinear) -> dict[str, torch.Tensor]:
    tensors = layer.format.to_compressed_tensors(layer.quantized_weight())
    out = {f"{prefix}.{name}": t for name, t in tensors.items()}
    if layer.bias is not None:
        out[f"{prefix}.bias"] = layer.bias
    return out


def config_groups(layers: dict[str, QuantLinear], scheme) -> dict:
    """One config group per distinct layer scheme (a scheme's per-layer overrides give several): targets
    "Linear" when every quantized layer shares one, else each group's layer names."""
    from .apply import layer_schemes

    schemes = layer_schemes(layers, scheme)
    found: dict[str, dict] = {}
    for name, layer in layers.items():
        s = schemes[name]
        group = {
            "weights": _args_dict(s.weights),
            "input_activations": _args_dict(s.input_activations),
            "output_activations": None,
            "format": _format(layer.format),
        }
        key = json.dumps(group, sort_keys=True)
        found.setdefault(key, {"targets": [], **group})["targets"].append(name)
    if len(found) == 1:
        return {"group_0": {**next(iter(found.values())), "targets": ["Linear"]}}
    return {f"group_{i}": {**g, "targets": sorted(g["targets"])} for i, g in enumerate(found.values())}


def export_compressed_tensors(
    model: nn.Module, report, baseline_dir: str | Path, out_dir: str | Path, dtype: torch.dtype = torch.bfloat16
) -> Path:
    from safetensors.torch import save_file

    scheme = report.scheme
    if report.rotation:
        raise ExportError("a Hadamard-rotated variant needs its online rotation at inference; it is not exported")
    if scheme.kv_cache is not None:
        raise ExportError("KV-cache quantization is not exported; export the weight scheme alone")
    layers = {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    if not layers:
        raise ExportError("the model has no quantized layers to export")
    groups = config_groups(layers, scheme)
    formats = {g["format"] for g in groups.values()}
    tensors: dict[str, torch.Tensor] = {}
    for prefix, layer in layers.items():
        tensors.update({k: v.detach().cpu().contiguous() for k, v in _layer_tensors(prefix, layer).items()})
    quantized_params = {f"{p}.{b}" for p in layers for b in ("qdata", "scale", "zero_point", "global_scale", "bias")}
    seen = set()
    for name, param in model.state_dict().items():
        if name in quantized_params or param.data_ptr() in seen or name.endswith("rotary_emb.inv_freq"):
            continue
        seen.add(param.data_ptr())
        tensors[name] = param.detach().to(dtype).cpu().contiguous() if param.is_floating_point() else param.cpu()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out_dir / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((Path(baseline_dir) / "config.json").read_text())
    ignore = sorted(n for n, m in model.named_modules() if isinstance(m, nn.Linear) and not isinstance(m, QuantLinear))
    config["torch_dtype"] = str(dtype).removeprefix("torch.")
    config["quantization_config"] = {
        "quant_method": "compressed-tensors",
        "format": formats.pop() if len(formats) == 1 else "mixed-precision",
        "quantization_status": "compressed",
        "config_groups": groups,
        "ignore": ignore,
        "kv_cache_scheme": None,
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for name in TOKENIZER_FILES:
        if (Path(baseline_dir) / name).is_file():
            shutil.copy(Path(baseline_dir) / name, out_dir / name)
    return out_dir
