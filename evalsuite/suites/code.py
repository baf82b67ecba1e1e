"""The code suite: HumanEval-format problems (prompt, test, entry point), completions from `EvalLM`, each
executed in the sandbox, scored by the unbiased pass@k estimator.

    problems = load_problems("tiny_code")                 # a built-in set, or a path to HumanEval JSONL
    result = run_code_task(lm, "tiny_code", problems, suite_config, seed=1234)

n samples per problem (n = 1 with temperature 0 is greedy pass@1); every k must be <= n.
"""

from __future__ import annotations

import json
import logging
import os
from math import comb
from pathlib import Path

from lm_eval.api.instance import Instance

from evalsuite import stats
from evalsuite.config import CodeSuite
from evalsuite.errors import UserError
from evalsuite.hashing import text_digest
from evalsuite.jsonl import read_jsonl
from evalsuite.reports import format as fmt
from evalsuite.suites import sandbox
from evalsuite.suites.academic import MetricResult, TaskResult
from evalsuite.suites.base import ModelContext, Section, Suite, SuiteRun
from evalsuite.tasks import HERE as TASKS_DIR

log = logging.getLogger("evalsuite")
STOP = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]  # HumanEval's stop sequences
FIELDS = ("task_id", "prompt", "test", "entry_point")


class CodeTaskError(UserError, ValueError):
    pass


def builtin_code_tasks() -> dict[str, Path]:
    return {p.stem: p for p in sorted((TASKS_DIR / "code").glob("*.jsonl"))}


def load_problems(name_or_path: str) -> list[dict]:
    """Problems from a built-in code task or a HumanEval-format JSONL file, checked line by line."""
    builtin = builtin_code_tasks()
    path = builtin.get(name_or_path) or Path(name_or_path)
    if not path.is_file():
        raise CodeTaskError(f"code task {name_or_path!r} is neither built in ({', '.join(builtin)}) nor a JSONL file")
    problems = []
    for number, row in read_jsonl(path, CodeTaskError):
        missing = [f for f in FIELDS if f not in row]
        if missing:
            raise CodeTaskError(f"{path}:{number}: missing field(s) {', '.join(missing)} (HumanEval format)")
        if not isinstance(row["entry_point"], str) or not row["entry_point"].isidentifier():
            raise CodeTaskError(
                f"{path}:{number}: entry_point {row['entry_point']!r} is not a Python identifier: give the name of "
                "the function the test calls"
            )
        try:
            compile(row["test"], f"{path}:{number} (test)", "exec")
        except SyntaxError as err:
            raise CodeTaskError(f"{path}:{number}: the test does not compile ({err.msg}, line {err.lineno})") from None
        problems.append(row)
    if not problems:
        raise CodeTaskError(f"{path}: holds no problems")
    return problems


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimator 1 - C(n - c, k) / C(n, k) of the chance that one of k samples passes."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def sandbox_limits(suite: CodeSuite) -> tuple[sandbox.Limits, str | None]:
    """The limits to run with, and the fallback taken (recorded in the results), if any."""
    limits = sandbox.Limits(timeout_s=suite.timeout_s, sandbox_uid=None if suite.run_as == "root" else 65534)
    if os.geteuid() != 0 or suite.run_as == "root":
        return limits, None
    try:
        probe = sandbox.run_check("def f():\n    return 1\n", "def check(c):\n    assert c() == 1\n", "f", limits)
        if probe.status == "passed":
            return limits, None
        problem = probe.reason
    except sandbox.SandboxError as err:
        problem = str(err)
    if suite.run_as == "nobody":
        raise CodeTaskError(
            f"suites.code.run_as is nobody, but uid 65534 could not run a trivial program here ({problem}); make "
            "the Python installation readable by every user, or set suites.code.run_as: auto (runs candidates "
            "as root where it must, and records it)"
        )
    reason = (
        f"candidates run as root: the unprivileged sandbox user could not run a trivial program ({problem}); "
        "set suites.code.run_as: nobody to make this an error instead"
    )
    log.warning("code suite: %s", reason)
    return sandbox.Limits(timeout_s=suite.timeout_s, sandbox_uid=None), reason


def run_code_task(lm, name: str, problems: list[dict], suite: CodeSuite, seed: int, limits, fallback) -> TaskResult:
    lm.task_name = name
    problems = problems[: suite.limit] if suite.limit else problems
    sampling = suite.temperature > 0
    requests = []
    for p in problems:
        for i in range(suite.n):
            kwargs = {"until": STOP, "max_gen_toks": suite.max_gen_toks, "do_sample": sampling}
            if sampling:
                kwargs.update(temperature=suite.temperature, top_p=suite.top_p, seed=seed + i)
            requests.append(Instance("generate_until", p, (p["prompt"], kwargs), len(requests)))
    completions = lm.generate_until(requests)
    items = [
        (r.doc["prompt"] + c, r.doc["test"], r.doc["entry_point"]) for r, c in zip(requests, completions, strict=True)
    ]
    verdicts = sandbox.execute_many(items, limits, workers=suite.workers)

    samples, counts = [], {"passed": 0, "failed": 0, "timeout": 0}
    for index, p in enumerate(problems):
        mine = verdicts[index * suite.n : (index + 1) * suite.n]
        passed = sum(v.status == "passed" for v in mine)
        for v in mine:
            counts[v.status] += 1
        settings = json.dumps(requests[index * suite.n].args[1], sort_keys=True)
        record = {
            "doc_id": index,
            "filter": "none",
            "task_id": p["task_id"],
            "prompt": p["prompt"],
            "prompt_hash": text_digest(p["prompt"] + settings),
            "completions": completions[index * suite.n : (index + 1) * suite.n],
            "statuses": [v.status for v in mine],
            "reasons": [v.reason for v in mine],
            "prediction": completions[index * suite.n],
            "target": p.get("canonical_solution", ""),
        }
        for k in suite.k:
            record[f"pass@{k}"] = pass_at_k(suite.n, passed, k)
        samples.append(record)
    metrics = {}
    for k in suite.k:
        values = [s[f"pass@{k}"] for s in samples]
        err = stats.stderr(stats.values_of("pass", values), 0, seed)
        metrics[f"pass@{k}"] = MetricResult(f"pass@{k}", sum(values) / len(values), err, True, len(values), True)
    details = {**counts, "samples_per_problem": suite.n, "isolation": verdicts[0].isolation if verdicts else {}}
    if fallback:
        details["fallback"] = fallback
    primary, reason = f"pass@{min(suite.k)}", "pass@k at the smallest k the suite asks for"
    return TaskResult(name, task_key(name, problems, suite), "1", metrics, primary, samples, details, reason)


def task_key(name: str, problems: list[dict], suite: CodeSuite) -> str:
    """What a code task's results depend on besides the model: its problems (as limited) and the settings."""
    problems = problems[: suite.limit] if suite.limit else problems
    return f"{name}:{text_digest(json.dumps([name, problems, suite.model_dump()], sort_keys=True))}"


class Code(Suite):
    """Completions executed in the sandbox, scored per task by pass@k: recovery rows like academic tasks."""

    name, title = "code", "Code execution"
    Spec = CodeSuite

    def plan(self) -> None:
        self.problems = {Path(name).stem: load_problems(name) for name in self.spec.tasks}

    def check_environment(self) -> None:
        self.limits, self.fallback = sandbox_limits(self.spec)

    def evaluate(self, ctx: ModelContext) -> SuiteRun:
        from evalsuite import task_results

        out, seed, iters = SuiteRun(), ctx.config.run.seed, ctx.config.run.bootstrap_iters
        for name, problems in self.problems.items():
            calls = ctx.lm.model_calls
            settings = (seed, iters, repr(self.limits), self.fallback)
            result = task_results.cached(
                ctx.store, ctx.key, task_key(name, problems, self.spec), *settings
            ) or task_results.stored(
                ctx.store,
                ctx.key,
                run_code_task(ctx.lm, name, problems, self.spec, seed, self.limits, self.fallback),
                *settings,
            )
            out.tasks[name] = result
            out.model_calls[name] = ctx.lm.model_calls - calls
        return out

    @classmethod
    def report(cls, data: dict) -> Section | None:
        rows = []
        recovery = {(r["variant"], r["task"], r["metric"]): r for r in data.get("recovery", []) if r["scope"] == "task"}
        for v, per_suite in data.get("details", {}).items():
            for name, d in per_suite.get("code", {}).items():
                scores = []
                for m in data.get("metrics", []):
                    if (m["suite"], m["task"], m["variant"]) != ("code", name, v):
                        continue
                    r = recovery.get((v, name, m["metric"]))
                    parts = [] if r is None else [fmt.pct(r["recovery"]), fmt.interval(r["ci_low"], r["ci_high"])]
                    rec = f" ({' '.join(p for p in parts if p)})" if parts else ""
                    scores.append(f"{m['metric']} {m['value']:.3f}{rec}")
                cells = [str(d["passed"]), str(d["failed"]), str(d["timeout"]), d["isolation"].get("user", "")]
                rows.append([v, name, "; ".join(scores), *cells])
        header = ["variant", "task", "pass@k (recovery)", "passed", "failed", "timeouts", "sandbox user"]
        return Section("code", cls.title, header, rows) if rows else None
