"""Re-running a failed variant with some of its layers restored, on a fixed subset of the run's documents,
through the runner and the failed run's own store (nothing is computed twice), under a budget of model calls.

    failed = load_failed_run("evalsuite-runs/demo", "INT3-g128")
    probe = Probe(failed, tasks, docs=64, budget=2000)
    [measured] = probe.measure([["model.layers.1.mlp.down_proj"]])   # its recovery and KLD on the subset
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from evalsuite.config import SuiteConfig, VariantSpec, load_suite, parse_suite
from evalsuite.errors import UserError
from evalsuite.gating import GateConfig, evaluate_gate
from evalsuite.hashing import digest
from evalsuite.results import RESULTS_FILE
from evalsuite.variants import depends_on_calibration

log = logging.getLogger("evalsuite")


class ExplainError(UserError, ValueError):
    pass


class BudgetExhausted(UserError, RuntimeError):
    """The next measurement would pass the budget of model calls; what was measured so far is kept."""


@dataclass
class FailedRun:
    run_dir: Path
    config: SuiteConfig
    data: dict
    spec: VariantSpec

    @property
    def layers(self) -> list[dict]:
        return self.data["variants"][self.spec.name].get("layers") or []


def load_failed_run(run_dir: str | Path, variant: str, suite: str | Path | None = None) -> FailedRun:
    """The run's results and the suite it ran (its suite file, with the model, batch size, seed and backend the
    run recorded); the variant must be one it quantized itself."""
    run_dir = Path(run_dir)
    path = run_dir / RESULTS_FILE
    if not path.is_file():
        raise ExplainError(f"{run_dir} holds no {RESULTS_FILE}: run `evalsuite run` into it first")
    data = json.loads(path.read_text())
    prov = data.get("provenance", {})
    suite = suite or prov.get("suite_file")
    if not suite or suite == "<dict>" or not Path(suite).is_file():
        raise ExplainError(
            f"{path} names suite file {suite!r}, which is not here; give it with --suite SUITE.yaml (the file the "
            "run was made from)"
        )
    config = load_suite(suite)
    raw = config.model_dump(exclude={"source"})
    raw["model"]["path"] = data["model"]["path"]
    raw["run"].update({k: prov[k] for k in ("batch_size", "seed", "bootstrap_iters") if k in prov})
    raw["run"]["backend"] = prov.get("backend", raw["run"]["backend"])
    config = parse_suite(raw, config.source)
    spec = next((v for v in config.variants if v.name == variant), None)
    if spec is None or variant not in data.get("variants", {}):
        names = ", ".join(v for v in data.get("variants", {}) if v != "baseline")
        raise ExplainError(f"{run_dir}: no variant {variant!r} in the run; it has: {names}")
    if spec.path is not None:
        raise ExplainError(f"variant {variant!r} is a checkpoint ({spec.path}); explain works on variants it quantizes")
    if spec.rotation or spec.algorithm not in ("rtn", "gptq"):
        raise ExplainError(
            f"variant {variant!r} uses {spec.rotation or spec.algorithm}, which changes layers beyond the ones "
            "restored; explain and fix work on rtn and gptq variants"
        )
    return FailedRun(run_dir, config, data, spec)


def restored_overrides(names: list[str], keep: str | dict = "float") -> list[dict]:
    """One override per restored layer, by its full name (first in the list: they win over the scheme's own)."""
    return [{"layers": n, "scheme": keep} for n in sorted(names)]


@dataclass
class Measured:
    """One variant on the subset: each failing task's recovery (point and 95% interval), the KLD against the
    baseline, and the model calls it cost."""

    restored: list[str]
    name: str
    recovery: dict[str, tuple[float, float | None, float | None]]
    kld: float | None
    calls: int
    screened: bool | None = None  # the probe's gate on the subset, at the point estimate (None: no gate given)

    def gaps(self, at: str = "point") -> dict[str, float]:
        """Recovery lost on each failing task (1 - recovery, at least 0), at the point or an end of the interval."""
        index = {"point": 0, "low": 1, "high": 2}[at]
        return {t: max(0.0, 1.0 - (r[index] if r[index] is not None else r[0])) for t, r in self.recovery.items()}

    def gap(self, at: str = "point") -> float:
        """Recovery lost over the failing tasks (sum of 1 - recovery, each at least 0)."""
        return sum(self.gaps(at).values())


@dataclass
class Probe:
    """Measures restored copies of the failed variant. Every call of `measure` is one run of the runner into
    RUN_DIR/explain/VARIANT/step-N on the failed run's store; the variant itself comes from that store."""

    failed: FailedRun
    tasks: list[str]
    docs: int
    budget: int
    scheme_for_restored: str | dict | None = None  # None: float (the baseline's precision)
    spent: int = 0
    steps: int = 0
    history: list[Measured] = field(default_factory=list)
    per_trial: int | None = None  # model calls of one measurement, as first estimated then observed
    gate: GateConfig | None = None  # when given, each measurement also says whether the subset passes it

    def config(self, variants: list[dict]) -> SuiteConfig:
        raw = self.failed.config.model_dump(exclude={"source"})
        academic = raw["suites"].get("academic")
        suites = {}
        if academic and self.tasks:
            tasks = [{**t, "limit": min(t.get("limit") or self.docs, self.docs)} for t in academic["tasks"]]
            suites["academic"] = {**academic, "tasks": [t for t in tasks if t["name"] in self.tasks]}
        fidelity = raw["suites"].get("fidelity")
        if fidelity:
            suites["fidelity"] = {**fidelity, "limit": min(fidelity.get("limit") or self.docs, self.docs)}
        if not suites:
            raise ExplainError("the run has no academic task that lost accuracy and no fidelity suite to measure KLD")
        raw["suites"] = suites
        raw["variants"] = variants
        raw["run"].update({"out_dir": None, "measure_speed": False, "noise_floor": False})
        if not depends_on_calibration(self.failed.spec.algorithm, self.failed.spec.resolved_scheme):
            # calibration would only measure SQNR again, which the failed run already holds: skip it
            raw["run"]["calibration"] = None
            raw["variants"] = [{**v, "calibration": None} for v in variants]
        return parse_suite(raw, self.failed.config.source)

    def restored_spec(self, restored: list[str]) -> dict:
        spec = self.failed.spec
        scheme = spec.resolved_scheme.model_dump()
        keep = "float" if self.scheme_for_restored is None else self.scheme_for_restored
        if restored:
            scheme["overrides"] = restored_overrides(restored, keep) + list(scheme.get("overrides", ()))
        name = spec.name if not restored else f"{spec.name}.r{digest([sorted(restored), keep])[:8]}"
        return {**spec.model_dump(exclude={"scheme", "overrides", "name"}), "name": name, "scheme": scheme}

    def estimate(self) -> int:
        """Model calls of one measurement: observed once one ran, else the failed run's own calls on these
        tasks scaled to the subset."""
        if self.per_trial is not None:
            return self.per_trial
        record = self.failed.data["variants"][self.failed.spec.name]
        sizes = {(m["suite"], m["task"]): m["n"] for m in self.failed.data["metrics"] if m["variant"] == "baseline"}
        total = 0.0
        for key, calls in (record.get("model_calls_by_task") or {}).items():
            suite, _, task = key.partition("/")
            if suite == "fidelity" or task in self.tasks:
                total += calls * min(1.0, self.docs / max(1, sizes.get((suite, task), self.docs)))
        return max(1, round(total))

    def measure(self, restored_sets: list[list[str]]) -> list[Measured]:
        from evalsuite.runner import run_suite

        todo = [sorted(r) for r in restored_sets]
        new = [r for r in todo if r and not any(h.restored == r for h in self.history)]
        new = [r for i, r in enumerate(new) if r not in new[:i]]
        if new and self.spent + self.estimate() * len(new) > self.budget:
            raise BudgetExhausted(
                f"the budget of {self.budget} model calls is spent ({self.spent} used; {len(new)} more "
                f"measurement(s) need about {self.estimate() * len(new)})"
            )
        if new or not any(h.restored == [] for h in self.history):
            variants = [self.restored_spec([])] + [self.restored_spec(r) for r in new]
            self.steps += 1
            out = self.failed.run_dir / "explain" / self.failed.spec.name / f"step-{self.steps:02d}"
            log.info("measuring %d restored cop%s on the subset", len(new), "y" if len(new) == 1 else "ies")
            data = run_suite(self.config(variants), out, store_path=self.failed.run_dir / "store.sqlite").data
            self._check_same_variant(data)
            calls = {n: v.get("model_calls") or 0 for n, v in data["variants"].items()}
            self.spent += sum(calls.values())
            for spec, r in zip(variants[1:], new, strict=True):
                self.history.append(self._measured(data, spec["name"], r, calls[spec["name"]]))
            if not any(h.restored == [] for h in self.history):
                self.history.append(self._measured(data, self.failed.spec.name, [], calls[self.failed.spec.name]))
            if new:  # never below the first estimate: a trial served from the store cost nothing this time
                self.per_trial = max([self.estimate()] + [calls[s["name"]] for s in variants[1:]])
        return [next(h for h in self.history if h.restored == r) for r in todo]

    def reference(self, base: list[str]) -> Measured:
        """The variant with `base` restored (nothing: the failed variant itself, from the store)."""
        return self.measure([base])[0]

    def _check_same_variant(self, data: dict) -> None:
        name = self.failed.spec.name
        then, now = self.failed.data["variants"][name].get("model_key"), data["variants"][name].get("model_key")
        if then != now:
            raise ExplainError(
                f"variant {name!r} now has model key {now}, the run had {then}: the suite file or evalsuite changed "
                "since the run; rerun it (evalsuite run) before explaining it"
            )

    def _measured(self, data: dict, name: str, restored: list[str], calls: int) -> Measured:
        rows = [r for r in data["recovery"] if r["variant"] == name and r["scope"] == "task" and r["primary"]]
        recovery = {
            r["task"]: (r["recovery"], r.get("ci_low"), r.get("ci_high"))
            for r in rows
            if r["task"] in self.tasks and r["recovery"] is not None
        }
        fidelity = (data.get("suites") or {}).get("fidelity", {}).get(name, {})
        klds = [t["kld_mean"] for t in fidelity.values() if t.get("kld_mean") is not None]
        kld = sum(klds) / len(klds) if klds else None
        return Measured(restored, name, recovery, kld, calls, self._screen(data, name))

    def _screen(self, data: dict, name: str) -> bool | None:
        """The gate's rules on the subset, for this copy, at the point estimate: the subset's intervals are
        wider than the full run's, so it screens candidates and the full run decides on the gate's terms."""
        if self.gate is None:
            return None
        old = self.failed.spec.name
        rules = [
            r.model_copy(update={"variant": name if r.variant == old else r.variant, "use": "point"})
            for r in self.gate.rules
        ]
        outcome = evaluate_gate(data, self.gate.model_copy(update={"use": "point", "rules": rules}))
        checks = [c for c in outcome.checks if c.row["variant"] == name]
        return bool(checks) and all(c.passed for c in checks)
