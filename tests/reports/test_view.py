from evalsuite.reports.view import WORST_LAYERS, _suite_tables


def test_sensitivity_lists_the_worst_layers_and_every_flagged_one():
    layers = [{"name": f"l{i}", "sqnr_db": 10.0 + i, "saturated": 0, "zero_scales": 0} for i in range(12)]
    data = {"variants": {"W4A16": {"layers": layers, "flagged_layers": ["l9"]}}}
    rows = _suite_tables(data)["sensitivity"].rows
    assert [r[1] for r in rows] == [f"l{i}" for i in range(WORST_LAYERS)] + ["l9"]
    assert [r[5] for r in rows] == [""] * WORST_LAYERS + ["below floor"]
