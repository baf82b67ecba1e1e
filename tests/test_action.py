"""The composite action's gate step, run by bash with a stand-in `evalsuite` that prints its arguments."""

import re
import subprocess
from pathlib import Path

import pytest
import yaml

ACTION = yaml.safe_load((Path(__file__).resolve().parents[1] / "action.yml").read_text())


def gate_step(tmp_path, **inputs) -> subprocess.CompletedProcess:
    script = next(step["run"] for step in ACTION["runs"]["steps"] if step.get("name") == "Gate")
    values = {name: spec.get("default", "") for name, spec in ACTION["inputs"].items()} | inputs
    script = re.sub(r"\$\{\{ inputs\.([\w-]+) \}\}", lambda m: values[m.group(1)], script)
    stub = tmp_path / "bin" / "evalsuite"
    stub.parent.mkdir(exist_ok=True)
    stub.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')
    stub.chmod(0o755)
    return subprocess.run(
        ["bash", "-e", "-c", script], capture_output=True, text=True, env={"PATH": f"{stub.parent}:/usr/bin:/bin"}
    )


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        ({"gate": "gate.yaml"}, ["gate", "evalsuite-runs/ci", "--config", "gate.yaml", "--junit"]),
        ({"gate": "gate.yaml", "use": "point"}, ["--config", "gate.yaml", "--use", "point", "--junit"]),
        ({"min-recovery": "99"}, ["gate", "evalsuite-runs/ci", "--min-recovery", "99", "--junit"]),
    ],
    ids=["gate-file-keeps-its-use", "use-overrides", "min-recovery"],
)
def test_gate_step_passes_use_only_when_given(tmp_path, inputs, expected):
    done = gate_step(tmp_path, **inputs)
    assert done.returncode == 0, done.stderr
    args = done.stdout.split("\n")
    assert ("--use" in args) == ("use" in inputs)
    start = args.index(expected[0])
    assert args[start : start + len(expected)] == expected


def test_gate_step_without_thresholds_cannot_decide(tmp_path):
    done = gate_step(tmp_path)
    assert done.returncode == 2 and "give the action a gate file" in done.stderr
