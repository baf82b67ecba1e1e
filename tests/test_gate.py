"""The gate decides from results.json: 0 pass, 1 fail (rows printed), 2 undecidable."""

import json

import pytest

from evalsuite.cli import main
from evalsuite.gating import GateConfig, GateConfigError, Rule, evaluate_gate, load_gate_config


def row(variant, recovery, task=None, metric="acc", primary=True, ci=(None, None), scope="task"):
    return {
        "scope": scope,
        "suite": "academic",
        "task": task,
        "metric": metric,
        "variant": variant,
        "primary": primary,
        "higher_is_better": True,
        "baseline": 0.8,
        "value": None if recovery is None else 0.8 * recovery,
        "recovery": recovery,
        "ci_low": ci[0],
        "ci_high": ci[1],
        "n": 100,
    }


def results(rows):
    return {"schema_version": 1, "variants": {"baseline": {}, "W4A16": {}, "W8A8_INT8": {}}, "recovery": rows}


DATA = results(
    [
        row("W8A8_INT8", 0.995, scope="suite", metric="average of primary metrics", ci=(0.985, 1.004)),
        row("W8A8_INT8", 0.993, task="tiny_mc", ci=(0.98, 1.0)),
        row("W4A16", 0.95, scope="suite", metric="average of primary metrics", ci=(0.93, 0.97)),
        row("W4A16", 0.93, task="tiny_mc", ci=(0.91, 0.95)),
        row("W4A16", 0.99, task="tiny_mc", metric="acc_norm", primary=False),
    ]
)


def test_threshold_below_every_recovery_passes_and_above_fails():
    assert evaluate_gate(DATA, GateConfig(rules=[Rule(min_recovery=90)])).exit_code == 0
    outcome = evaluate_gate(DATA, GateConfig(rules=[Rule(min_recovery=99)]))
    assert outcome.exit_code == 1
    failed = {(c.row["variant"], c.row["task"]) for c in outcome.checks if c.passed is False}
    assert failed == {("W4A16", None), ("W4A16", "tiny_mc")}


def test_lower_bound_is_stricter_than_the_point_estimate():
    rules = [Rule(variant="W8A8_INT8", min_recovery=99)]
    assert evaluate_gate(DATA, GateConfig(rules=rules)).exit_code == 0
    assert evaluate_gate(DATA, GateConfig(use="lower_bound", rules=rules)).exit_code == 1


def test_rules_select_suite_task_and_metric():
    rules = [Rule(task="tiny_mc", metric="acc_norm", variant="W4A16", min_recovery=98.5)]
    outcome = evaluate_gate(DATA, GateConfig(rules=rules))
    assert [c.row["metric"] for c in outcome.checks] == ["acc_norm"] and outcome.exit_code == 0
    suite_only = evaluate_gate(DATA, GateConfig(rules=[Rule(suite="academic", min_recovery=96)]))
    assert {c.row["scope"] for c in suite_only.checks} == {"suite"} and suite_only.exit_code == 1


def test_missing_or_zero_baseline_is_undecidable_never_a_pass():
    data = results([row("W4A16", None, task="tiny_mc")])
    assert evaluate_gate(data, GateConfig(rules=[Rule(min_recovery=50)])).exit_code == 2


def test_rule_matching_nothing_or_no_interval_is_undecidable():
    assert evaluate_gate(DATA, GateConfig(rules=[Rule(task="tiny_typo", min_recovery=50)])).exit_code == 2
    no_ci = results([row("W4A16", 0.99, task="tiny_mc")])
    assert evaluate_gate(no_ci, GateConfig(use="lower_bound", rules=[Rule(min_recovery=50)])).exit_code == 2


def test_gate_file_errors(tmp_path):
    bad = tmp_path / "gate.yaml"
    bad.write_text("rules:\n  - task: tiny_mc\n    min_recovery: 0.99\n")
    with pytest.raises(GateConfigError, match="percentage: write 99"):
        load_gate_config(bad)
    bad.write_text("rules:\n  - tsk: tiny_mc\n    min_recovery: 99\n")
    with pytest.raises(GateConfigError, match="tsk"):
        load_gate_config(bad)


def test_cli_exit_codes(tmp_path, capsys):
    (tmp_path / "results.json").write_text(json.dumps(DATA))
    assert main(["gate", str(tmp_path), "--min-recovery", "90"]) == 0
    assert main(["gate", str(tmp_path), "--min-recovery", "99"]) == 1
    assert "FAIL  W4A16: tiny_mc acc: recovery 93.00% < 99%" in capsys.readouterr().out
    assert main(["gate", str(tmp_path / "missing"), "--min-recovery", "99"]) == 2
    assert main(["gate", str(tmp_path)]) == 2


def test_junit_and_github_step_summary(tmp_path, monkeypatch):
    from xml.etree import ElementTree as ET

    (tmp_path / "results.json").write_text(json.dumps(DATA))
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert main(["gate", str(tmp_path), "--min-recovery", "99", "--junit", str(tmp_path / "j.xml")]) == 1
    suite = ET.parse(tmp_path / "j.xml").getroot()
    cases = suite.findall("testcase")
    assert suite.get("tests") == str(len(cases)) == "4" and suite.get("failures") == "2"
    failed = {c.get("name") for c in cases if c.find("failure") is not None}
    assert failed == {"W4A16: academic (average)", "W4A16: tiny_mc acc"}
    text = summary.read_text()
    assert text.startswith("earlier step\n") and "### evalsuite gate: fail" in text
    assert "❌ | W4A16: tiny_mc acc" in text


def test_python_api_matches_the_cli(tmp_path):
    import evalsuite

    (tmp_path / "results.json").write_text(json.dumps(DATA))
    assert evalsuite.gate(tmp_path, 90).exit_code == 0
    assert evalsuite.gate(evalsuite.load(tmp_path), 99).exit_code == 1
    assert evalsuite.gate(DATA, {"rules": [{"task": "tiny_mc", "min_recovery": 92}]}).exit_code == 0


def test_python_api_use_and_percent_checks_follow_the_cli(tmp_path):
    import evalsuite

    gate_file = tmp_path / "gate.yaml"
    gate_file.write_text("use: lower_bound\nrules:\n  - {task: tiny_mc, min_recovery: 92}\n")
    assert evalsuite.gate(DATA, gate_file).exit_code == 1  # the file's lower bound: W4A16's is 91%
    assert evalsuite.gate(DATA, gate_file, use="point").exit_code == 0  # overridden, as --use point does
    assert evalsuite.gate(DATA, {"rules": [{"task": "tiny_mc", "min_recovery": 92}]}, use="lower_bound").exit_code == 1
    with pytest.raises(GateConfigError, match=r"thresholds: rules\[0\]: min_recovery is a percentage: write 99"):
        evalsuite.gate(DATA, {"rules": [{"min_recovery": 0.99}]})
    with pytest.raises(GateConfigError, match="use"):
        evalsuite.gate(DATA, 90, use="lowest")


def test_a_gate_that_cannot_load_its_inputs_still_reports_to_ci(tmp_path, monkeypatch):
    from xml.etree import ElementTree as ET

    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    (tmp_path / "results.json").write_text(json.dumps(DATA))
    (tmp_path / "gate.yaml").write_text("rules:\n  - {min_recovery: 0.99}\n")
    assert (
        main(["gate", str(tmp_path), "--config", str(tmp_path / "gate.yaml"), "--junit", str(tmp_path / "j.xml")]) == 2
    )
    case = ET.parse(tmp_path / "j.xml").getroot().find("testcase/error")
    assert "min_recovery is a percentage" in case.get("message")
    missing = tmp_path / "no-run"
    assert main(["gate", str(missing), "--min-recovery", "99"]) == 2
    assert ET.parse(missing / "gate-junit.xml").getroot().get("errors") == "1"
    assert summary.read_text().count("### evalsuite gate: could not decide") == 2
