from evalsuite.reports.view import WORST_LAYERS, _suite_tables
from evalsuite.suites.code import Code


def test_sensitivity_lists_the_worst_layers_and_every_flagged_one():
    layers = [{"name": f"l{i}", "sqnr_db": 10.0 + i, "saturated": 0, "zero_scales": 0} for i in range(12)]
    data = {"variants": {"W4A16": {"layers": layers, "flagged_layers": ["l9"]}}}
    rows = _suite_tables(data)["sensitivity"].rows
    assert [r[1] for r in rows] == [f"l{i}" for i in range(WORST_LAYERS)] + ["l9"]
    assert [r[5] for r in rows] == [""] * WORST_LAYERS + ["below floor"]


def test_code_table_shows_every_pass_at_k_with_its_recovery():
    metric = {"suite": "code", "task": "tiny_code", "variant": "W4A16"}
    data = {
        "details": {"W4A16": {"code": {"tiny_code": {"passed": 9, "failed": 1, "timeout": 0, "isolation": {}}}}},
        "metrics": [{**metric, "metric": "pass@1", "value": 0.5}, {**metric, "metric": "pass@5", "value": 0.9}],
        "recovery": [
            {**metric, "scope": "task", "metric": "pass@1", "recovery": 0.8, "ci_low": 0.7, "ci_high": 0.9},
            {**metric, "scope": "task", "metric": "pass@5", "recovery": 1.0, "ci_low": None, "ci_high": None},
        ],
    }
    (row,) = Code.report(data).rows
    assert row[2] == "pass@1 0.500 (80.0% [70.0, 90.0]); pass@5 0.900 (100.0%)"
