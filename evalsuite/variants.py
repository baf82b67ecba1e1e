"""The variants of a run and the one record of each: how a variant is built (quantized from the baseline, or
loaded from a checkpoint), what its numbers depend on (its model key), and, for a rerun, whether it can be
served from the store without loading or quantizing anything.

    info, key = predicted(name, config, source, backend, device, store)   # None: it must be built now
    report, calib = quantize_variant(spec, loaded, config, backend, calibrations)
"""

from __future__ import annotations

import json
import logging

import torch

from evalsuite import models
from evalsuite.config import SuiteConfig
from evalsuite.errors import UserError
from evalsuite.hashing import digest
from evalsuite.lm import EvalLM

log = logging.getLogger("evalsuite")


class RunError(UserError, RuntimeError):
    pass


def model_key(
    source: models.ModelSource, variant: dict, dtype: torch.dtype, device: torch.device, batch_size: int
) -> str:
    """What a model's responses depend on. The batch size is part of it: padding and GEMM shapes move scores
    by float noise, and a baseline must be compared with variants scored at its own batch size."""
    payload = {
        "identity": source.identity,
        "scheme": variant.get("scheme_hash"),
        "algorithm": variant.get("algorithm"),
        "options": variant.get("options"),
        "rotation": variant.get("rotation"),
        "calibration": variant.get("calibration_hash"),
        "backend": variant.get("backend"),
        **({"fp8_accumulation": variant["fp8_accumulation"]} if variant.get("fp8_accumulation") else {}),
        "dtype": str(dtype),
        "device_type": device.type,
        "batch_size": batch_size,
    }
    return digest(payload)


def set_fp8_accumulation(model, info: dict, mode: str) -> None:
    """Apply run.fp8_accumulation to a variant's fp8 layers and record it (it is part of the model key: the
    two modes give different numbers on Hopper). The torch reference accumulates in fp32 whatever the mode."""
    from evalsuite.quant_schemes.linear import use_fp8_accumulation

    if use_fp8_accumulation(model, mode):
        info["fp8_accumulation"] = mode if info["backend"] == "triton" else "fp32 (torch reference)"


def quantize_variant(spec, loaded, config: SuiteConfig, backend: str, calibrations: dict) -> tuple:
    """Quantize a loaded copy of the baseline as the variant says; returns the report and the calibration
    used (built once per calibration spec and shared by the variants that name the same one)."""
    from evalsuite.calibration import build_calibration
    from evalsuite.quant_schemes.apply import quantize

    cal_spec = spec.calibration or config.run.calibration
    calib = None
    if cal_spec is not None:
        key = cal_spec.model_dump_json()
        if key not in calibrations:
            calibrations[key] = build_calibration(cal_spec, EvalLM(loaded.model, loaded.tokenizer, progress=False))
        calib = calibrations[key]
    report = quantize(
        loaded.model,
        spec.resolved_scheme,
        algorithm=spec.algorithm,
        calib=calib.batches if calib else None,
        backend=backend,
        rotation=spec.rotation,
        **spec.options,
    )
    return report, calib


def tokenizer_fingerprint(tokenizer) -> dict:
    """What decides how prompts become tokens and answers end: the vocabulary, the special tokens and their ids,
    and the chat template. Two tokenizers with equal fingerprints tokenize every request alike."""
    return {
        "vocab": tokenizer.get_vocab(),
        "special tokens": {name: str(value) for name, value in tokenizer.special_tokens_map.items()},
        "special token ids": {
            name: getattr(tokenizer, f"{name}_id", None) for name in ("bos_token", "eos_token", "pad_token")
        },
        "chat template": tokenizer.chat_template,
        "adds a BOS token": getattr(tokenizer, "add_bos_token", None),
    }


def checkpoint_source(spec, baseline: models.ModelSource) -> models.ModelSource:
    """Check a pre-quantized checkpoint variant before any model loads: a model directory with a
    quantization_config, and a tokenizer that behaves as the baseline's (same vocabulary, special tokens and
    chat template)."""
    from evalsuite.quant_schemes.checkpoints import CheckpointError, check_quantization_config, quantization_config

    source = models.resolve_model(spec.path)
    if quantization_config(source.path) is None:
        raise RunError(f"variant {spec.name!r}: {spec.path} has no quantization_config in its config.json")
    try:
        check_quantization_config(source.path)
    except CheckpointError as err:
        raise RunError(f"variant {spec.name!r}: {err}") from None
    ours, theirs = (
        tokenizer_fingerprint(models.load_tokenizer(baseline)),
        tokenizer_fingerprint(models.load_tokenizer(source)),
    )
    differs = [name for name in ours if ours[name] != theirs[name]]
    if differs:
        raise RunError(
            f"variant {spec.name!r}: its tokenizer differs from the baseline's ({', '.join(differs)}); a comparison "
            f"needs the same tokenizer: copy the baseline's tokenizer files into {spec.path}"
        )
    return source


def load_checkpoint_variant(source: models.ModelSource, device, config: SuiteConfig, backend: str, baseline_bytes):
    from evalsuite.quant_schemes.checkpoints import load_quantized

    dtype = models.compute_dtype(config.model.dtype, device)
    model, report = load_quantized(source.path, device, dtype, backend)
    loaded = models.LoadedModel(source, model, models.load_tokenizer(source), device, dtype)
    stored = models.stored_bytes(model, source.checkpoint_dtype)
    info = {
        "scheme": json.loads(report["scheme"].model_dump_json()),
        "scheme_hash": report["scheme"].hash,
        "description": f"{report['scheme'].describe()} (checkpoint, {report['quant_method']} {report['format']})",
        "algorithm": f"checkpoint:{report['quant_method']}",
        "checkpoint": str(source.path),
        "checkpoint_identity": source.identity,
        "backend": backend,
        "kernels": report["kernels"],
        "quantized_layers": len(report["layers"]),
        "weight_bytes": stored,
        "compression_ratio": baseline_bytes / stored if stored else None,
    }
    return loaded, info


def _variant_info(report, stored: int, baseline_bytes: int, calib, sqnr_floor: float) -> dict:
    from evalsuite.quant_schemes.algorithms import CALIBRATED

    scheme = report.scheme
    kv = scheme.kv_cache
    outputs_depend_on_calibration = report.algorithm in CALIBRATED or (kv is not None and not kv.dynamic)
    layers = [{"name": n, **s} for n, s in report.layer_stats.items()]
    flagged = [layer["name"] for layer in layers if layer.get("sqnr_db") is not None and layer["sqnr_db"] < sqnr_floor]
    return {
        "scheme": json.loads(scheme.model_dump_json()),
        "scheme_hash": scheme.hash,
        "description": scheme.describe() + (f" + {report.rotation} rotation" if report.rotation else ""),
        "algorithm": report.algorithm,
        "rotation": report.rotation,
        "calibration": calib.description if calib else None,
        "calibration_hash": calib.hash if calib and outputs_depend_on_calibration else None,
        "backend": report.backend,
        "kernels": report.kernels,
        "quantized_layers": len(report.layers),
        "weight_bytes": stored,
        "compression_ratio": baseline_bytes / stored if stored else None,
        "quantized_layer_bytes": report.quantized_bytes,
        "float_layer_bytes": report.float_bytes,
        "saturated_weights": sum(s["saturated"] for s in report.layer_stats.values()),
        "zero_scales": sum(s["zero_scales"] for s in report.layer_stats.values()),
        "layers": layers,
        "sqnr_floor_db": sqnr_floor,
        "flagged_layers": flagged,
    }


def baseline_info(weight_bytes: int) -> dict:
    return {
        "scheme": None,
        "algorithm": None,
        "backend": "float",
        "kernels": [],
        "description": "unquantized",
        "weight_bytes": weight_bytes,
        "compression_ratio": 1.0,
    }


# What a stored model record holds about one run rather than about the model.
RUN_FIELDS = ("variant", "identity", "model_key", "model_calls", "model_calls_by_task", "seconds", "speed")


def predicted(name: str, config: SuiteConfig, source: models.ModelSource, backend: str, device, store) -> tuple | None:
    """(record, model key) of a model that an earlier run in this store built with the same settings, found
    without loading or quantizing anything; None when it must be built now (first run, a calibrated
    algorithm or static KV scales, whose key depends on calibration data, a GGUF file or a device map)."""
    from evalsuite.config import BASELINE
    from evalsuite.quant_schemes.algorithms import CALIBRATED

    if source.gguf_file or config.model.device_map:
        return None
    if name == BASELINE:
        key_fields = {"backend": "float"}
    else:
        spec = next(v for v in config.variants if v.name == name)
        scheme = spec.resolved_scheme
        if spec.algorithm in CALIBRATED or (scheme.kv_cache is not None and not scheme.kv_cache.dynamic):
            return None
        key_fields = {"scheme_hash": scheme.hash, "algorithm": spec.algorithm, "options": spec.options}
        key_fields.update(rotation=spec.rotation, backend=backend)
        if scheme.weights is not None and scheme.resolved_format().accumulation:
            mode = config.run.fp8_accumulation
            key_fields["fp8_accumulation"] = mode if backend == "triton" else "fp32 (torch reference)"
    dtype = models.compute_dtype(config.model.dtype, device)
    key = model_key(source, key_fields, dtype, device, config.run.batch_size)
    record = store.get_model(key)
    if record is None or record.get("variant") != name:
        return None
    return {k: v for k, v in record.items() if k not in RUN_FIELDS}, key


def lazy_model(name: str, key: str, build):
    """A zero-argument loader for EvalLM: builds the model on first use (an answer missing from the store) and
    checks that it is the model the store's record describes."""

    def load() -> torch.nn.Module:
        log.info("%s: answers missing from the store; loading the model", name)
        loaded, _, actual = build(name)
        if actual != key:
            raise RunError(
                f"{name}: the model built now has key {actual}, but the store's record says {key}; the "
                "quantization code changed under the same settings: start a new run directory (--out)"
            )
        return loaded.model

    return load
