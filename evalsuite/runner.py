"""`run_suite`: evaluate the baseline and every variant on exactly the same requests, store every sample,
and write results.json plus the reports.

Everything that can be checked is checked before a model loads: the suite file, task names, schemes and
algorithms, the model path (and its weight files), the output directory. The baseline is evaluated once
per content key and shared by every variant and every later run; responses are cached in the run's store.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from evalsuite import models, provenance, results
from evalsuite.config import BASELINE, SuiteConfig
from evalsuite.errors import UserError
from evalsuite.lm import EvalLM
from evalsuite.store import Store
from evalsuite.suites import academic

log = logging.getLogger("evalsuite")


class RunError(UserError, RuntimeError):
    pass


@dataclass
class RunOutcome:
    run_dir: Path
    results_path: Path
    data: dict


def pick_backend(backend: str, device: torch.device) -> str:
    if backend == "auto":
        return "triton" if device.type == "cuda" else "torch-ref"
    if backend == "triton" and device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise RunError("backend 'triton' needs a CUDA device (or TRITON_INTERPRET=1 to interpret kernels on CPU)")
    return backend


def default_run_dir(config: SuiteConfig) -> Path:
    return Path(config.run.out_dir or Path("evalsuite-runs") / config.name)


def check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise RunError(f"cannot write to the output directory {run_dir}: {err.strerror or err}") from None


def model_key(source: models.ModelSource, variant: dict, dtype: torch.dtype, device: torch.device) -> str:
    payload = {
        "identity": source.identity,
        "scheme": variant.get("scheme_hash"),
        "algorithm": variant.get("algorithm"),
        "calibration": variant.get("calibration_hash"),
        "backend": variant.get("backend"),
        "dtype": str(dtype),
        "device_type": device.type,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def evaluate_model(
    lm: EvalLM, key: str, store: Store, tasks: list[academic.ResolvedTask], config: SuiteConfig
) -> dict[str, academic.TaskResult]:
    out = {}
    for task in tasks:
        started = time.time()
        result = academic.run_task(lm, task, config.run.seed, config.run.bootstrap_iters)
        store.put_samples(key, task.key, result.samples)
        primary = result.metrics[result.primary]
        log.info("  %-14s %-22s %.4f  (%.1fs)", task.name, result.primary, primary.value, time.time() - started)
        out[task.name] = result
    return out


def _variant_info(report, stored: int, baseline_bytes: int) -> dict:
    scheme = report.scheme
    return {
        "scheme": json.loads(scheme.model_dump_json()),
        "scheme_hash": scheme.hash,
        "description": scheme.describe(),
        "algorithm": report.algorithm,
        "backend": report.backend,
        "kernels": report.kernels,
        "quantized_layers": len(report.layers),
        "weight_bytes": stored,
        "compression_ratio": baseline_bytes / stored if stored else None,
        "quantized_layer_bytes": report.quantized_bytes,
        "float_layer_bytes": report.float_bytes,
    }


def run_suite(config: SuiteConfig, out_dir: str | Path | None = None, command: list[str] | None = None) -> RunOutcome:
    from evalsuite.quant_schemes.apply import quantize

    tasks = academic.resolve_tasks(config.suites.academic)
    source = models.resolve_model(config.model.path)
    device = models.pick_device(config.run.device)
    backend = pick_backend(config.run.backend, device)
    run_dir = Path(out_dir) if out_dir else default_run_dir(config)
    check_writable(run_dir)
    store = Store(run_dir / "store.sqlite")
    torch.manual_seed(config.run.seed)

    task_results: dict[str, dict] = {}
    variants_info: dict[str, dict] = {}
    baseline_bytes = None
    tokenizer = None
    for name in [BASELINE] + [v.name for v in config.variants]:
        loaded = models.load(source, device, config.model.dtype)
        tokenizer = loaded.tokenizer
        if name == BASELINE:
            info = {"scheme": None, "algorithm": None, "backend": "float", "kernels": [], "description": "unquantized"}
            baseline_bytes = models.stored_bytes(loaded.model, source.checkpoint_dtype)
            info.update(weight_bytes=baseline_bytes, compression_ratio=1.0)
        else:
            spec = next(v for v in config.variants if v.name == name)
            report = quantize(loaded.model, spec.resolved_scheme, algorithm=spec.algorithm, backend=backend)
            info = _variant_info(report, models.stored_bytes(loaded.model, source.checkpoint_dtype), baseline_bytes)
        key = model_key(source, info, loaded.dtype, device)
        info["model_key"] = key
        store.put_model(key, {"variant": name, "identity": source.identity, **info})
        log.info("%s: %s", name, info["description"])
        lm = EvalLM(loaded.model, loaded.tokenizer, config.run.batch_size, store=store, model_key=key, label=name)
        task_results[name] = {"academic": evaluate_model(lm, key, store, tasks, config)}
        info["model_calls"] = lm.model_calls
        variants_info[name] = info
        del lm, loaded
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    run = {
        "batch_size": config.run.batch_size,
        "seed": config.run.seed,
        "bootstrap_iters": config.run.bootstrap_iters,
        "backend": backend,
        "suite": config.name,
        "suite_file": config.source,
    }
    model_info = {
        "path": config.model.path,
        "identity": source.identity,
        "checkpoint_dtype": source.checkpoint_dtype,
        "weight_bytes": baseline_bytes,
    }
    data = results.build(
        provenance.collect(device, models.compute_dtype(config.model.dtype, device), tokenizer, run, command),
        model_info,
        variants_info,
        task_results,
        config.run.bootstrap_iters,
        config.run.seed,
    )
    path = results.write(data, run_dir)
    store.close()
    return RunOutcome(run_dir, path, data)
