"""A new suite type is its own class, its settings model and one registry line: this one runs through the
runner, the store, results.json, the gate and the report without a change anywhere else."""

from __future__ import annotations

import pytest
from lm_eval.api.instance import Instance
from pydantic import BaseModel, ConfigDict, Field

from evalsuite.config import parse_suite
from evalsuite.gating import GateConfigError, evaluate_gate, parse_gate_config
from evalsuite.models import EMBEDDED
from evalsuite.reports.markdown import render_markdown
from evalsuite.reports.view import build_view
from evalsuite.results import load
from evalsuite.runner import run_suite
from evalsuite.suites.base import BASELINE, REGISTRY, Entry, GateKey, Section, Suite, SuiteRun, measure


class EchoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prompts: list[str] = Field(min_length=1)
    max_gen_toks: int = 6


class Echo(Suite):
    """Greedy answers to a few prompts; a variant scores the share of answers identical to the baseline's."""

    name, title, Spec = "echo", "Echoed answers", EchoSettings

    def plan(self) -> None:
        if any(not p.strip() for p in self.spec.prompts):
            raise ValueError("suites.echo.prompts: an empty prompt")

    def evaluate(self, ctx):
        kwargs = {"until": ["\n"], "max_gen_toks": self.spec.max_gen_toks, "do_sample": False}
        requests = [Instance("generate_until", {}, (p, kwargs), i) for i, p in enumerate(self.spec.prompts)]
        calls = ctx.lm.model_calls
        answers = ctx.lm.generate_until(requests)
        return SuiteRun(outputs={"echo": answers}, model_calls={"echo": ctx.lm.model_calls - calls})

    def compare(self, runs, ctx):
        base = runs[BASELINE].outputs["echo"]
        return {
            variant: {"echo": {"same": sum(a == b for a, b in zip(base, run.outputs["echo"], strict=True)) / len(base)}}
            for variant, run in runs.items()
            if variant != BASELINE
        }

    @classmethod
    def measures(cls, section):
        return [
            measure(cls.name, name, "same", v, s["same"]) for v, sets in section.items() for name, s in sets.items()
        ]

    @classmethod
    def report(cls, data):
        section = data["suites"].get(cls.name, {})
        rows = [[v, name, f"{s['same']:.2f}"] for v, sets in section.items() for name, s in sets.items()]
        return Section(cls.name, cls.title, ["variant", "set", "same answers"], rows) if rows else None


@pytest.fixture
def echo_registered(monkeypatch):
    monkeypatch.setitem(REGISTRY, "echo", Entry(f"{__name__}:Echo", GateKey("min_same", "same", scale=100)))


def config(**suites):
    return parse_suite(
        {
            "name": "toy",
            "model": {"path": str(EMBEDDED["embedded:tiny"])},
            "variants": ["W8A8_INT8"],
            "suites": suites,
            "run": {"batch_size": 4, "bootstrap_iters": 0, "calibration": None},
        }
    )


def test_a_registered_suite_runs_is_stored_gated_and_reported(tmp_path, echo_registered):
    prompts = ["Q: what is 2 + 3?\nA:", "Q: what is 4 + 4?\nA:", "Q: what is 1 + 6?\nA:"]
    outcome = run_suite(config(echo={"prompts": prompts}), tmp_path / "run")
    section = outcome.data["suites"]["echo"]
    assert set(section) == {"W8A8_INT8"}
    same = section["W8A8_INT8"]["echo"]["same"]
    assert same in (0.0, 1 / 3, 2 / 3, 1.0)
    assert outcome.data["variants"]["W8A8_INT8"]["model_calls_by_task"]["echo/echo"] > 0

    data = load(tmp_path / "run").data
    needed = 100 * same
    passing = parse_gate_config({"rules": [{"suite": "echo", "min_same": needed}]}, "gate")
    failing = parse_gate_config({"rules": [{"suite": "echo", "min_same": needed + 1}]}, "gate")
    assert evaluate_gate(data, passing).exit_code == 0
    assert evaluate_gate(data, failing).exit_code == 1
    assert f"| W8A8_INT8 | echo | {same:.2f} |" in render_markdown(build_view(data))

    again = run_suite(config(echo={"prompts": prompts}), tmp_path / "run")  # answers served by the store
    assert again.data["suites"]["echo"] == section
    assert again.data["variants"]["W8A8_INT8"]["model_calls_by_task"]["echo/echo"] == 0


def test_an_unregistered_suite_or_gate_key_is_refused_by_name(echo_registered, monkeypatch):
    with pytest.raises(ValueError, match="echo.prompts"):
        config(echo={"prompts": []})
    monkeypatch.delitem(REGISTRY, "echo")
    with pytest.raises(ValueError, match="unknown suite 'echo'"):
        config(echo={"prompts": ["a"]})
    with pytest.raises(GateConfigError, match="min_same"):
        parse_gate_config({"rules": [{"suite": "echo", "min_same": 50}]}, "gate")
