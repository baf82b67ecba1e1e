"""A model that is not the demo's, shaped and built here (Qwen2 layout, grouped-query attention, untied head,
a chat template): a calibrated variant end to end with nothing but a model path, tasks and variants in the
suite file. Every default it used is named in the report, and none of them is the demo model's."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

from evalsuite.cli import main
from evalsuite.models import EMBEDDED
from evalsuite.tasks import ACADEMIC_DIR

CHAT = "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"


def build_model(path):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(EMBEDDED["embedded:tiny"])
    tokenizer.chat_template = CHAT
    config = AutoConfig.for_model(
        "qwen2",
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)


def task_files(folder):
    """Two copies of the built-in multiple-choice task: one says nothing about its primary metric (the first
    it lists, acc, stands for it), one names acc_norm."""
    folder.mkdir()
    shutil.copy(ACADEMIC_DIR / "tiny_mc.jsonl", folder / "mc.jsonl")
    base = yaml.safe_load((ACADEMIC_DIR / "tiny_mc.yaml").read_text())
    base.pop("include")
    base.update(
        dataset_path="json", test_split="test", dataset_kwargs={"data_files": {"test": str(folder / "mc.jsonl")}}
    )
    (folder / "mc_copy.yaml").write_text(yaml.safe_dump({**base, "task": "mc_copy"}))
    (folder / "mc_declared.yaml").write_text(
        yaml.safe_dump({**base, "task": "mc_declared", "primary_metric": "acc_norm"})
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("second")
    build_model(root / "model")
    task_files(root / "tasks")
    suite = {
        "name": "second",
        "model": {"path": str(root / "model")},
        "variants": [{"scheme": "W4A16", "algorithm": "gptq"}],
        "suites": {"academic": {"tasks": ["mc_copy", "mc_declared"], "include": [str(root / "tasks")], "limit": 40}},
        "run": {"batch_size": 8, "bootstrap_iters": 200},
    }
    (root / "suite.yaml").write_text(yaml.safe_dump(suite))
    assert main(["run", str(root / "suite.yaml"), "--out", str(root / "run")]) == 0
    return root / "run"


def test_calibration_is_the_general_set_in_the_models_chat_template_and_is_named(run_dir):
    data = json.loads((run_dir / "results.json").read_text())
    calibration = data["variants"]["W4A16-gptq"]["calibration"]
    assert calibration.startswith("python_reference: 128 x 512 tokens, chat template, hash "), calibration
    assert "a model other than the demo" in calibration and "tiny_calib" not in calibration
    assert data["variants"]["W4A16-gptq"]["calibration_hash"]  # GPTQ's outputs depend on it: part of the key
    md = (run_dir / "report.md").read_text()
    assert calibration in md, "the report does not name the calibration set beside the variant"


def test_primary_metrics_follow_the_task_files_and_say_why(run_dir):
    data = json.loads((run_dir / "results.json").read_text())
    primary = {(m["task"], m["variant"]): m for m in data["metrics"] if m["primary"]}
    assert primary[("mc_copy", "baseline")]["metric"] == "acc"
    assert primary[("mc_copy", "baseline")]["primary_reason"] == "the first metric the task's YAML lists"
    assert primary[("mc_declared", "baseline")]["metric"] == "acc_norm"
    assert primary[("mc_declared", "baseline")]["primary_reason"] == "named in the task file (primary_metric)"
    md = (run_dir / "report.md").read_text()
    assert (
        "yes (the first metric the task's YAML lists)" in md and "yes (named in the task file (primary_metric))" in md
    )


def test_sizes_are_the_weights_in_memory_with_the_file_beside_them(run_dir):
    from safetensors import safe_open

    data = json.loads((run_dir / "results.json").read_text())
    base, variant = data["variants"]["baseline"], data["variants"]["W4A16-gptq"]
    file = run_dir.parent / "model" / "model.safetensors"
    with safe_open(file, "pt") as f:
        elements = sum(f.get_slice(name).get_shape().numel() if hasattr(f.get_slice(name).get_shape(), "numel")
                       else int(torch.Size(f.get_slice(name).get_shape()).numel()) for name in f.keys())  # fmt: skip
    # `dtype: auto` evaluates in float32 on a CPU and bfloat16 on a GPU; the sizes follow what was evaluated
    evaluated = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    dtype_name = str(evaluated).removeprefix("torch.")
    assert base["weights_dtype"] == dtype_name
    assert base["weight_bytes"] == evaluated.itemsize * elements
    assert base["file_bytes"] == file.stat().st_size  # saved in float32 either way
    assert variant["compression_ratio"] == pytest.approx(base["weight_bytes"] / variant["weight_bytes"])
    assert f"weights in memory ({dtype_name} float parts)" in (run_dir / "report.md").read_text()
