"""The suite protocol and its lazy registry: the runner, the gate and the report know suites only through these.

A suite type is one class (plan what it will request, evaluate one model through `EvalLM`, compare the
variants with the baseline, then turn results.json back into gate rows and a report table), its settings
model, and one line in `REGISTRY` (with the gate-file key of its threshold, if it has one):

    class Echo(Suite):
        name, title, Spec = "echo", "Echoed answers", EchoSettings   # Spec: a pydantic model of its settings

        def evaluate(self, ctx):                      # once per model, baseline first
            answers = ctx.lm.generate_until([...])
            return SuiteRun(outputs={"echo": answers})

        def compare(self, runs, ctx):                 # after every model: {variant: {set: summary}}
            return {v: {"echo": {"echo_rate": ...}} for v in runs if v != BASELINE}

        @classmethod
        def measures(cls, section):                   # the rows a gate rule on this suite is checked against
            ...

    REGISTRY["echo"] = Entry("my_package.echo:Echo", GateKey("min_echo", "echo_rate", scale=100))

Suites whose tasks yield scores (academic, code) return them as `SuiteRun.tasks`: results.json turns those
into recovery rows. Suites that compare answers or logits (similarity, judge, fidelity) return a section
from `compare`, stored under results.json's `suites[name]`; `measures` turns it into rows of one shape
(`suite, task, metric, variant`, and the measured point and pessimistic bound) that the gate decides on.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

from evalsuite.config import BASELINE  # noqa: F401 - the name suites compare against


@dataclass(frozen=True)
class GateKey:
    """A suite's own gate threshold: `{suite: judge, min_win_rate: 45}` checks `win_rate` >= 45 / scale."""

    key: str  # the gate-file key, e.g. min_win_rate
    metric: str | None  # the measured metric it reads; None: the rule names it (similarity: metric: rougeL)
    scale: float = 1.0  # the threshold is written in these units of the measure (100: percent)
    higher_is_better: bool = True
    shown: str = ".4g"  # how the report prints the observed value

    def decide(self, observed: float, threshold: float) -> tuple[bool, str, str]:
        """(passed, the observed value as shown, the threshold as shown)."""
        value, unit = observed * self.scale, "%" if self.scale == 100 else ""
        passed = value >= threshold if self.higher_is_better else value <= threshold
        return passed, f"{value:{self.shown}}{unit}", f"{'>=' if self.higher_is_better else '<='} {threshold:g}{unit}"


@dataclass(frozen=True)
class Entry:
    target: str  # "module:Class", imported on first use
    gate: GateKey | None = None  # None: the gate checks the suite's recovery rows (min_recovery)


REGISTRY: dict[str, Entry] = {
    "academic": Entry("evalsuite.suites.academic:Academic"),
    "code": Entry("evalsuite.suites.code:Code"),
    "similarity": Entry("evalsuite.suites.similarity:Similarity", GateKey("min", None, shown=".4f")),
    "judge": Entry("evalsuite.suites.judge:Judge", GateKey("min_win_rate", "win_rate", scale=100, shown=".2f")),
    "fidelity": Entry(
        "evalsuite.suites.fidelity:Fidelity", GateKey("max_kld", "kld_mean", higher_is_better=False, shown=".3g")
    ),
}


@dataclass
class ModelContext:
    """One model as a suite sees it: its `EvalLM`, the store and its key, and the settings of the run."""

    name: str  # the variant ('baseline' for the baseline)
    lm: Any  # EvalLM
    key: str  # the model key: the store keeps this model's answers under it
    store: Any  # Store
    config: Any  # SuiteConfig
    baseline_lm: Any = None  # the resident baseline, for suites that compare on the fly; None on other ranks
    main: bool = True  # the rank that compares, scores and writes
    rekey: Any = None  # batch size -> this model's key at that batch size (the noise floor's twin)


@dataclass
class SuiteRun:
    """What one suite produced on one model."""

    tasks: dict[str, Any] = field(default_factory=dict)  # task -> TaskResult: recovery rows in results.json
    outputs: dict[str, Any] = field(default_factory=dict)  # set -> what `compare` compares across models
    model_calls: dict[str, int] = field(default_factory=dict)  # task or set -> forward passes it needed


@dataclass
class CompareContext:
    config: Any  # SuiteConfig
    store: Any  # Store
    device: Any  # torch.device


@dataclass
class Section:
    """A suite's part of the report: a table, an optional note below it, and distributions to chart."""

    id: str
    title: str
    header: list[str]
    rows: list[list[str]]
    note: str | None = None
    distributions: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # chart -> variant -> values


class Suite:
    name: ClassVar[str]
    title: ClassVar[str]  # the report section's heading
    Spec: ClassVar[type]  # the pydantic model of its settings under `suites:` in a suite file
    needs_baseline: ClassVar[bool] = False  # keep the baseline's EvalLM resident while the variants run

    def __init__(self, spec, config):
        self.spec, self.config = spec, config

    def plan(self) -> None:
        """Load and check everything this suite needs before any model loads; raise a UserError naming the
        file, line or field otherwise."""

    def check_environment(self) -> None:
        """Checks that run programs or reach services, after every suite's `plan` passed."""

    def evaluate(self, ctx: ModelContext) -> SuiteRun:
        raise NotImplementedError

    def compare(self, runs: dict[str, SuiteRun], ctx: CompareContext) -> dict:
        """{variant: {set: summary}} for results.json's `suites[name]`; {} when `evaluate` scored tasks."""
        return {}

    @classmethod
    def measures(cls, section: dict) -> list[dict]:
        """Gate rows of one shape from this suite's results.json section:
        {suite, task, metric, variant, point, bound}; bound is the pessimistic end of a 95% interval or None."""
        return []

    @classmethod
    def report(cls, data: dict) -> Section | None:
        """This suite's report section, from results.json alone; None when the run has nothing to show."""
        return None


def measure(suite: str, task: str, metric: str, variant: str, point, bound=None) -> dict:
    return {"suite": suite, "task": task, "metric": metric, "variant": variant, "point": point, "bound": bound}


class UnknownSuiteError(KeyError):
    pass


def suite_class(name: str) -> type[Suite]:
    """The registered class of suite `name`, imported on first use."""
    if name not in REGISTRY:
        raise UnknownSuiteError(f"unknown suite {name!r}; registered suites: {', '.join(REGISTRY)}")
    module, _, attr = REGISTRY[name].target.partition(":")
    return getattr(importlib.import_module(module), attr)


def configured(config) -> list[Suite]:
    """The suites a suite file names, in registry order, each bound to its settings."""
    return [suite_class(name)(spec, config) for name, spec in config.suites.named()]
