"""`evalsuite bench harness`: the same tasks on the same model through lm-eval's own HF backend (what
`lm_eval --model hf` runs) and through our runner, in one process: both wall times (model loading excluded
for both), the time spent answering requests, their ratios, and how far the scores and per-sample
log-likelihoods differ.

    evalsuite bench harness                                    # embedded:tiny on the built-in tiny tasks, CPU
    evalsuite bench harness --scale 0.02 --shape llama-3.1-8b --device cuda --dtype bfloat16
                                                               # leaderboard-shaped task sets, 2% of full size

`--scale` writes seeded synthetic task sets shaped like MMLU 5-shot, HellaSwag 10-shot, ARC-Challenge
25-shot and GSM8K 5-shot (evalsuite.bench_tasks) at that fraction of their real sizes; `--variant` quantizes
the model first (through our kernels) so both harnesses run the quantized model.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from evalsuite import kernel_profile

LOGLIKELIHOOD_TASKS = ("tiny_mc", "tiny_ppl")
GENERATION_TASKS = ("tiny_arith",)
LEADERBOARD_TASKS = ("mmlu", "hellaswag", "arc_challenge", "gsm8k")
REQUEST_KINDS = ("loglikelihood", "loglikelihood_rolling", "generate_until")
ABLATIONS = {  # our runner with one optimization switched off (and those it builds on), for --ablations
    "no prefix sharing": {"share_prefix": False},
    "no prefix sharing, no context packing": {"share_prefix": False, "share_context": False},
    "no CUDA graphs": {"cuda_graphs": False},
}


def timed_requests(lm) -> dict:
    """Wrap the request methods of an lm (instance attributes, as lm-eval's evaluate looks them up) to add
    up the seconds spent in them; the returned dict holds the running total under "s"."""
    total = {"s": 0.0}
    for kind in REQUEST_KINDS:
        method = getattr(lm, kind)

        def wrapped(requests, *args, method=method, **kwargs):
            started = time.perf_counter()
            try:
                return method(requests, *args, **kwargs)
            finally:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                total["s"] += time.perf_counter() - started

        setattr(lm, kind, wrapped)
    return total


def _evaluate(lm, configs: list, limit: int | None) -> tuple[dict, float]:
    """One timed evaluation. lm-eval's own backend runs through lm-eval as `lm_eval --model hf` does (its
    prompt templates compiled per document); ours as `evalsuite run` does (each template compiled once)."""
    from evalsuite.lm import EvalLM
    from evalsuite.suites.academic import evaluate_tasks, task_manager

    started = time.perf_counter()
    out = evaluate_tasks(lm, configs, None, limit, 1234, task_manager(False), compile_once=isinstance(lm, EvalLM))
    return out, time.perf_counter() - started


def _responses(out: dict) -> list:
    return [
        s["resps"]
        for leaf in sorted(out["samples"])
        for s in sorted(out["samples"][leaf], key=lambda s: (s["doc_id"], s["filter"]))
    ]


def _max_ll_diff(a: list, b: list) -> float | None:
    """Largest absolute difference between paired log-likelihood responses (None for generations)."""
    diff = 0.0
    for ra, rb in zip(a, b, strict=True):
        for xa, xb in zip(ra, rb, strict=True):
            va, vb = xa[0], xb[0]
            if isinstance(va, (list, tuple)):
                va, vb = va[0], vb[0]
            if isinstance(va, str):
                return None
            diff = max(diff, abs(float(va) - float(vb)))
    return diff


def compare(task: str, ours: dict, theirs: dict) -> dict:
    """Metric and response differences over every leaf task (MMLU's subjects) of a task."""
    metric_diff: dict[str, float] = {}
    for leaf, res_o in ours["results"].items():
        res_t = theirs["results"][leaf]
        for k in res_o:
            if "," in k and "stderr" not in k and isinstance(res_o[k], (int, float)):
                metric_diff[k] = max(metric_diff.get(k, 0.0), abs(float(res_o[k]) - float(res_t[k])))
    a, b = _responses(ours), _responses(theirs)
    docs = len({(leaf, s["doc_id"]) for leaf, samples in ours["samples"].items() for s in samples})
    row = {"task": task, "docs": docs, "metric_abs_diff": metric_diff, "max_loglikelihood_diff": _max_ll_diff(a, b)}
    if row["max_loglikelihood_diff"] is None:
        row["identical_generations"] = sum(x == y for x, y in zip(a, b, strict=True))
        row["generations"] = len(a)
    return row


def single_token_letters(tokenizer):
    """The embedded tokenizer spells " C" and " D" in two tokens; Llama-3's vocabulary (and most others) has
    " A" to " D" as single tokens, which decides how lm-eval batches MMLU's answers (one-token continuations
    of a context are scored from one forward). For a random-weight model of a large vocabulary, add them."""
    from tokenizers import AddedToken

    missing = [f" {c}" for c in "ABCD" if len(tokenizer.encode(f" {c}", add_special_tokens=False)) > 1]
    tokenizer.add_tokens([AddedToken(t, normalized=False) for t in missing])
    return tokenizer


def load_model(args, device: torch.device):
    from evalsuite import models

    dtype = {
        "auto": torch.bfloat16 if device.type == "cuda" else torch.float32,
        "float32": torch.float32,
        "bfloat16": torch.bfloat16,
    }[args.dtype]
    if args.shape:
        from evalsuite.bench_e2e import build_model

        model = build_model(args.shape, args.layers, device, dtype, args.seed)
        tokenizer = single_token_letters(models.load_tokenizer(models.resolve_model("embedded:tiny")))
        label = f"{args.shape} (seeded random weights)"
    else:
        loaded = models.load(models.resolve_model(args.model), device, args.dtype)
        model, tokenizer, label = loaded.model, loaded.tokenizer, args.model
    kernels = []
    if args.variant:
        from evalsuite.quant_schemes.apply import quantize
        from evalsuite.quant_schemes.backends import pick_backend

        kernels = quantize(model, args.variant, backend=pick_backend("auto", device.type)).kernels
        label += f", variant {args.variant}"
    return model, tokenizer, label, kernels


def task_configs(args, tokenizer, max_length: int) -> dict[str, list]:
    """{task: configs for evaluate_tasks}: built-in task names, or the leaderboard-shaped sets at --scale
    (GSM8K's 256 new tokens capped at a quarter of the model's positions)."""
    if args.scale is None:
        from evalsuite.tasks import task_config

        names = args.tasks or ",".join(LOGLIKELIHOOD_TASKS + GENERATION_TASKS)
        return {task: [task_config(task)] for task in names.split(",")}
    from evalsuite.bench_tasks import tokens_per_word, write_task_sets

    args.max_gen_toks = min(256, max_length // 4)
    configs = write_task_sets(args.out / "data", args.scale, args.seed, tokens_per_word(tokenizer), args.max_gen_toks)
    wanted = args.tasks.split(",") if args.tasks else LEADERBOARD_TASKS
    unknown = sorted(set(wanted) - set(configs))
    if unknown:
        raise SystemExit(f"--tasks {','.join(unknown)}: with --scale the tasks are {','.join(LEADERBOARD_TASKS)}")
    return {task: configs[task] for task in wanted}


def header(args, model, label: str, device: torch.device) -> str:
    import lm_eval
    import transformers

    from evalsuite import __version__
    from evalsuite.sdpa_backends import DESCRIPTION

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    if device.type == "cuda":
        gpu += f" (evalsuite's {DESCRIPTION}; lm-eval's as torch picks)"
    scale = "built-in tiny tasks"
    if args.scale is not None:
        scale = f"scale {args.scale} of leaderboard sizes (GSM8K up to {args.max_gen_toks} new tokens)"
    return (
        f"Model: {label}, {next(model.parameters()).dtype}; device: {gpu}; batch size {args.batch_size}; {scale}; "
        f"{time.strftime('%Y-%m-%d')}; evalsuite {__version__}, lm-eval {lm_eval.__version__}, torch "
        f"{torch.__version__}, transformers {transformers.__version__}"
    )


def table(rows: list[dict], head: str) -> str:
    lines = [
        head,
        "",
        "| task | docs | lm-eval HF (s) | evalsuite (s) | speedup | requests: lm-eval (s) | requests: evalsuite (s) | "
        "requests speedup | max metric diff | max loglikelihood diff | identical generations |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        gens = f"{r['identical_generations']}/{r['generations']}" if "generations" in r else "n/a"
        ll = "n/a" if r["max_loglikelihood_diff"] is None else f"{r['max_loglikelihood_diff']:.2e}"
        lines.append(
            f"| {r['task']} | {r['docs']} | {r['lm_eval_hf_s']} | {r['evalsuite_s']} | {r['speedup']}x | "
            f"{r['lm_eval_requests_s']} | {r['evalsuite_requests_s']} | {r['requests_speedup']}x | "
            f"{max(r['metric_abs_diff'].values(), default=0):.2e} | {ll} | {gens} |"
        )
    spread = [r for r in rows if r.get("lm_eval_batch1_loglikelihood_diff") is not None]
    if spread:
        lines += ["", "How far lm-eval's own log-likelihoods move between batch size 1 and the batched run "
                  "(--reference-spread):", "", "| task | lm-eval batch 1 vs batched | evalsuite vs lm-eval |",
                  "|---|---|---|"]  # fmt: skip
        for r in spread:
            lines.append(
                f"| {r['task']} | {r['lm_eval_batch1_loglikelihood_diff']:.2e} | {r['max_loglikelihood_diff']:.2e} |"
            )
    scored = [r for r in rows if any(r.get("evalsuite_scoring_s", {}).values())]
    if scored:
        phases = list(scored[0]["evalsuite_scoring_s"])
        lines += ["", "Where our log-likelihood request time goes (seconds):", ""]
        lines += ["| task | " + " | ".join(phases) + " |", "|---|" + "---|" * len(phases)]
        for r in scored:
            lines.append(f"| {r['task']} | " + " | ".join(str(r["evalsuite_scoring_s"][p]) for p in phases) + " |")
    if any("ablations_requests_s" in r for r in rows):
        lines += ["", "Seconds on requests, our runner with one optimization off (--ablations):", ""]
        lines += ["| task | all on | " + " | ".join(ABLATIONS) + " |", "|---|---|" + "---|" * len(ABLATIONS)]
        for r in rows:
            off = r.get("ablations_requests_s", {})
            lines.append(
                f"| {r['task']} | {r['evalsuite_requests_s']} | "
                + " | ".join(str(off.get(n, "")) for n in ABLATIONS)
                + " |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from lm_eval.models.huggingface import HFLM

    from evalsuite.lm import EvalLM

    parser = argparse.ArgumentParser(
        prog="evalsuite bench harness", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="embedded:tiny")
    parser.add_argument("--shape", default=None, help="instead of --model: a model shape from bench e2e")
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--variant", default=None, help="quantize the model with this scheme first (e.g. W4A16)")
    parser.add_argument("--tasks", default=None, help="comma-separated; default: all of the chosen set")
    parser.add_argument("--scale", type=float, default=None, help="leaderboard-shaped task sets at this fraction")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16"],
        default="auto",
        help="float32 makes the equality check meaningful (bf16 rounding differs with batch shapes)",
    )
    parser.add_argument("--ablations", action="store_true", help="also time our runner without each optimization")
    parser.add_argument(
        "--reference-spread",
        action="store_true",
        help="also run lm-eval's HF backend at batch size 1 (untimed) and report how far its log-likelihoods move "
        "from its own batched run: the spread that batch shapes alone cause, against which ours is read",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="time our runner under the profiler (CUDA only; its times then include the profiler's overhead): kernel "
        "time by kind, the longest kernels and host operators, written to bench-harness-profile.md",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-harness"))
    parser.add_argument(
        "--budget-s", type=float, default=None, help="start no further task after this many seconds (rows so far kept)"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 for both harnesses
    model, tokenizer, label, kernels = load_model(args, device)
    ours_lm = EvalLM(model, tokenizer, batch_size=args.batch_size, progress=False)
    configs = task_configs(args, tokenizer, ours_lm.max_length)
    hf_lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=args.batch_size, device=str(device))
    spent = {"hf": timed_requests(hf_lm), "ours": timed_requests(ours_lm)}
    rows: list[dict] = []
    profiles: list[str] = []
    args.skipped = []
    for task, task_configs_ in configs.items():
        if args.budget_s is not None and time.perf_counter() - started > args.budget_s:
            args.skipped.append(task)
            print(f"{task}: skipped, --budget-s {args.budget_s:g} spent", flush=True)
            write(args, rows, header(args, model, label, device), kernels)
            continue
        # warm-up, the same calls for both: dataset preparation and one-time costs stay out of the timing. Two
        # sizes, so that our decode step's Inductor functions are compiled for dynamic batch and cache shapes as
        # they are after a run's first two batches (a CUDA-graph capture per new shape stays in the timing)
        for lm in (hf_lm, ours_lm):
            for warm in (1, 2):
                _evaluate(lm, task_configs_, warm)
        before = {k: v["s"] for k, v in spent.items()}
        phases = dict(ours_lm.seconds)
        theirs, t_hf = _evaluate(hf_lm, task_configs_, args.limit)
        profiling = args.profile and device.type == "cuda"
        if profiling:
            # our timed run itself, kernels and host operators: a first run's one-time costs show only there
            run = lambda configs=task_configs_: _evaluate(ours_lm, configs, args.limit)  # noqa: E731
            prof = kernel_profile.profile(run, 1, warmup=False, host=True)
            ours, t_ours = prof.pop("result")
        else:
            ours, t_ours = _evaluate(ours_lm, task_configs_, args.limit)
        r_hf, r_ours = (spent[k]["s"] - before[k] for k in ("hf", "ours"))
        if profiling:
            prof["wall_us"] = r_ours * 1e6  # shares and idle time against our request seconds
            title = f"{task}: our timed requests under the profiler ({r_ours:.2f} s of {t_ours:.2f} s)"
            profiles.append(kernel_profile.render(prof, title))
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "bench-harness-profile.md").write_text("\n".join(profiles))
        row = compare(task, ours, theirs)
        row.update(lm_eval_hf_s=round(t_hf, 3), evalsuite_s=round(t_ours, 3), speedup=round(t_hf / t_ours, 2))
        row.update(
            lm_eval_requests_s=round(r_hf, 3),
            evalsuite_requests_s=round(r_ours, 3),
            requests_speedup=round(r_hf / r_ours, 2),
            evalsuite_scoring_s={k: round(v - phases[k], 3) for k, v in ours_lm.seconds.items()},
        )
        if args.ablations:
            row["ablations_requests_s"] = ablations(model, tokenizer, args, task_configs_)
        if args.reference_spread and row["max_loglikelihood_diff"] is not None:
            single = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=1, device=str(device))
            alone, _ = _evaluate(single, task_configs_, args.limit)
            row["lm_eval_batch1_loglikelihood_diff"] = _max_ll_diff(_responses(theirs), _responses(alone))
        rows.append(row)
        print(json.dumps(row), flush=True)
        write(args, rows, header(args, model, label, device), kernels)  # each task's row kept as it finishes
    print(table(rows, header(args, model, label, device)))
    return 0


def ablations(model, tokenizer, args, configs: list) -> dict[str, float]:
    """Seconds our runner spends on the task's requests with each optimization of ABLATIONS switched off."""
    from evalsuite.lm import EvalLM

    seconds = {}
    for name, switches in ABLATIONS.items():
        lm = EvalLM(model, tokenizer, batch_size=args.batch_size, progress=False, **switches)
        spent = timed_requests(lm)
        _evaluate(lm, configs, 1)
        spent["s"] = 0.0
        _evaluate(lm, configs, args.limit)
        seconds[name] = round(spent["s"], 3)
    return seconds


def write(args, rows: list[dict], head: str, kernels: list[str]) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    skipped = getattr(args, "skipped", [])
    record = {"model": head, "scale": args.scale, "batch_size": args.batch_size, "kernels": kernels, "rows": rows}
    record["skipped_tasks"] = skipped
    note = f"\nNot run (--budget-s {args.budget_s:g} spent): {', '.join(skipped)}\n" if skipped else ""
    (args.out / "bench-harness.json").write_text(json.dumps(record, indent=2) + "\n")
    (args.out / "bench-harness.md").write_text(table(rows, head) + note)
