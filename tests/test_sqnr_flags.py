"""Per-layer sensitivity: a layer whose output SQNR (on the calibration data) falls under run.sqnr_floor_db is
flagged in results.json and listed in the report, beside each layer's saturated-weight and zero-scale counts."""

import json
import shutil
from types import SimpleNamespace

import pytest
from safetensors.torch import load_file, save_file

from evalsuite.api import evaluate
from evalsuite.models import EMBEDDED
from evalsuite.quant_schemes.scheme import resolve
from evalsuite.variants import quantized_record

ZEROED = "model.layers.0.mlp.up_proj"  # one output row of its weight is all zeros
INT4_MSE = {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 64, "observer": "mse"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("sqnr")
    model = root / "model"
    shutil.copytree(EMBEDDED["embedded:tiny"], model)
    weights = load_file(model / "model.safetensors")
    weights[f"{ZEROED}.weight"][5].zero_()
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    suite = {
        "name": "sqnr",
        "model": {"path": str(model)},
        "variants": ["NVFP4", "W4A16", {"name": "int4-mse", "scheme": {"weights": INT4_MSE}}],
        "suites": {"academic": {"tasks": ["tiny_mc"], "limit": 6}},
        "run": {
            "batch_size": 8,
            "bootstrap_iters": 0,
            "sqnr_floor_db": 1000.0,  # above any layer's SQNR: every measured layer is flagged
            "calibration": {"samples": 4, "seq_len": 64},
        },
    }
    evaluate(suite, out_dir=root / "run")
    return json.loads((root / "run" / "results.json").read_text()), (root / "run" / "report.md").read_text()


VARIANTS = ("NVFP4", "W4A16", "int4-mse")


def test_every_layer_under_a_very_high_floor_is_flagged(data):
    results, _ = data
    for name in VARIANTS:
        info = results["variants"][name]
        assert info["sqnr_floor_db"] == 1000.0
        measured = [layer for layer in info["layers"] if layer.get("sqnr_db") is not None]
        assert len(measured) == info["quantized_layers"] == len(info["layers"]) > 0, f"{name}: SQNR not measured"
        assert all(0 < layer["sqnr_db"] < 1000 for layer in measured), name
        assert info["flagged_layers"] == [layer["name"] for layer in measured], name


def _sensitivity_rows(md: str) -> list[list[str]]:
    section = md.split("## Per-layer sensitivity", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")][2:]  # past the header and rule
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines]


def test_report_lists_every_flagged_layer_with_its_counts(data):
    results, md = data
    rows = _sensitivity_rows(md)
    for name in VARIANTS:
        layers = {layer["name"]: layer for layer in results["variants"][name]["layers"]}
        shown = {r[1]: r for r in rows if r[0] == name}
        assert set(shown) == set(results["variants"][name]["flagged_layers"]), f"{name}: {sorted(shown)}"
        for layer, (_, _, sqnr, saturated, zeros, flag) in shown.items():
            assert flag == "below floor", (name, layer, flag)
            assert sqnr == f"{layers[layer]['sqnr_db']:.1f}", (name, layer)
            assert (int(saturated), int(zeros)) == (layers[layer]["saturated"], layers[layer]["zero_scales"])


def test_saturation_and_zero_scales_are_counted_per_layer(data):
    results, _ = data
    for name in VARIANTS:
        info = results["variants"][name]
        for layer in info["layers"]:
            assert {"saturated", "zero_scales", "elements"} <= set(layer), (name, layer)
            assert 0 <= layer["saturated"] <= layer["elements"], (name, layer)
        assert info["saturated_weights"] == sum(layer["saturated"] for layer in info["layers"]), name
        assert info["zero_scales"] == sum(layer["zero_scales"] for layer in info["layers"]), name
    nvfp4 = {layer["name"]: layer for layer in results["variants"]["NVFP4"]["layers"]}
    in_features = json.loads((EMBEDDED["embedded:tiny"] / "config.json").read_text())["hidden_size"]  # up_proj's
    assert nvfp4[ZEROED]["zero_scales"] == in_features // 16, "one all-zero row: one zero scale per 16 elements"
    assert [n for n, layer in nvfp4.items() if layer["zero_scales"]] == [ZEROED]
    # absmax scales never clip; an MSE observer clips some weights of every layer on purpose
    assert all(layer["saturated"] == 0 for layer in results["variants"]["W4A16"]["layers"])
    assert all(layer["saturated"] > 0 for layer in results["variants"]["int4-mse"]["layers"])


def test_the_floor_flags_layers_strictly_below_it_and_never_unmeasured_ones():
    stats = {
        "under": {"saturated": 0, "zero_scales": 0, "sqnr_db": 19.99},
        "at": {"saturated": 0, "zero_scales": 0, "sqnr_db": 20.0},
        "over": {"saturated": 3, "zero_scales": 1, "sqnr_db": 35.0},
        "exact": {"saturated": 0, "zero_scales": 0, "sqnr_db": None},  # reproduced exactly: nothing to flag
    }
    report = SimpleNamespace(
        scheme=resolve("W4A16"),
        algorithm="rtn",
        rotation=None,
        backend="torch-ref",
        kernels=["w4a16_gemm"],
        layers=list(stats),
        quantized_bytes=1,
        float_bytes=4,
        layer_stats=stats,
    )
    info = quantized_record(SimpleNamespace(options={}), report, 10, 40, None, 20.0)
    assert info.flagged_layers == ["under"]
    assert (info.saturated_weights, info.zero_scales) == (3, 1)
    assert [layer["name"] for layer in info.layers] == list(stats)
