"""The gate decides from results.json: 0 pass, 1 fail (rows printed), 2 undecidable."""

import json

import pytest

from evalsuite.cli import main
from evalsuite.gating import GateConfig, GateConfigError, Rule, evaluate_gate, load_gate_config, parse_gate_config
from evalsuite.results import load


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


SUITES_V1 = {  # results.json version 1: the suites' sections at the top level, flips under fidelity
    "schema_version": 1,
    "variants": {"baseline": {}, "W4A16": {}, "MXFP4": {}},
    "recovery": [],
    "judge": {
        "W4A16": {"arena": {"win_rate": 0.48, "ci_low": 0.40, "ci_high": 0.56}},
        "MXFP4": {"arena": {"win_rate": 0.38, "ci_low": 0.30, "ci_high": 0.46}},
    },
    "fidelity": {
        "W4A16": {"tokens": {"ppl": {"kld_mean": 0.002}}, "flips": [{"task": "mc"}]},
        "MXFP4": {"tokens": {"ppl": {"kld_mean": 0.03}}},
    },
    "similarity": {
        "W4A16": {"chat": {"rougeL": {"mean": 0.9, "values": [0.8, 1.0] * 20}, "identical": 0.5}},
        "MXFP4": {"chat": {"rougeL": {"mean": 0.7, "values": [0.6, 0.8] * 20}, "identical": 0.1}},
    },
}
SUITES = {
    "schema_version": 2,
    "variants": SUITES_V1["variants"],
    "recovery": [],
    "flips": {"W4A16": [{"task": "mc"}]},
    "suites": {
        "similarity": SUITES_V1["similarity"],
        "judge": SUITES_V1["judge"],
        "fidelity": {"W4A16": {"ppl": {"kld_mean": 0.002}}, "MXFP4": {"ppl": {"kld_mean": 0.03}}},
    },
}


def test_version_1_results_are_read_in_version_2_shape(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(SUITES_V1))
    assert load(tmp_path).data == SUITES


def _failed(config: dict) -> tuple[int, set]:
    outcome = evaluate_gate(SUITES, GateConfig(**config))
    return outcome.exit_code, {(c.row["suite"], c.row["variant"]) for c in outcome.checks if c.passed is False}


def test_judge_fidelity_and_similarity_can_be_gated():
    assert _failed({"rules": [{"suite": "judge", "min_win_rate": 45}]}) == (1, {("judge", "MXFP4")})
    assert _failed({"rules": [{"suite": "judge", "min_win_rate": 35}]}) == (0, set())
    assert _failed({"rules": [{"suite": "judge", "min_win_rate": 42}]}) == (1, {("judge", "MXFP4")})
    assert _failed({"use": "lower_bound", "rules": [{"suite": "judge", "min_win_rate": 42}]}) == (
        1,
        {("judge", "W4A16"), ("judge", "MXFP4")},
    )
    assert _failed({"rules": [{"suite": "fidelity", "max_kld": 0.01}]}) == (1, {("fidelity", "MXFP4")})
    rule = {"suite": "similarity", "metric": "rougeL", "min": 0.8}
    assert _failed({"rules": [rule]}) == (1, {("similarity", "MXFP4")})
    assert _failed({"use": "lower_bound", "rules": [rule]}) == (1, {("similarity", "MXFP4")})  # W4A16: ~0.87


def test_suite_rules_without_an_interval_or_a_match_are_undecided():
    outcome = evaluate_gate(SUITES, GateConfig(use="lower_bound", rules=[Rule(suite="fidelity", max_kld=0.01)]))
    assert outcome.exit_code == 2 and "use: point on the rule" in outcome.checks[0].reason
    per_rule = GateConfig(use="lower_bound", rules=[Rule(suite="fidelity", max_kld=0.01, use="point")])
    assert evaluate_gate(SUITES, per_rule).exit_code == 1
    outcome = evaluate_gate(SUITES, GateConfig(rules=[Rule(suite="judge", task="other", min_win_rate=40)]))
    assert outcome.exit_code == 2 and "matches no judge result" in outcome.errors[0]


def test_suite_rules_take_their_own_threshold(tmp_path, capsys):
    for rule, message in [
        ({"suite": "judge", "min_recovery": 99}, "suite judge has no recovery rows: use min_win_rate"),
        ({"min_win_rate": 40}, "min_win_rate is a threshold of suite: judge"),
        ({"suite": "similarity", "min": 0.8}, "names its metric"),
        ({"suite": "fidelity", "max_kld": 0.01, "min_recovery": 99}, "exactly one threshold"),
    ]:
        with pytest.raises(GateConfigError, match=message):
            parse_gate_config({"rules": [rule]}, "gate.yaml")
    (tmp_path / "results.json").write_text(json.dumps(SUITES))
    gate = tmp_path / "gate.yaml"
    gate.write_text("rules:\n  - suite: similarity\n    metric: rougeL\n    min: 0.8\n")
    assert main(["gate", str(tmp_path), "--config", str(gate)]) == 1
    assert "FAIL  MXFP4: chat rougeL: rougeL 0.7000, needs >= 0.8" in capsys.readouterr().out
