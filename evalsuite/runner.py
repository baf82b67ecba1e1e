"""`run_suite`: evaluate the baseline and every variant on exactly the same requests, store every sample,
and write results.json.

Everything that can be checked is checked before a model loads (`plan_suites`): the suite file, task
names, prompt sets and their JSONL, schemes and algorithms, the model path and its weight files, the judge,
the sandbox, the output directory. Responses are cached in the run's store, so the baseline is computed
once per content key and shared by every variant and every later run.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from evalsuite import distributed, models, provenance, results, task_results
from evalsuite.config import BASELINE, SuiteConfig
from evalsuite.lm import EvalLM
from evalsuite.results import ComparabilityError
from evalsuite.store import Store
from evalsuite.suites import academic, code, fidelity, judge, similarity
from evalsuite.variants import (
    RunError,
    _variant_info,
    baseline_info,
    checkpoint_source,
    lazy_model,
    load_checkpoint_variant,
    model_key,
    predicted,
    quantize_variant,
    set_fp8_accumulation,
)

log = logging.getLogger("evalsuite")


@dataclass
class RunOutcome:
    run_dir: Path
    results_path: Path
    data: dict


@dataclass
class SuitePlan:
    """Everything loaded and checked before any model: tasks, problems, prompts, texts, sandbox, judge."""

    academic: list[academic.ResolvedTask] = field(default_factory=list)
    code: dict[str, list[dict]] = field(default_factory=dict)
    code_limits: object = None
    code_fallback: str | None = None
    similarity: dict[str, list[dict]] = field(default_factory=dict)
    judge: dict[str, list[dict]] = field(default_factory=dict)
    judge_template: str | None = None
    judge_source: models.ModelSource | None = None
    fidelity: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class ModelRun:
    """What one model produced: scored tasks, answers to prompt sets, (variants) its fidelity panel, and
    how many forward passes each part needed (0 when everything came from the store)."""

    tasks: dict[str, dict] = field(default_factory=dict)
    answers: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)  # set -> (outputs, hashes)
    fidelity: dict[str, dict] = field(default_factory=dict)
    model_calls: dict[str, int] = field(default_factory=dict)  # "suite/task" -> forward passes


def _limited(rows: list, limit: int | None) -> list:
    return rows[:limit] if limit else rows


def plan_suites(config: SuiteConfig) -> SuitePlan:
    suites, plan = config.suites, SuitePlan()
    if suites.academic:
        plan.academic = academic.resolve_tasks(suites.academic)
    if suites.code:
        plan.code = {name: code.load_problems(name) for name in suites.code.tasks}
    if suites.similarity:
        plan.similarity = {
            Path(n).stem: _limited(similarity.load_prompts(n), suites.similarity.limit)
            for n in suites.similarity.prompts
        }
    if suites.judge:
        plan.judge = {
            Path(n).stem: _limited(similarity.load_prompts(n, "judge"), suites.judge.limit)
            for n in suites.judge.prompts
        }
        spec = suites.judge.judge
        plan.judge_template = judge.template_text(spec.template)
        if spec.model:
            plan.judge_source = models.resolve_model(spec.model)
        elif spec.api_key_env and not os.environ.get(spec.api_key_env):
            raise RunError(f"suites.judge.judge.api_key_env: {spec.api_key_env} is not set in the environment")
    if suites.fidelity:
        plan.fidelity = {
            Path(n).stem: _limited(fidelity.load_texts(n), suites.fidelity.limit) for n in suites.fidelity.texts
        }
    if suites.code:  # last: it runs a probe program
        plan.code_limits, plan.code_fallback = code.sandbox_limits(suites.code)
    return plan


def pick_backend(backend: str, device: torch.device) -> str:
    if backend == "auto":
        return "triton" if device.type == "cuda" else "torch-ref"
    if backend == "triton" and device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise RunError("backend 'triton' needs a CUDA device (or TRITON_INTERPRET=1 to interpret kernels on CPU)")
    return backend


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


def evaluate_model(
    lm: EvalLM, key: str, store: Store, plan: SuitePlan, config: SuiteConfig, baseline_lm: EvalLM | None
) -> ModelRun:
    out = ModelRun()
    seed, iters = config.run.seed, config.run.bootstrap_iters
    for task in plan.academic:
        calls = lm.model_calls
        result = task_results.cached(store, key, task.key, seed, iters) or task_results.stored(
            store, key, academic.run_task(lm, task, seed, iters), seed, iters
        )
        out.model_calls[f"academic/{task.name}"] = lm.model_calls - calls
        _logged(task.name, result)
        out.tasks.setdefault("academic", {})[task.name] = result
    for name, problems in plan.code.items():
        calls = lm.model_calls
        suite, limits, fallback = config.suites.code, plan.code_limits, plan.code_fallback
        task_key = code.task_key(Path(name).stem, problems, suite)
        settings = (seed, iters, repr(limits), fallback)
        result = task_results.cached(store, key, task_key, *settings) or task_results.stored(
            store, key, code.run_code_task(lm, Path(name).stem, problems, suite, seed, limits, fallback), *settings
        )
        _logged(result.task, result)
        out.tasks.setdefault("code", {})[result.task] = result
        out.model_calls[f"code/{result.task}"] = lm.model_calls - calls
    for kind, sets, max_new in (
        ("similarity", plan.similarity, config.suites.similarity and config.suites.similarity.max_gen_toks),
        ("judge", plan.judge, config.suites.judge and config.suites.judge.max_gen_toks),
    ):
        for name, prompts in sets.items():
            calls = lm.model_calls
            outputs, hashes = similarity.generate(lm, name, prompts, max_new)
            out.model_calls[f"{kind}/{name}"] = lm.model_calls - calls
            records = [
                {"doc_id": i, "prompt": p["prompt"], "prompt_hash": h, "prediction": o}
                for i, (p, o, h) in enumerate(zip(prompts, outputs, hashes, strict=True))
            ]
            store.put_samples(key, f"{kind}:{name}", records)
            out.answers[f"{kind}:{name}"] = (outputs, hashes)
    if baseline_lm is not None:
        for name, texts in plan.fidelity.items():
            out.fidelity[name] = cached_fidelity(store, baseline_lm, lm, name, texts, config.suites.fidelity.batch_size)
            log.info("  %-14s %-22s %.5f", name, "kld_mean", out.fidelity[name]["kld_mean"])
    return out


def cached_fidelity(store: Store, baseline_lm: EvalLM, lm: EvalLM, name: str, texts: list[str], batch: int) -> dict:
    """The fidelity panel of one variant against the baseline, from the store when both models and the texts
    are those it was computed for (a rerun, or a resume after kill -9, skips it)."""
    payload = json.dumps([name, texts, batch, baseline_lm.model_key], sort_keys=True)
    task_key = f"fidelity:{name}:{hashlib.sha256(payload.encode()).hexdigest()[:16]}"
    found = store.get_samples(lm.model_key, task_key)
    if found:
        return found[0]
    result = fidelity.compare(baseline_lm, lm, texts, batch)
    store.put_samples(lm.model_key, task_key, [result])
    return result


def baseline_noise_floor(lm: EvalLM, store: Store, plan: SuitePlan, config: SuiteConfig, base: ModelRun) -> dict:
    """The baseline against itself at another batch size: self-flips per task and self-KLD."""
    other_bs = config.run.noise_floor_batch_size or max(1, config.run.batch_size // 4)
    key = f"{lm.model_key}|batch={other_bs}"
    twin = EvalLM(
        lm.model, lm.tokenizer, other_bs, store=store, model_key=key, label=f"baseline@{other_bs}", shard=lm.shard
    )
    academic_only = SuitePlan(academic=plan.academic)
    again = evaluate_model(twin, key, store, academic_only, config, None)
    flips = []
    for suite, tasks in again.tasks.items():
        for name, result in tasks.items():
            _, flip = results.task_recovery(suite, result, base.tasks[suite][name], "baseline", 0, config.run.seed)
            if flip:
                flips.append(flip)
    main = lm.shard is None or lm.shard.main
    tokens = {
        name: fidelity.compare(lm, lm, texts, config.run.batch_size, other_bs)
        for name, texts in (plan.fidelity.items() if main else [])
    }
    return {"batch_size": config.run.batch_size, "other_batch_size": other_bs, "flips": flips, "tokens": tokens}


def backend_noise_floor(model, tokenizer, backend: str, plan: SuitePlan, config: SuiteConfig) -> dict | None:
    """A variant against itself on the other kernel backend (Triton vs torch reference), where one exists."""
    import copy

    from evalsuite.quant_schemes.linear import QuantLinear

    if backend != "triton" or not plan.fidelity:
        return None
    twin = copy.deepcopy(model)
    for module in twin.modules():
        if isinstance(module, QuantLinear):
            module.use_backend("torch-ref")
    a, b = EvalLM(model, tokenizer, config.run.batch_size), EvalLM(twin, tokenizer, config.run.batch_size)
    tokens = {
        name: fidelity.compare(a, b, texts, config.suites.fidelity.batch_size) for name, texts in plan.fidelity.items()
    }
    del twin
    return {"backends": ["triton", "torch-ref"], "tokens": tokens}


SPEED_PREFILL, SPEED_CONTEXT, SPEED_STEPS = 256, 64, 16


def measure_speed(model, device: torch.device) -> dict:
    """Prefill and decode tokens/s at batch 1 on random tokens (decode as evaluation decodes: CUDA graphs on
    a GPU), with the same settings for every variant of the run."""
    from evalsuite.bench_e2e import decode_rate, prefill_rate

    vocab = model.config.vocab_size
    return {
        "prefill_tok_s": prefill_rate(model, 1, SPEED_PREFILL, vocab, device, repeats=3),
        "decode_tok_s": decode_rate(model, 1, SPEED_CONTEXT, SPEED_STEPS, vocab, device, repeats=3),
        "settings": f"batch 1, prefill {SPEED_PREFILL} tokens, decode {SPEED_STEPS} steps after {SPEED_CONTEXT}",
    }


def _answers(runs: dict[str, ModelRun], variant: str, key: str) -> tuple[list[str], list[str]]:
    base, var = runs[BASELINE].answers[key], runs[variant].answers[key]
    if base[1] != var[1]:
        first = next(i for i, (a, b) in enumerate(zip(base[1], var[1], strict=True)) if a != b)
        raise ComparabilityError(
            f"{key}: prompt {first} reached the baseline and {variant} differently (rendered-prompt hash "
            f"{base[1][first]} vs {var[1][first]}: another chat template or generation setting); refusing to compare"
        )
    return base[0], var[0]


def similarity_results(runs: dict[str, ModelRun], plan: SuitePlan, device: torch.device, store: Store) -> dict:
    """Each variant's answers scored against the baseline's; kept in the store under the pair of answer lists
    they were computed from, so that a rerun with the same answers does not embed them again."""
    out: dict = {}
    for variant in runs:
        if variant == BASELINE:
            continue
        for name in plan.similarity:
            base, var = _answers(runs, variant, f"similarity:{name}")
            payload = json.dumps([similarity.METRICS, device.type, base, var]).encode()
            key = f"similarity-scores:{name}:{hashlib.sha256(payload).hexdigest()[:16]}"
            found = store.get_samples("answers", key)
            if found:
                out.setdefault(variant, {})[name] = found[0]
                continue
            scores = similarity.compare(base, var, device=str(device))
            summary = {metric: similarity.summarize(values) for metric, values in scores.items()}
            summary["identical"] = sum(b == v for b, v in zip(base, var, strict=True)) / len(base)
            store.put_samples("answers", key, [summary])
            out.setdefault(variant, {})[name] = summary
    return out


def judge_results(runs: dict[str, ModelRun], plan: SuitePlan, config: SuiteConfig, store: Store, device) -> dict:
    spec = config.suites.judge.judge
    if spec.model:
        source, dtype = plan.judge_source, models.compute_dtype("auto", device)
        key = model_key(source, {"backend": "float"}, dtype, device, config.run.batch_size)
        tokenizer = models.load_tokenizer(source)
        judge_lm = EvalLM(  # loaded only for games missing from the store
            lambda: models.load(source, device, "auto").model,
            tokenizer,
            config.run.batch_size,
            models.max_length(source, tokenizer),
            store,
            key,
            "judge",
            device=device,
        )
        the_judge = judge.LocalJudge(judge_lm, spec.max_tokens, spec.template in judge.ONE_LINE_TEMPLATES)
        identity = f"{spec.model} ({plan.judge_source.identity[:12]})"
    else:
        the_judge = judge.EndpointJudge(
            spec.endpoint, spec.name, spec.api_key_env, store, spec.max_tokens, spec.timeout_s
        )
        identity = f"{spec.name} at {spec.endpoint}"
    template_hash = hashlib.sha256(plan.judge_template.encode()).hexdigest()[:16]
    out: dict = {}
    for variant in runs:
        if variant == BASELINE:
            continue
        for name, prompts in plan.judge.items():
            base, var = _answers(runs, variant, f"judge:{name}")
            games = judge.play(the_judge, plan.judge_template, [p["prompt"] for p in prompts], base, var)
            summary = judge.summarize(games, config.run.bootstrap_iters, config.run.seed)
            summary.update(judge=identity, template_hash=template_hash)
            out.setdefault(variant, {})[name] = summary
            log.info("  judge %-10s %-12s win-rate %s", variant, name, summary["win_rate"])
    return out


def run_suite(config: SuiteConfig, out_dir: str | Path | None = None, command: list[str] | None = None) -> RunOutcome:
    plan = plan_suites(config)
    source = models.resolve_model(config.model.path)
    shard = distributed.from_environment()
    device = models.pick_device(distributed.device_for(shard, config.run.device))
    backend = pick_backend(config.run.backend, device)
    run_dir = Path(out_dir) if out_dir else default_run_dir(config)
    check_writable(run_dir)
    lock = lock_run_dir(run_dir) if shard is None or shard.main else None  # the ranks of one run share it
    try:
        return _run(config, plan, source, shard, device, backend, run_dir, command)
    finally:
        if lock is not None:
            lock.close()


def _run(config, plan, source, shard, device, backend, run_dir: Path, command) -> RunOutcome:
    store = Store(run_dir / "store.sqlite")
    torch.manual_seed(config.run.seed)
    main = shard is None or shard.main  # the rank that scores similarity, judges, measures fidelity and writes

    runs: dict[str, ModelRun] = {}
    variants_info: dict[str, dict] = {}
    baseline_bytes, baseline_lm, tokenizer = None, None, None
    floor: dict = {}
    calibrations: dict = {}
    checkpoints = {v.name: checkpoint_source(v, source) for v in config.variants if v.path}  # checked up front

    def build(name: str) -> tuple[models.LoadedModel, dict, str]:
        """Load (and quantize) a model now: its loaded form, its record and its model key."""
        nonlocal baseline_bytes
        gpus = models.gpus_of_rank(shard.local_rank, shard.world) if shard and config.model.device_map else None
        if name in checkpoints:
            loaded, info = load_checkpoint_variant(checkpoints[name], device, config, backend, baseline_bytes)
            set_fp8_accumulation(loaded.model, info, config.run.fp8_accumulation)
            return loaded, info, model_key(checkpoints[name], info, loaded.dtype, device, config.run.batch_size)
        loaded = models.load(source, device, config.model.dtype, config.model.device_map, gpus)
        if name == BASELINE:
            baseline_bytes = source.file_bytes or models.stored_bytes(loaded.model, source.checkpoint_dtype)
            info = baseline_info(baseline_bytes)
        else:
            spec = next(v for v in config.variants if v.name == name)
            report, calib = quantize_variant(spec, loaded, config, backend, calibrations)
            stored = models.stored_bytes(loaded.model, source.checkpoint_dtype)
            info = _variant_info(report, stored, baseline_bytes, calib, config.run.sqnr_floor_db)
            info["options"] = spec.options
        set_fp8_accumulation(loaded.model, info, config.run.fp8_accumulation)
        return loaded, info, model_key(source, info, loaded.dtype, device, config.run.batch_size)

    for name in [BASELINE] + [v.name for v in config.variants]:
        started = time.time()
        known = None if name in checkpoints else predicted(name, config, source, backend, device, store)
        if known is None:
            loaded, info, key = build(name)
            model, tokenizer, max_length = loaded.model, loaded.tokenizer, None
        else:  # built by an earlier run: load it only if an answer is missing from the store
            (info, key), loaded = known, None
            model, tokenizer = lazy_model(name, key, build), models.load_tokenizer(source)
            max_length = models.max_length(source, tokenizer)
            if name == BASELINE:
                baseline_bytes = info["weight_bytes"]
        info["model_key"] = key
        store.put_model(key, {"variant": name, "identity": source.identity, **info})
        log.info("%s: %s", name, info["description"])
        lm = EvalLM(model, tokenizer, config.run.batch_size, max_length, store, key, name, shard=shard, device=device)
        runs[name] = evaluate_model(lm, key, store, plan, config, baseline_lm if main else None)
        if config.run.noise_floor:
            if name == BASELINE:
                floor["baseline"] = baseline_noise_floor(lm, store, plan, config, runs[name])
            elif main and (twin := backend_noise_floor(lm.model, tokenizer, backend, plan, config)):
                floor.setdefault("variants", {})[name] = twin
        if config.run.measure_speed and main:
            info["speed"] = measure_speed(lm.model, device)
        info["model_calls"] = lm.model_calls
        info["model_calls_by_task"] = runs[name].model_calls
        info["seconds"] = round(time.time() - started, 2)
        variants_info[name] = info
        if name == BASELINE and plan.fidelity and main:
            baseline_lm = lm  # kept resident: the fidelity panel runs both models on the same tokens
        del lm, loaded, model
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    del baseline_lm
    if not main:
        shard.barrier()  # wait for rank 0 to write the results, then leave
        store.close()
        return RunOutcome(run_dir, run_dir / results.RESULTS_FILE, {})
    extra = {"fidelity": {v: r.fidelity for v, r in runs.items() if r.fidelity}, "noise_floor": floor}
    if plan.similarity:
        extra["similarity"] = similarity_results(runs, plan, device, store)
    if plan.judge:
        extra["judge"] = judge_results(runs, plan, config, store, device)

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
        "weight_bytes": baseline_bytes,
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
        variants_info,
        {name: r.tasks for name, r in runs.items()},
        config.run.bootstrap_iters,
        config.run.seed,
        extra,
    )
    path = results.write(data, run_dir)
    store.close()
    if shard is not None:
        shard.barrier()
    return RunOutcome(run_dir, path, data)
