"""Trained checkpoints are variants of the bf16-trained baseline: as they are, and post-training quantized;
Smooth-SwiGLU's scales fold into the saved weights without changing the function; bad input is named."""

import json

import pytest
import torch

from evalsuite import models
from evalsuite.cli import main
from evalsuite.config import ConfigError, parse_suite
from evalsuite.runner import run_suite
from evalsuite.training.loop import save, train
from tests.training.common import micro


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    for recipe in ("bf16", "fp8-smooth"):
        train(micro(recipe, 8, save_dtype="float32"), out=root / recipe)
    return root


def test_smooth_swiglu_scales_fold_into_the_saved_weights(tmp_path):
    result = train(micro("fp8-smooth", 5, save_dtype="float32"))
    monitor = result.model.get_decoder().layers[0].mlp
    assert (monitor.scale != 1).any()  # the fold has work to do
    ids = torch.tensor([[5, 17, 33, 2, 99, 250, 7, 64]])
    with torch.no_grad():
        before = result.model(input_ids=ids).logits  # the smoothed MLP in float: h / s times W * s
    save(
        result,
        micro("fp8-smooth", 5, save_dtype="float32"),
        models.load_tokenizer(models.resolve_model("embedded:tiny")),
        tmp_path,
    )
    after = models.load(models.resolve_model(str(tmp_path)), "cpu", "float32").model
    with torch.no_grad():
        assert torch.allclose(after(input_ids=ids).logits, before, atol=1e-5, rtol=0)


def test_trained_checkpoints_are_variants_of_the_bf16_baseline(checkpoints, tmp_path):
    config = parse_suite(
        {
            "name": "trained",
            "model": {"path": str(checkpoints / "bf16")},
            "variants": [
                {"name": "fp8-smooth", "path": str(checkpoints / "fp8-smooth")},
                {"name": "fp8-smooth+W8A8_FP8", "path": str(checkpoints / "fp8-smooth"), "scheme": "W8A8_FP8"},
            ],
            "suites": {"academic": {"tasks": [{"name": "tiny_mc", "limit": 8}]}},
            "run": {"batch_size": 4, "bootstrap_iters": 20, "calibration": None},
        }
    )
    data = run_suite(config, tmp_path / "run").data
    trained, quantized = data["variants"]["fp8-smooth"], data["variants"]["fp8-smooth+W8A8_FP8"]
    assert trained["description"].startswith("float checkpoint (trained: fp8 (token scales) + Smooth-SwiGLU")
    assert trained["checkpoint"] == str(checkpoints / "fp8-smooth") and trained["scheme"] is None
    assert quantized["scheme"]["weights"]["type"] == "float" and quantized["checkpoint"] == trained["checkpoint"]
    assert trained["model_key"] != quantized["model_key"]
    names = {row["variant"] for row in data["recovery"]}
    assert {"fp8-smooth", "fp8-smooth+W8A8_FP8"} <= names


def test_bad_variants_and_settings_are_named(checkpoints, tmp_path, capsys):
    with pytest.raises(ConfigError, match="needs a scheme .*, a path .* or both"):
        parse_suite({"name": "x", "model": {"path": "embedded:tiny"}, "variants": [{"name": "v"}]})
    with pytest.raises(ConfigError, match="used as it is: leave out algorithm"):
        parse_suite(
            {
                "name": "x",
                "model": {"path": "embedded:tiny"},
                "variants": [{"name": "v", "path": "p", "algorithm": "gptq"}],
            }
        )
    assert main(["train", "--recipe", "fp9", "--steps", "2", "--out", str(tmp_path / "x")]) == 2
    assert "unknown training recipe 'fp9'; known: bf16, fp8" in capsys.readouterr().err
    assert (
        main(["train", "--recipe", "fp8", "--steps", "2", "--out", str(tmp_path / "x"), "--from", str(tmp_path)]) == 2
    )
    assert "holds no model" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_the_cli_writes_a_checkpoint_with_its_training_record(tmp_path):
    out = tmp_path / "ckpt"
    argv = ["train", "--recipe", "fp8", "--steps", "2", "--out", str(out), "--hidden", "32", "--layers", "1",
            "--intermediate", "64", "--heads", "2", "--batch", "2", "--seq-len", "16", "--threads", "1"]  # fmt: skip
    assert main(argv) == 0
    record = json.loads((out / "training.json").read_text())
    assert record["recipe"] == "fp8" and len(record["losses"]) == 2 and record["low_precision_linears"] == 7
    assert models.load(models.resolve_model(str(out)), "cpu", "float32").model.config.hidden_size == 32
