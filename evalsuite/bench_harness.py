"""`evalsuite bench harness`: the same tasks on the same model through lm-eval's own HF backend (what
`lm_eval --model hf` runs) and through our runner, in one process: both wall times (model loading excluded
for both), their ratio, and how far the scores and per-sample log-likelihoods differ.

    evalsuite bench harness                                    # embedded:tiny on the built-in tasks, CPU
    evalsuite bench harness --shape llama-3.1-8b --device cuda  # seeded random weights at 8B shapes
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

LOGLIKELIHOOD_TASKS = ("tiny_mc", "tiny_ppl")
GENERATION_TASKS = ("tiny_arith",)


def _evaluate(lm, task: str, limit: int | None) -> tuple[dict, float]:
    from evalsuite.suites.academic import evaluate_tasks, task_manager
    from evalsuite.tasks import task_config

    started = time.perf_counter()
    out = evaluate_tasks(lm, [task_config(task)], None, limit, 1234, task_manager(False))
    return out, time.perf_counter() - started


def _responses(out: dict, task: str) -> list:
    return [s["resps"] for s in sorted(out["samples"][task], key=lambda s: (s["doc_id"], s["filter"]))]


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
    res_o, res_t = ours["results"][task], theirs["results"][task]
    metric_diff = {k: abs(float(res_o[k]) - float(res_t[k])) for k in res_o if "," in k and "stderr" not in k}
    a, b = _responses(ours, task), _responses(theirs, task)
    row = {"task": task, "metric_abs_diff": metric_diff, "max_loglikelihood_diff": _max_ll_diff(a, b)}
    if row["max_loglikelihood_diff"] is None:
        row["identical_generations"] = sum(x == y for x, y in zip(a, b, strict=True))
        row["generations"] = len(a)
    return row


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
        tokenizer = models.load_tokenizer(models.resolve_model("embedded:tiny"))
        return model, tokenizer, f"{args.shape} (seeded random weights)"
    loaded = models.load(models.resolve_model(args.model), device, args.dtype)
    return loaded.model, loaded.tokenizer, args.model


def main(argv: list[str] | None = None) -> int:
    from lm_eval.models.huggingface import HFLM

    from evalsuite.lm import EvalLM

    parser = argparse.ArgumentParser(
        prog="evalsuite bench harness", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="embedded:tiny")
    parser.add_argument("--shape", default=None, help="instead of --model: a model shape from bench e2e")
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--tasks", default=",".join(LOGLIKELIHOOD_TASKS + GENERATION_TASKS))
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
    parser.add_argument("--out", type=Path, default=Path("bench-harness"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 for both harnesses
    model, tokenizer, label = load_model(args, device)
    ours_lm = EvalLM(model, tokenizer, batch_size=args.batch_size, progress=False)
    hf_lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=args.batch_size, device=str(device))
    rows = []
    for task in args.tasks.split(","):
        for lm in (hf_lm, ours_lm):  # warm-up: dataset preparation and first-call costs stay out of the timing
            _evaluate(lm, task, 1)
        theirs, t_hf = _evaluate(hf_lm, task, args.limit)
        ours, t_ours = _evaluate(ours_lm, task, args.limit)
        row = compare(task, ours, theirs)
        row.update(lm_eval_hf_s=round(t_hf, 3), evalsuite_s=round(t_ours, 3), speedup=round(t_hf / t_ours, 2))
        rows.append(row)
        print(json.dumps(row), flush=True)
    lines = [
        f"Model: {label}, {next(model.parameters()).dtype}; device: "
        f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}; "
        f"batch size {args.batch_size}; {time.strftime('%Y-%m-%d')}",
        "",
        "| task | lm-eval HF (s) | evalsuite (s) | speedup | max metric diff | max loglikelihood diff | "
        "identical generations |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        gens = f"{r['identical_generations']}/{r['generations']}" if "generations" in r else "n/a"
        ll = "n/a" if r["max_loglikelihood_diff"] is None else f"{r['max_loglikelihood_diff']:.2e}"
        lines.append(
            f"| {r['task']} | {r['lm_eval_hf_s']} | {r['evalsuite_s']} | {r['speedup']}x | "
            f"{max(r['metric_abs_diff'].values(), default=0):.2e} | {ll} | {gens} |"
        )
    table = "\n".join(lines) + "\n"
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench-harness.json").write_text(json.dumps({"model": label, "rows": rows}, indent=2) + "\n")
    (args.out / "bench-harness.md").write_text(table)
    return 0
