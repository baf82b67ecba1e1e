"""The variants of a run and the one record of each: how a variant is built (quantized from the baseline, or
loaded from a checkpoint), what its numbers depend on (its model key), and, for a rerun, whether it can be
served from the store without loading or quantizing anything.

    record = predicted(name, config, source, backend, device, store, calibration)  # None: build it now
    report, calib = quantize_variant(spec, loaded, config, backend, calibrations)
    record = quantized_record(spec, report, memory_bytes, baseline_bytes, calib, sqnr_floor)
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, fields
from typing import ClassVar

import torch

from evalsuite import models
from evalsuite.config import SuiteConfig
from evalsuite.errors import UserError
from evalsuite.hashing import digest
from evalsuite.lm import EvalLM

log = logging.getLogger("evalsuite")


class RunError(UserError, RuntimeError):
    pass


@dataclass
class VariantRecord:
    """One model of a run: what results.json says of it (`to_json`) and what its model key is made of
    (`key_fields`). The baseline, a quantized variant and a checkpoint variant are records of the same type;
    fields that do not apply stay None and are left out of results.json."""

    description: str
    backend: str = "float"  # the kernel backend's name; "float" for the unquantized baseline
    scheme: dict | None = None
    scheme_hash: str | None = None
    algorithm: str | None = None
    options: dict | None = None
    rotation: str | None = None
    calibration: str | None = None  # the calibration set's description
    calibration_hash: str | None = None  # set only when the outputs depend on the calibration data
    fp8_accumulation: str | None = None
    kernels: list[str] = field(default_factory=list)
    weight_bytes: int | None = None  # in memory, float parts at the evaluation dtype
    compression_ratio: float | None = None  # the baseline's weight_bytes over this one's
    weights_dtype: str | None = None  # the evaluation dtype of the float weights (baseline)
    file_bytes: int | None = None  # the weight files on disk (baseline)
    checkpoint: str | None = None
    checkpoint_identity: str | None = None
    quantized_layers: int | None = None
    quantized_layer_bytes: int | None = None
    float_layer_bytes: int | None = None
    saturated_weights: int | None = None
    quantized_weights: int | None = None  # elements of the quantized layers
    saturation_note: str | None = None  # what the saturated count means for the format
    zero_scales: int | None = None
    layers: list[dict] | None = None
    sqnr_floor_db: float | None = None
    flagged_layers: list[str] | None = None
    model_key: str | None = None
    # what one run measured of it (not part of what the store keeps about the model)
    speed: dict | None = None
    model_calls: int | None = None
    model_calls_by_task: dict | None = None
    decode: str | None = None  # which decoder generated text, and why (decode_graph.pick_decoder)
    kernel_paths: list[dict] | None = None  # evalsuite.kernels.paths.taken() over this run's evaluation of it
    seconds: float | None = None

    SHOWN_WHEN_NONE: ClassVar[tuple[str, ...]] = ("scheme", "algorithm", "compression_ratio")
    RUN_FIELDS: ClassVar[tuple[str, ...]] = (
        "speed",
        "model_calls",
        "model_calls_by_task",
        "decode",
        "kernel_paths",
        "seconds",
    )

    def key_fields(self) -> dict:
        """What the model's responses depend on besides the model files, dtype, device and batch size."""
        fields = {
            "scheme": self.scheme_hash,
            "algorithm": self.algorithm,
            "options": self.options,
            "rotation": self.rotation,
            "calibration": self.calibration_hash,
            "backend": self.backend,
        }
        return fields | ({"fp8_accumulation": self.fp8_accumulation} if self.fp8_accumulation else {})

    def to_json(self, run: bool = True) -> dict:
        """The record as results.json (run=True) or the store's model table (run=False) keeps it."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if (value is not None or f.name in self.SHOWN_WHEN_NONE) and (run or f.name not in self.RUN_FIELDS):
                out[f.name] = value
        return out

    @classmethod
    def from_json(cls, data: dict) -> VariantRecord:
        """A record read back from the store (fields it does not know, from another version, are dropped)."""
        known = {f.name for f in fields(cls)} - set(cls.RUN_FIELDS)
        return cls(**{k: v for k, v in data.items() if k in known})


def model_key(
    source: models.ModelSource, record: VariantRecord, dtype: torch.dtype, device: torch.device, batch_size: int
) -> str:
    """What a model's responses depend on. The batch size is part of it: padding and GEMM shapes move scores
    by float noise, and a baseline must be compared with variants scored at its own batch size."""
    payload = {
        "identity": source.identity,
        **record.key_fields(),
        "dtype": str(dtype),
        "device_type": device.type,
        "batch_size": batch_size,
    }
    return digest(payload)


def depends_on_calibration(algorithm: str | None, scheme) -> bool:
    """Whether a variant's outputs depend on its calibration data: a calibrated algorithm, or static KV scales."""
    from evalsuite.quant_schemes.algorithms import CALIBRATED

    kv = scheme.kv_cache
    return algorithm in CALIBRATED or (kv is not None and not kv.dynamic)


def fp8_accumulation(scheme, backend: str, mode: str) -> str | None:
    """The fp8 accumulation a variant runs with, as recorded: run.fp8_accumulation on a backend that honours
    it, fp32 on a reference backend; None for schemes without fp8 GEMMs."""
    if scheme.weights is None or not scheme.resolved_format().accumulation:
        return None
    return _recorded_mode(backend, mode)


def _recorded_mode(backend: str, mode: str) -> str:
    from evalsuite.quant_schemes.backends import get_backend

    return "fp32 (torch reference)" if get_backend(backend).reference else mode


def set_fp8_accumulation(model, record: VariantRecord, mode: str) -> None:
    """Apply run.fp8_accumulation to a variant's fp8 layers and record it (it is part of the model key: the
    two modes give different numbers on Hopper). The torch reference accumulates in fp32 whatever the mode."""
    from evalsuite.quant_schemes.linear import use_fp8_accumulation

    if use_fp8_accumulation(model, mode):
        record.fp8_accumulation = _recorded_mode(record.backend, mode)


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
    """Check a checkpoint variant before any model loads: a model directory, either pre-quantized (with a
    quantization_config, and then no scheme) or float (used as it is, or quantized by the variant's scheme),
    with a tokenizer that behaves as the baseline's (same vocabulary, special tokens and chat template)."""
    from evalsuite.quant_schemes.checkpoints import CheckpointError, check_quantization_config, quantization_config

    source = models.resolve_model(spec.path)
    if quantization_config(source.path) is not None:
        if spec.scheme is not None:
            raise RunError(
                f"variant {spec.name!r}: {spec.path} is already quantized (its config.json has a quantization_config); "
                "leave out scheme to evaluate it as it is, or point path at a float checkpoint"
            )
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


def _trained_with(path) -> str:
    """' (trained: RECIPE DESCRIPTION)' for a checkpoint `evalsuite train` wrote; '' otherwise."""
    info = path / "training.json"
    if not info.is_file():
        return ""
    try:
        data = json.loads(info.read_text())
    except json.JSONDecodeError:
        return ""
    return f" (trained: {data['description']}, {data['settings']['steps']} steps)" if "description" in data else ""


def load_checkpoint_variant(
    spec, source: models.ModelSource, device, config: SuiteConfig, backend: str, baseline_bytes, calibrations: dict
):
    """Load a checkpoint variant: a pre-quantized one into our kernels' layouts; a float one as it is, or
    quantized by the variant's scheme as a baseline would be."""
    from evalsuite.quant_schemes.checkpoints import load_quantized, quantization_config

    if quantization_config(source.path) is None:
        loaded = models.load(source, device, config.model.dtype)
        trained = _trained_with(source.path)
        if spec.scheme is None:
            stored = models.memory_bytes(loaded.model)
            record = VariantRecord(
                description=f"float checkpoint{trained}",
                weight_bytes=stored,
                compression_ratio=baseline_bytes / stored if stored else None,
            )
        else:
            report, calib = quantize_variant(spec, loaded, config, backend, calibrations)
            stored = models.memory_bytes(loaded.model)
            record = quantized_record(spec, report, stored, baseline_bytes, calib, config.run.sqnr_floor_db)
            record.description += f" of a float checkpoint{trained}"
        record.checkpoint, record.checkpoint_identity = str(source.path), source.identity
        return loaded, record

    dtype = models.compute_dtype(config.model.dtype, device)
    model, report = load_quantized(source.path, device, dtype, backend)
    loaded = models.LoadedModel(source, model, models.load_tokenizer(source), device, dtype)
    stored = models.memory_bytes(model)
    scheme = report["scheme"]
    record = VariantRecord(
        description=f"{scheme.describe()} (checkpoint, {report['quant_method']} {report['format']})",
        backend=backend,
        scheme=json.loads(scheme.model_dump_json()),
        scheme_hash=scheme.hash,
        algorithm=f"checkpoint:{report['quant_method']}",
        checkpoint=str(source.path),
        checkpoint_identity=source.identity,
        kernels=report["kernels"],
        quantized_layers=len(report["layers"]),
        weight_bytes=stored,
        compression_ratio=baseline_bytes / stored if stored else None,
    )
    return loaded, record


def quantized_record(spec, report, stored: int, baseline_bytes: int, calib, sqnr_floor: float) -> VariantRecord:
    """The record of a variant quantized in this run, from its quantization report."""
    scheme = report.scheme
    layers = [{"name": n, **s} for n, s in report.layer_stats.items()]
    return VariantRecord(
        description=scheme.describe() + (f" + {report.rotation} rotation" if report.rotation else ""),
        backend=report.backend,
        scheme=json.loads(scheme.model_dump_json()),
        scheme_hash=scheme.hash,
        algorithm=report.algorithm,
        options=spec.options,
        rotation=report.rotation,
        calibration=calib.description if calib else None,
        calibration_hash=calib.hash if calib and depends_on_calibration(report.algorithm, scheme) else None,
        kernels=report.kernels,
        quantized_layers=len(report.layers),
        weight_bytes=stored,
        compression_ratio=baseline_bytes / stored if stored else None,
        quantized_layer_bytes=report.quantized_bytes,
        float_layer_bytes=report.float_bytes,
        saturated_weights=sum(s["saturated"] for s in report.layer_stats.values()),
        quantized_weights=sum(s.get("elements", 0) for s in report.layer_stats.values()),
        saturation_note=scheme.resolved_format().saturation_note if scheme.weights is not None else None,
        zero_scales=sum(s["zero_scales"] for s in report.layer_stats.values()),
        layers=layers,
        sqnr_floor_db=sqnr_floor,
        flagged_layers=[x["name"] for x in layers if x.get("sqnr_db") is not None and x["sqnr_db"] < sqnr_floor],
    )


def baseline_record(weight_bytes: int, source: models.ModelSource | None = None, dtype=None) -> VariantRecord:
    """The baseline's record: its weights in memory at the evaluation dtype (what variants are compared
    with), and the file on disk beside it; a GGUF file says what it was dequantized from."""
    description = "unquantized"
    if source is not None and source.gguf_file:
        types = ", ".join(f"{t} x{n}" for t, n in sorted(source.gguf_types.items()))
        description = f"GGUF {source.gguf_file} ({types}), dequantized to {str(dtype).removeprefix('torch.')}"
    return VariantRecord(
        description=description,
        weight_bytes=weight_bytes,
        compression_ratio=1.0,
        weights_dtype=str(dtype).removeprefix("torch.") if dtype is not None else None,
        file_bytes=source.file_bytes if source is not None else None,
    )


def planned_record(spec, config: SuiteConfig, backend: str, calibration=None) -> VariantRecord | None:
    """The key fields of a variant known before it is built. Where its outputs depend on calibration data (a
    calibrated algorithm, static KV scales), `calibration` gives the set's hash (calibration spec -> hash, from
    the tokenizer alone: the hash covers the spec and its tokens, not the model); None without it."""
    scheme = spec.resolved_scheme
    calibration_hash = None
    cal_spec = spec.calibration or config.run.calibration
    if depends_on_calibration(spec.algorithm, scheme) and cal_spec is not None:
        if calibration is None:
            return None
        calibration_hash = calibration(cal_spec)
    return VariantRecord(
        description="",
        backend=backend,
        scheme_hash=scheme.hash,
        algorithm=spec.algorithm,
        options=spec.options,
        rotation=spec.rotation,
        calibration_hash=calibration_hash,
        fp8_accumulation=fp8_accumulation(scheme, backend, config.run.fp8_accumulation),
    )


def calibration_lm(tokenizer, device) -> EvalLM:
    """An EvalLM with a tokenizer and no model, for `build_calibration`: a calibration set's batches and hash
    are tokens, so a rerun finds a calibrated variant's key without loading a model."""

    def no_model():
        raise RunError("internal error: the calibration set asked for a model where it needs only tokens")

    return EvalLM(no_model, tokenizer, progress=False, device=device)


def predicted(
    name: str, config: SuiteConfig, source: models.ModelSource, backend: str, device, store, calibration=None
) -> VariantRecord | None:
    """The record (with its model key) of a model that an earlier run in this store built with the same
    settings, found without loading or quantizing anything; None when it must be built now (first run, a GGUF
    file or a device map, or a variant whose outputs depend on calibration data when `calibration`, a
    calibration spec -> its hash, is not given)."""
    from evalsuite.config import BASELINE

    if source.gguf_file or config.model.device_map:
        return None
    if name == BASELINE:
        planned = baseline_record(0)
    else:
        planned = planned_record(next(v for v in config.variants if v.name == name), config, backend, calibration)
        if planned is None:
            return None
    dtype = models.compute_dtype(config.model.dtype, device)
    key = model_key(source, planned, dtype, device, config.run.batch_size)
    stored = store.get_model(key)
    if stored is None or stored.get("variant") != name:
        return None
    record = VariantRecord.from_json(stored)
    record.model_key = key
    return record


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
