"""`run_suite`: evaluate the baseline and every variant on exactly the same requests, store every sample,
and write results.json.

Everything that can be checked is checked before a model loads (`plan_suites`): the suite file, task
names, prompt sets and their JSONL, schemes and algorithms, the model path and its weight files, the judge,
the sandbox, the output directory. Responses are cached in the run's store, so the baseline is computed
once per content key and shared by every variant and every later run.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from evalsuite import distributed, models, noise_floor, provenance, results
from evalsuite.bench_e2e import measure_speed
from evalsuite.config import BASELINE, SuiteConfig
from evalsuite.kernels import paths
from evalsuite.lm import EvalLM
from evalsuite.store import Store
from evalsuite.suites.base import CompareContext, ModelContext, Suite, SuiteRun, configured
from evalsuite.variants import (
    RunError,
    VariantRecord,
    baseline_record,
    calibration_lm,
    checkpoint_source,
    lazy_model,
    load_checkpoint_variant,
    model_key,
    predicted,
    quantize_variant,
    quantized_record,
    set_fp8_accumulation,
)

log = logging.getLogger("evalsuite")


@dataclass
class RunOutcome:
    run_dir: Path
    results_path: Path
    data: dict


def plan_suites(config: SuiteConfig) -> list[Suite]:
    """The suites of the file, each loaded and checked (then the checks that run programs or reach services)."""
    suites = configured(config)
    for suite in suites:
        suite.plan()
    for suite in suites:
        suite.check_environment()
    return suites


def pick_backend(backend: str, device: torch.device) -> str:
    from evalsuite.quant_schemes.backends import KernelUnavailableError, pick_backend

    try:
        return pick_backend(backend, device.type).name
    except KernelUnavailableError as err:
        raise RunError(f"run.backend: {err}") from None


def default_run_dir(config: SuiteConfig) -> Path:
    return Path(config.run.out_dir or Path("evalsuite-runs") / config.name)


LOCK_FILE = ".evalsuite.lock"


def lock_run_dir(run_dir: Path):
    """Hold an exclusive lock on the run directory for this process's life (the kernel drops it when the
    process ends, also on kill -9); a second run on the same directory is refused, naming the holder."""
    import fcntl

    handle = open(run_dir / LOCK_FILE, "a+")  # noqa: SIM115 - held open on purpose until the run ends
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunError(
            f"{run_dir} is in use by another evalsuite run ({holder}); wait for it to finish, or give this run "
            "its own directory with --out"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {os.uname().nodename}")
    handle.flush()
    return handle


def check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"  # one per process: ranks check at the same time
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise RunError(f"cannot write to the output directory {run_dir}: {err.strerror or err}") from None


def _logged(name: str, result) -> None:
    log.info("  %-14s %-22s %.4f", name, result.primary, result.metrics[result.primary].value)


def evaluate_model(ctx: ModelContext, suites: list[Suite]) -> dict[str, SuiteRun]:
    out = {}
    for suite in suites:
        out[suite.name] = suite.evaluate(ctx)
        for result in out[suite.name].tasks.values():
            _logged(result.task, result)
    return out


def model_calls(runs: dict[str, SuiteRun]) -> dict[str, int]:
    return {f"{suite}/{name}": n for suite, run in runs.items() for name, n in run.model_calls.items()}


def run_suite(
    config: SuiteConfig,
    out_dir: str | Path | None = None,
    command: list[str] | None = None,
    store_path: str | Path | None = None,
) -> RunOutcome:
    """Evaluate the suite into out_dir; `store_path` shares another run's store (explain and fix runs reuse the
    failed run's answers), default out_dir/store.sqlite."""
    plan = plan_suites(config)
    source = models.resolve_model(config.model.path)
    shard = distributed.from_environment()
    device = models.pick_device(distributed.device_for(shard, config.run.device))
    backend = pick_backend(config.run.backend, device)
    run_dir = Path(out_dir) if out_dir else default_run_dir(config)
    check_writable(run_dir)
    lock = lock_run_dir(run_dir) if shard is None or shard.main else None  # the ranks of one run share it
    try:
        return _run(config, plan, source, shard, device, backend, run_dir, command, store_path)
    finally:
        if lock is not None:
            lock.close()


def _run(config, plan, source, shard, device, backend, run_dir: Path, command, store_path=None) -> RunOutcome:
    store = Store(Path(store_path) if store_path else run_dir / "store.sqlite")
    torch.manual_seed(config.run.seed)
    main = shard is None or shard.main  # the rank that scores similarity, judges, measures fidelity and writes

    runs: dict[str, dict[str, SuiteRun]] = {}
    records: dict[str, VariantRecord] = {}
    baseline_bytes, baseline_lm, tokenizer = None, None, None
    source_tokenizer = functools.cache(lambda: models.load_tokenizer(source))  # one for every model not built
    floor: dict = {}
    calibrations: dict = {}
    checkpoints = {v.name: checkpoint_source(v, source) for v in config.variants if v.path}  # checked up front
    built: list[str] = []  # the models loaded in this run (a rerun served from the store loads none)

    def build(name: str) -> tuple[models.LoadedModel, VariantRecord, str]:
        """Load (and quantize) a model now: its loaded form, its record and its model key."""
        nonlocal baseline_bytes
        built.append(name)
        gpus = models.gpus_of_rank(shard.local_rank, shard.world) if shard and config.model.device_map else None
        if name in checkpoints:
            spec = next(v for v in config.variants if v.name == name)
            loaded, record = load_checkpoint_variant(
                spec, checkpoints[name], device, config, backend, baseline_bytes, calibrations
            )
        else:
            loaded = models.load(source, device, config.model.dtype, config.model.device_map, gpus)
            if name == BASELINE:
                baseline_bytes = models.memory_bytes(loaded.model)
                record = baseline_record(baseline_bytes, source, loaded.dtype)
            else:
                spec = next(v for v in config.variants if v.name == name)
                report, calib = quantize_variant(spec, loaded, config, backend, calibrations)
                stored = models.memory_bytes(loaded.model)
                record = quantized_record(spec, report, stored, baseline_bytes, calib, config.run.sqnr_floor_db)
        set_fp8_accumulation(loaded.model, record, config.run.fp8_accumulation)
        origin = checkpoints.get(name, source)
        return loaded, record, model_key(origin, record, loaded.dtype, device, config.run.batch_size)

    def calibration_hash(spec) -> str:
        """A calibration set's hash from its tokens alone (the set is kept for quantize_variant to reuse)."""
        key = spec.model_dump_json()
        if key not in calibrations:
            from evalsuite.calibration import build_calibration

            calibrations[key] = build_calibration(spec, calibration_lm(source_tokenizer(), device))
        return calibrations[key].hash

    for name in [BASELINE] + [v.name for v in config.variants]:
        started = time.time()
        record = None
        if name not in checkpoints:
            record = predicted(name, config, source, backend, device, store, calibration_hash)
        if record is None:
            loaded, record, key = build(name)
            model, tokenizer, max_length = loaded.model, loaded.tokenizer, None
        else:  # built by an earlier run: load it only if an answer is missing from the store
            key, loaded = record.model_key, None
            model, tokenizer = lazy_model(name, key, build), source_tokenizer()
            max_length = models.max_length(source, tokenizer)
            if name == BASELINE:
                baseline_bytes = record.weight_bytes
        record.model_key = key
        store.put_model(key, {"variant": name, "identity": source.identity, **record.to_json(run=False)})
        log.info("%s: %s", name, record.description)
        if record.calibration:
            log.info("  calibration: %s", record.calibration)
        lm = EvalLM(model, tokenizer, config.run.batch_size, max_length, store, key, name, shard=shard, device=device)
        origin = checkpoints.get(name, source)
        rekey = lambda batch, record=record, origin=origin: model_key(  # noqa: E731
            origin, record, models.compute_dtype(config.model.dtype, device), device, batch
        )
        ctx = ModelContext(name, lm, key, store, config, baseline_lm if main else None, main, rekey)
        paths.reset()
        runs[name] = evaluate_model(ctx, plan)
        record.kernel_paths = paths.taken()  # the quantized layers' GEMM paths while scoring this model
        if config.run.noise_floor:
            if name == BASELINE:
                floor["baseline"] = noise_floor.baseline(ctx, plan, runs[name])
            elif main and (twin := noise_floor.backend(lm.model, tokenizer, backend, plan, config)):
                floor.setdefault("variants", {})[name] = twin
        if config.run.measure_speed and main:
            paths.reset()
            record.speed = measure_speed(lm.model, device) | {"kernel_paths": paths.taken()}
        record.model_calls = lm.model_calls
        record.model_calls_by_task = model_calls(runs[name])
        record.decode = "; ".join(lm.decoders_used) or None
        record.seconds = round(time.time() - started, 2)
        records[name] = record
        if name == BASELINE and main and any(getattr(s, "needs_baseline", False) for s in plan):
            baseline_lm = lm  # kept resident: a suite compares both models on the same tokens
        del lm, loaded, model
        if built:  # free a loaded model's memory before the next loads (a second of nothing on a cached rerun)
            built.clear()
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    del baseline_lm
    if not main:
        shard.barrier()  # wait for rank 0 to write the results, then leave
        store.close()
        return RunOutcome(run_dir, run_dir / results.RESULTS_FILE, {})
    compared = CompareContext(config, store, device)
    sections = {s.name: s.compare({v: r[s.name] for v, r in runs.items()}, compared) for s in plan}

    run = {
        "batch_size": config.run.batch_size,
        "seed": config.run.seed,
        "bootstrap_iters": config.run.bootstrap_iters,
        "noise_floor": config.run.noise_floor,
        "backend": backend,
        "world_size": shard.world if shard else 1,
        "suite": config.name,
        "suite_file": config.source,
        "store_rows_recomputed": dict(store.recomputed),  # cached answers not served: failed checks, unreadable
    }
    model_info = {
        "path": config.model.path,
        "identity": source.identity,
        "checkpoint_dtype": source.checkpoint_dtype,
        "weight_bytes": baseline_bytes,  # in memory, at the evaluation dtype
        "file_bytes": source.file_bytes,  # the weight files on disk
    }
    if source.gguf_file:
        model_info["gguf"] = {
            "file": source.gguf_file,
            "tensor_types": source.gguf_types,
            "dequantized": "transformers dequantized every tensor to the compute dtype as it loaded the GGUF file",
        }
    data = results.build(
        provenance.collect(device, models.compute_dtype(config.model.dtype, device), tokenizer, run, command),
        model_info,
        {name: record.to_json() for name, record in records.items()},
        {name: {suite: run.tasks for suite, run in r.items() if run.tasks} for name, r in runs.items()},
        config.run.bootstrap_iters,
        config.run.seed,
        {name: section for name, section in sections.items() if section},
        floor,
    )
    path = results.write(data, run_dir)
    store.close()
    if shard is not None:
        shard.barrier()
    return RunOutcome(run_dir, path, data)
