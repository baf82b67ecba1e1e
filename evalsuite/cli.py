"""The `evalsuite` command: a thin layer over the Python API. Imports stay lazy so that `--help` and config
errors never load torch, Triton or lm-eval.

    evalsuite run [SUITE.yaml | builtin-name]      # no argument: the demo suite on embedded:tiny
    evalsuite report RUN_DIR
    evalsuite gate RUN_DIR (--min-recovery 99 | --config gate.yaml) [--use lower_bound]
    evalsuite list tasks|schemes|suites
    evalsuite export SUITE --variant NAME --out DIR
    evalsuite explain RUN_DIR --variant NAME [--by layer|block|type] [--measure bisect|alone|without] [--budget CALLS]
    evalsuite fix RUN_DIR --gate gate.yaml [--variant NAME] [--keep-as float|SCHEME] [--measure bisect|alone|without]
    evalsuite bench kernels|e2e|harness [options]
    evalsuite train --recipe NAME --steps N --out DIR [--from MODEL]
    evalsuite scaling-fit --out DIR [--sweep sweep.json] [--speedup PRECISION=RATIO ...]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from evalsuite.errors import user_errors

EXIT_ERROR = 2


def _print_recovery(data: dict) -> None:
    from evalsuite.reports.markdown import table
    from evalsuite.reports.view import build_view

    view = build_view(data)
    print("\n" + table(view.recovery))
    for line in view.summary:
        print(f"  {line}")


def cmd_run(args) -> int:
    from evalsuite.config import load_suite, parse_suite

    config = load_suite(args.suite)
    overrides = {
        "device": args.device,
        "backend": args.backend,
        "fp8_accumulation": args.fp8_accumulation,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "noise_floor": True if args.noise_floor else None,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if overrides or args.model:
        data = config.model_dump(exclude={"source"})
        data["run"] = {**data["run"], **overrides}
        if args.model:
            data["model"] = {**data["model"], "path": args.model}
        config = parse_suite(data, config.source)

    from evalsuite.api import evaluate
    from evalsuite.runner import default_run_dir

    args.out = args.out or str(default_run_dir(config))  # named if the run is interrupted
    results = evaluate(config, out_dir=args.out)
    if not results.data:  # a distributed run's other ranks: rank 0 reports
        return 0
    _print_recovery(results.data)
    folder = results.path.parent
    print(f"\nresults: {results.path}\nreports: {folder / 'report.md'}\n         {folder / 'report.html'}")
    return 0


def cmd_report(args) -> int:
    from evalsuite.reports import render_reports
    from evalsuite.results import load

    if len(args.run_dirs) > 1:
        from evalsuite.reports.compare import render_comparison

        for run_dir in args.run_dirs:
            load(run_dir)  # each must be a readable run: a clear error otherwise
        md, html = render_comparison(args.run_dirs, args.out)
        print(md.read_text())
        print(f"comparison: {md}\n            {html}")
        return 0
    results = load(args.run_dirs[0])
    md, html = render_reports(results.path)
    _print_recovery(results.data)
    print(f"\nreports: {md}\n         {html}")
    return 0


def cmd_gate(args) -> int:
    from evalsuite import gating as gate
    from evalsuite.api import gate as decide

    if (args.min_recovery is None) == (args.config is None):
        print("error: give exactly one of --min-recovery PERCENT or --config gate.yaml", file=sys.stderr)
        return EXIT_ERROR
    use = args.use or "point"
    try:
        if args.config:
            config = gate.load_gate_config(args.config)
            config = config.model_copy(update={"use": args.use}) if args.use else config
        else:
            config = gate.min_recovery_config(args.min_recovery, use)
        use = config.use
        outcome = decide(args.run_dir, config)
    except user_errors() as err:  # still a JUnit error case and a step summary: CI shows why it could not decide
        outcome = gate.GateOutcome(errors=[str(err)])
    print(gate.format_outcome(outcome, use))
    junit = Path(args.junit) if args.junit else Path(args.run_dir) / "gate-junit.xml"
    gate.publish(outcome, use, junit, os.environ.get("GITHUB_STEP_SUMMARY"))
    print(f"junit: {junit}")
    return outcome.exit_code


def cmd_export(args) -> int:
    from evalsuite.config import load_suite
    from evalsuite.exporting import export_variant

    path = export_variant(load_suite(args.suite), args.variant, args.out)
    print(f"exported {args.variant} as a compressed-tensors checkpoint: {path}")
    return 0


def _probe(args, variant: str, gate):
    from evalsuite.fixing import failing_tasks
    from evalsuite.probing import Probe, load_failed_run

    failed = load_failed_run(args.run_dir, variant, args.suite)
    tasks = failing_tasks(failed.data, variant, gate)
    keep = getattr(args, "keep_as", "float")
    return failed, Probe(failed, tasks, args.docs, args.budget, None if keep == "float" else keep)


def cmd_explain(args) -> int:
    from evalsuite import gating
    from evalsuite.fixing import write_explanation
    from evalsuite.sensitivity import explain, format_explanation

    gate = gating.load_gate_config(args.gate) if args.gate else None
    failed, probe = _probe(args, args.variant, gate)
    result = explain(probe, args.by, measure=args.measure)
    print(format_explanation(result))
    print(f"written: {write_explanation(failed, result)}")
    _rerender(args.run_dir)
    return 0 if result["findings"] else 1


def _rerender(run_dir: str) -> None:
    """The run's reports again: they show the explanation and the recipe first."""
    from evalsuite.reports import render_reports

    md, _ = render_reports(Path(run_dir) / "results.json")
    print(f"report: {md}")


def cmd_fix(args) -> int:
    from evalsuite import gating
    from evalsuite.fixing import failing_variants, fix, format_fix
    from evalsuite.results import load

    gate = gating.load_gate_config(args.gate)
    data = load(args.run_dir).data
    variants = [args.variant] if args.variant else failing_variants(data, gate)
    if not variants:
        print(f"every variant of {args.run_dir} passes {args.gate}: nothing to fix")
        return 0
    passed = True
    for variant in variants:
        failed, probe = _probe(args, variant, gate)
        result = fix(failed, gate, probe, args.by, args.keep_as, args.measure)
        print(format_fix(result))
        passed = passed and result["passed"]
    _rerender(args.run_dir)
    return 0 if passed else 1


def cmd_list(args) -> int:
    if args.what == "schemes":
        from evalsuite.quant_schemes import PRESETS

        for name, scheme in PRESETS.items():
            print(f"{name:18s} {scheme.describe()}")
    elif args.what == "suites":
        from evalsuite.config import builtin_suites

        for name, path in builtin_suites().items():
            print(f"{name:18s} {path}")
    else:
        from evalsuite.tasks import builtin_tasks

        print("built-in tasks (local data):")
        for name, path in builtin_tasks().items():
            print(f"  {name:16s} {path}")
        if args.all:
            from evalsuite.suites.academic import task_manager

            print("lm-eval tasks (need their datasets, or a local copy):")
            for name in task_manager(True).all_tasks:
                print(f"  {name}")
        else:
            print("(`evalsuite list tasks --all` adds every lm-eval task name)")
    return 0


BENCHES = {
    "kernels": "evalsuite.kernels.bench",
    "e2e": "evalsuite.bench_e2e",
    "harness": "evalsuite.bench_harness",
}


def cmd_bench(args) -> int:
    import importlib

    return importlib.import_module(BENCHES[args.what]).main(args.rest)


TRAIN_FLAGS = {  # flag -> (TrainSettings field, type, help); a flag left out keeps the field's default
    "--from": ("base", str, "a model to continue training (a directory or embedded:tiny); default: from scratch"),
    "--batch": ("batch", int, "rows per step (default 8)"),
    "--seq-len": ("seq_len", int, "tokens per row (default 128)"),
    "--seed": ("seed", int, "seeds the weights, the data order and stochastic rounding (default 0)"),
    "--lr": ("lr", float, "peak learning rate (default 1e-3)"),
    "--schedule": ("schedule", str, "cosine (linear warmup, then down to 5%%; the default) or constant"),
    "--warmup": ("warmup", int, "warmup steps of the cosine schedule (default 10)"),
    "--weight-decay": ("weight_decay", float, "AdamW weight decay on matrices (default 0.05)"),
    "--hidden": ("hidden", int, "from scratch: hidden size (default 256)"),
    "--layers": ("layers", int, "from scratch: decoder layers (default 4)"),
    "--intermediate": ("intermediate", int, "from scratch: SwiGLU width (default 768)"),
    "--heads": ("heads", int, "from scratch: attention heads (default 4)"),
    "--device": ("device", str, "cpu (default), cuda or cuda:N"),
    "--backend": (
        "backend",
        str,
        "torch-ref (quantize references, emulated GEMMs) or triton (our quantize and GEMM kernels); "
        "default: triton on CUDA, torch-ref on CPU",
    ),
    "--threads": ("threads", int, "CPU threads (default 2); part of what makes a run repeatable"),
    "--save-dtype": ("save_dtype", str, "dtype of the saved weights: bfloat16 (default), float16, float32"),
}


def cmd_train(args) -> int:
    import json

    from evalsuite.training.loop import parse_settings

    fields = {"recipe": args.recipe, "steps": args.steps}
    fields |= {name: getattr(args, name) for name, _, _ in TRAIN_FLAGS.values() if getattr(args, name) is not None}
    if args.no_clip:
        fields["clip"] = None
    settings = parse_settings(fields)  # checked before any model loads

    from evalsuite.training.loop import train

    result = train(settings, out=Path(args.out), log_every=args.log_every)
    summary = json.loads((Path(args.out) / "training.json").read_text())
    print(
        f"{settings.recipe}: {summary['description']}; {settings.steps} steps, {summary['tokens']} tokens, "
        f"final loss {summary['final_loss']:.4f}, {result.seconds:.1f} s"
    )
    print(f"checkpoint: {args.out}  (a suite variant: {{name: {settings.recipe}, path: {args.out}}})")
    return 0


def _speedups(pairs: list[str]) -> dict[str, float]:
    from evalsuite.errors import UserError

    out = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        try:
            out[name] = float(value)
        except ValueError:
            raise UserError(f"--speedup {pair!r}: write PRECISION=RATIO, e.g. mxfp4-quartet=1.8") from None
        if out[name] <= 0:
            raise UserError(f"--speedup {pair!r}: the ratio must be positive")
    return out


def cmd_scaling_fit(args) -> int:
    import json

    from evalsuite.errors import UserError

    speedups = _speedups(args.speedup)
    out = Path(args.out)
    from evalsuite.training import scaling

    if args.sweep:
        try:
            rows = json.loads(Path(args.sweep).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(f"{args.sweep}: cannot read the sweep ({err})") from None
        points = scaling.points_from_json(rows.get("points", rows) if isinstance(rows, dict) else rows, args.sweep)
    else:
        points = scaling.run_sweep(args.hidden, args.steps, [args.base, *args.precision], seed=args.seed)
    out.mkdir(parents=True, exist_ok=True)
    law = scaling.fit(points, args.base)
    intervals = scaling.bootstrap(points, args.base, iters=args.bootstrap_iters, seed=args.seed)
    budgets = [10.0**e for e in range(9, 16)]
    optimal = scaling.compute_optimal(law, speedups, budgets)
    result = {"points": scaling.points_to_json(points), "fit": law, "intervals": intervals, "speedups": speedups,
              "compute_optimal": optimal}  # fmt: skip
    (out / "scaling-fit.json").write_text(json.dumps(result, indent=1) + "\n")
    scaling.plot(points, law, out / "scaling-fit.png")
    (out / "scaling-fit.md").write_text(scaling.markdown(points, law, intervals, speedups, optimal))
    terms = f"{law['A']:.3g}/(N m_N)^{law['alpha']:.3f} + {law['B']:.3g}/(D m_D)^{law['beta']:.3f}"
    lines = [f"L = {law['E']:.3f} + {terms}   (rmse {law['rmse']:.4f} over {len(points)} points)"]
    for p in law["m_N"]:
        lo_n, hi_n = intervals[f"m_N:{p}"]
        lo_d, hi_d = intervals[f"m_D:{p}"]
        lines.append(f"{p}: m_N {law['m_N'][p]:.3f} [{lo_n:.3f}, {hi_n:.3f}]  m_D {law['m_D'][p]:.3f} "
                     f"[{lo_d:.3f}, {hi_d:.3f}]  speed {speedups.get(p, 1.0):.3f}x")  # fmt: skip
    for row in optimal:
        even = ", ".join(f"{p} needs {s:.2f}x" if s else f"{p}: never" for p, s in row["break_even_speedup"].items())
        lines.append(
            f"budget {row['budget_flops']:.0e} FLOPs: compute-optimal {row['compute_optimal']} ({even} to tie)"
        )
    (out / "scaling-fit.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote scaling-fit.json, .png, .txt and .md in {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evalsuite", description="How much accuracy does a quantized LLM keep? Evaluate, report, gate."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="evaluate the baseline and its variants (default: the demo suite)")
    run.add_argument("suite", nargs="?", default=None, help="suite YAML file or built-in suite name (default: demo)")
    run.add_argument("--out", default=None, help="run directory (default: run.out_dir, else evalsuite-runs/NAME)")
    run.add_argument("--model", default=None, help="model.path: a Hugging Face model directory (or embedded:tiny)")
    run.add_argument("--device", default=None, help="run.device: auto, cpu, cuda, cuda:N")
    run.add_argument("--backend", default=None, help="run.backend: auto, triton, torch-ref or a registered backend")
    run.add_argument(
        "--fp8-accumulation",
        default=None,
        choices=["fast", "precise"],
        help="run.fp8_accumulation: how the Triton fp8 GEMM sums on Hopper (fast: as deployed, the default)",
    )
    run.add_argument("--batch-size", type=int, default=None, help="run.batch_size")
    run.add_argument("--seed", type=int, default=None, help="run.seed")
    run.add_argument(
        "--noise-floor",
        action="store_true",
        help="run.noise_floor: also score the baseline against itself at another batch size (and each variant "
        "against the other kernel backend) to show how much of a delta is noise",
    )
    run.set_defaults(func=cmd_run)

    report = sub.add_parser(
        "report", help="render report.md and report.html for a run directory; with several, compare them"
    )
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    report.add_argument("--out", default=".", help="where the comparison of several runs goes (default: here)")
    report.set_defaults(func=cmd_report)

    gate = sub.add_parser("gate", help="exit 0 if recovery meets the thresholds, 1 if not, 2 if undecidable")
    gate.add_argument("run_dir")
    gate.add_argument("--min-recovery", type=float, default=None, help="percent, for every primary row (e.g. 99)")
    gate.add_argument("--config", default=None, help="gate.yaml with per-suite/task/metric thresholds")
    gate.add_argument(
        "--use",
        choices=["point", "lower_bound"],
        default=None,
        help="decide on the point estimate (default) or the 95%% interval's lower bound",
    )
    gate.add_argument("--junit", default=None, help="JUnit XML path (default: RUN_DIR/gate-junit.xml)")
    gate.set_defaults(func=cmd_gate)

    bench = sub.add_parser(
        "bench",
        help="benchmarks: kernels (our kernels vs torch's ops), e2e (variant speed and memory), harness (vs lm-eval)",
    )
    bench.add_argument("what", choices=list(BENCHES))
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="options of the benchmark (see `bench kernels -h`)")
    bench.set_defaults(func=cmd_bench)

    export = sub.add_parser("export", help="write a variant as a compressed-tensors checkpoint")
    export.add_argument("suite", help="suite YAML file or built-in suite name")
    export.add_argument("--variant", required=True, help="the variant's name in the suite")
    export.add_argument("--out", required=True, help="the checkpoint directory to write")
    export.set_defaults(func=cmd_export)

    train = sub.add_parser(
        "train", help="train or continue training a model with a precision recipe; writes a checkpoint directory"
    )
    train.add_argument("--recipe", required=True, help="bf16, fp8, fp8-tensor, fp8-smooth, fp8-tensor-smooth, "
                       "fp8-smooth-adam8 or mxfp4-quartet")  # fmt: skip
    train.add_argument("--steps", required=True, type=int, help="optimizer steps")
    train.add_argument("--out", required=True, help="the checkpoint directory to write")
    for flag, (dest, kind, text) in TRAIN_FLAGS.items():
        train.add_argument(flag, dest=dest, type=kind, default=None, help=text)
    train.add_argument("--no-clip", action="store_true", help="no gradient clipping (default: clip the norm at 1)")
    train.add_argument("--log-every", type=int, default=10, help="log the loss every N steps (0: never)")
    train.set_defaults(func=cmd_train)

    fit = sub.add_parser(
        "scaling-fit", help="fit a loss law with precision-dependent effective parameters and data over a sweep"
    )
    fit.add_argument("--out", required=True, help="where scaling-fit.json and scaling-fit.png go")
    fit.add_argument("--sweep", default=None, help="a sweep already run (its scaling-fit.json); default: run one")
    fit.add_argument("--base", default="bf16", help="the reference precision (m_N = m_D = 1; default bf16)")
    fit.add_argument("--precision", nargs="+", default=["mxfp4-quartet"], help="the other recipes to sweep")
    fit.add_argument("--hidden", nargs="+", type=int, default=[32, 64, 96], help="hidden sizes of the sweep")
    fit.add_argument("--steps", nargs="+", type=int, default=[25, 50, 100], help="steps (x 256 tokens) of the sweep")
    fit.add_argument("--speedup", nargs="*", default=[], help="PRECISION=RATIO: GEMM throughput over the base's")
    fit.add_argument("--bootstrap-iters", type=int, default=200)
    fit.add_argument("--seed", type=int, default=0)
    fit.set_defaults(func=cmd_scaling_fit)

    for name, helptext in (
        ("explain", "rank the layers that cause a variant's loss, by re-running it with each restored"),
        ("fix", "find the fewest layers to keep in higher precision so that a failed variant passes the gate"),
    ):
        cmd = sub.add_parser(name, help=helptext)
        cmd.add_argument("run_dir", metavar="RUN_DIR")
        cmd.add_argument(
            "--variant",
            required=name == "explain",
            default=None,
            help="the variant (fix: default, every variant that fails the gate)",
        )
        cmd.add_argument(
            "--gate",
            required=name == "fix",
            default=None,
            help="gate.yaml: its failed checks name the tasks measured (explain: default, the tasks under 100%%)",
        )
        cmd.add_argument(
            "--by",
            choices=["layer", "block", "type"],
            default="layer",
            help="restore each layer, each decoder block, or each layer type (all down_proj) at once",
        )
        cmd.add_argument(
            "--measure",
            choices=["bisect", "alone", "without"],
            default="bisect",
            help="bisect: halve the candidates when there are more than 8 groups (fewer are each restored alone); "
            "alone: restore every group on its own; without: leave each group quantized with all the others "
            "restored, for losses that several groups cause together (alone and without: one trial per group)",
        )
        cmd.add_argument("--docs", type=int, default=64, help="documents per task (and fidelity texts) measured")
        cmd.add_argument("--budget", type=int, default=2000, help="most model calls (forward passes) to spend")
        cmd.add_argument("--suite", default=None, help="the run's suite file, if not where results.json says")
        if name == "fix":
            cmd.add_argument(
                "--keep-as",
                default="float",
                help="what restored layers become: float (the baseline's precision) or a weight preset such as W8A16",
            )
        cmd.set_defaults(func=cmd_explain if name == "explain" else cmd_fix)

    lst = sub.add_parser("list", help="list built-in tasks, scheme presets or suites")
    lst.add_argument("what", choices=["tasks", "schemes", "suites"])
    lst.add_argument("--all", action="store_true", help="with tasks: include every lm-eval task name")
    lst.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        out = getattr(args, "out", None) or "the run directory"
        print(
            f"\ninterrupted: every finished batch is saved in {out}; run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    except user_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_ERROR
