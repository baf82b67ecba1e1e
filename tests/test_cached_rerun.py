"""A rerun whose answers are all in the store writes the first run's results.json (all but what a run measures
of itself) without building a task or a model, calibrated variants included; a rerun that needs some answers
builds only the models that need them."""

import json
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from evalsuite import models
from evalsuite.cli import main
from evalsuite.config import parse_suite
from evalsuite.models import EMBEDDED
from evalsuite.runner import run_suite

# What one run measures of itself rather than of the models: how long, which model calls it made, the decoder
# and the GEMM paths they took, when, how it was invoked, from which checkout state.
RUN_ONLY = {"seconds", "model_calls", "model_calls_by_task", "decode", "kernel_paths"}
PROVENANCE_RUN_ONLY = {"created", "command", "git_sha"}

# Modules that only building an lm-eval task, running one, quantizing or embedding answers imports.
BUILDERS = ("datasets", "lm_eval.evaluator", "evalsuite.quant_schemes.apply", "sentence_transformers", "bert_score")

# A model path other than embedded:tiny defaults to 128 windows of 512 tokens for per-layer sensitivity.
SMALL_CALIBRATION = {"set": "tiny_calib", "samples": 4, "seq_len": 64}

EVERY_SUITE = {  # each as small as it goes: what matters is that every kind of stored answer is served
    "academic": {"tasks": ["tiny_mc", "tiny_ppl"], "limit": 4},
    "code": {"tasks": ["tiny_code"], "limit": 1, "max_gen_toks": 16, "allow_code_execution": True, "timeout_s": 5},
    "similarity": {"prompts": ["tiny_chat"], "limit": 2, "max_gen_toks": 8},
    "judge": {
        "prompts": ["tiny_arena"],
        "limit": 1,
        "max_gen_toks": 8,
        "judge": {"model": "embedded:tiny", "template": "tiny", "max_tokens": 16},
    },
    "fidelity": {"texts": ["tiny_ppl"], "limit": 2},
}


@pytest.fixture
def model_copy(tmp_path):
    path = tmp_path / "model"
    shutil.copytree(EMBEDDED["embedded:tiny"], path)
    return path


def comparable(data: dict) -> dict:
    """results.json without what a run measures of itself."""
    data = json.loads(json.dumps(data))
    for record in data["variants"].values():
        for key in RUN_ONLY:
            record.pop(key, None)
    for key in PROVENANCE_RUN_ONLY:
        data["provenance"].pop(key)
    # the CPU's thread count is the process's (a pytest-xdist worker runs torch on its share of the cores)
    data["provenance"]["device"] = re.sub(r", \d+ threads\)", ")", data["provenance"]["device"])
    return data


def test_a_cached_rerun_writes_the_same_results_and_builds_nothing(tmp_path, model_copy):
    suite = {
        "name": "cached",
        "model": {"path": str(model_copy)},
        "variants": ["W4A16"],
        "suites": EVERY_SUITE,
        "run": {"batch_size": 8, "bootstrap_iters": 50, "calibration": SMALL_CALIBRATION},
    }
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    assert main(["run", str(tmp_path / "suite.yaml"), "--out", str(tmp_path / "run")]) == 0
    first = json.loads((tmp_path / "run" / "results.json").read_text())
    assert all(record["model_calls"] > 0 for record in first["variants"].values())
    rerun = (  # a fresh interpreter, so that what it imports is what the rerun needed
        "import json, sys; from evalsuite.cli import main; "
        f"code = main(['run', {str(tmp_path / 'suite.yaml')!r}, '--out', {str(tmp_path / 'run')!r}]); "
        f"print(json.dumps([code, [m for m in {BUILDERS!r} if m in sys.modules]]))"
    )
    out = subprocess.run([sys.executable, "-c", rerun], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    code, imported = json.loads(out.stdout.strip().splitlines()[-1])
    assert code == 0 and imported == []
    again = json.loads((tmp_path / "run" / "results.json").read_text())
    assert all(record["model_calls"] == 0 for record in again["variants"].values())
    assert comparable(again) == comparable(first)


def gptq(samples: int) -> dict:
    return {"scheme": "W4A16", "algorithm": "gptq", "calibration": {**SMALL_CALIBRATION, "samples": samples}}


def test_a_calibrated_variant_is_served_from_the_store_without_loading_or_calibrating(
    tmp_path, model_copy, monkeypatch
):
    from evalsuite.quant_schemes import apply

    def config(*variants):
        return parse_suite(
            {
                "name": "calibrated",
                "model": {"path": str(model_copy)},
                "variants": list(variants),
                "suites": {"academic": {"tasks": ["tiny_mc"], "limit": 6}},
                "run": {"batch_size": 8, "bootstrap_iters": 20, "calibration": SMALL_CALIBRATION},
            }
        )

    first = run_suite(config(gptq(4), "W8A8_INT8"), tmp_path / "run")
    assert first.data["variants"]["W4A16-gptq"]["calibration_hash"]
    loads, quantized = [], []
    real_load, real_quantize = models.load, apply.quantize
    monkeypatch.setattr(models, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    monkeypatch.setattr(apply, "quantize", lambda *a, **k: quantized.append(k["algorithm"]) or real_quantize(*a, **k))
    again = run_suite(config(gptq(4), "W8A8_INT8"), tmp_path / "run")
    assert loads == [] and quantized == []
    assert comparable(again.data) == comparable(first.data)
    other = run_suite(config(gptq(8), "W8A8_INT8"), tmp_path / "run")  # another calibration: that variant only
    assert len(loads) == 1 and quantized == ["gptq"]
    calls = {name: record["model_calls"] for name, record in other.data["variants"].items()}
    assert calls["baseline"] == calls["W8A8_INT8"] == 0 and calls["W4A16-gptq"] > 0
    assert (
        other.data["variants"]["W4A16-gptq"]["calibration_hash"]
        != first.data["variants"]["W4A16-gptq"]["calibration_hash"]
    )


def test_a_variant_added_to_a_cached_run_loads_only_itself_and_the_baseline_its_fidelity_needs(
    tmp_path, model_copy, monkeypatch
):
    """Adding a variant to a cached run: the first variant is served from the store and neither loaded nor
    quantized; the new one is loaded and quantized, and the baseline is loaded once, because the fidelity panel
    compares the two models' full next-token distributions, which the store does not keep (without a fidelity
    panel the new variant alone loads, as the calibrated test above shows)."""
    from evalsuite.quant_schemes import apply

    def config(*variants):
        return parse_suite(
            {
                "name": "added",
                "model": {"path": str(model_copy)},
                "variants": list(variants),
                "suites": {
                    "academic": {"tasks": ["tiny_mc"], "limit": 4},
                    "fidelity": {"texts": ["tiny_ppl"], "limit": 2},
                },
                "run": {"batch_size": 8, "bootstrap_iters": 20, "calibration": SMALL_CALIBRATION},
            }
        )

    first = run_suite(config("W8A8_INT8"), tmp_path / "run")
    loads, quantized = [], []
    real_load, real_quantize = models.load, apply.quantize
    monkeypatch.setattr(models, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    monkeypatch.setattr(apply, "quantize", lambda *a, **k: quantized.append(a) or real_quantize(*a, **k))
    again = run_suite(config("W8A8_INT8", "W4A16"), tmp_path / "run")
    assert len(loads) == 2 and len(quantized) == 1  # the new variant, and the baseline for its fidelity panel
    calls = {name: record["model_calls"] for name, record in again.data["variants"].items()}
    assert calls["baseline"] == calls["W8A8_INT8"] == 0 and calls["W4A16"] > 0
    for name in ("baseline", "W8A8_INT8"):
        assert comparable(again.data)["variants"][name] == comparable(first.data)["variants"][name]
