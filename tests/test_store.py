"""The store never serves one model's answers as another's, recomputes exactly what changed, and resumes
after kill -9 with no sample lost or duplicated."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import yaml

from evalsuite.config import parse_suite
from evalsuite.models import EMBEDDED, ModelLoadError, resolve_model
from evalsuite.runner import run_suite
from evalsuite.store import Store

TINY = EMBEDDED["embedded:tiny"]


def suite(model, variants=("W8A8_INT8",), **suites):
    suites = suites or {"academic": {"tasks": ["tiny_mc"], "limit": 12}}
    return parse_suite(
        {
            "name": "s",
            "model": {"path": str(model)},
            "variants": list(variants),
            "suites": suites,
            "run": {"batch_size": 8, "bootstrap_iters": 50},
        }
    )


def calls(outcome):
    return {name: info["model_calls_by_task"] for name, info in outcome.data["variants"].items()}


@pytest.fixture
def model_copy(tmp_path):
    path = tmp_path / "model"
    shutil.copytree(TINY, path)
    return path


def test_identical_rerun_makes_no_model_calls_and_the_baseline_is_shared(tmp_path, model_copy):
    first = run_suite(suite(model_copy, ("W8A8_INT8", "W4A16")), tmp_path / "run")
    assert all(c["academic/tiny_mc"] > 0 for c in calls(first).values())
    again = run_suite(suite(model_copy, ("W8A8_INT8", "W4A16", "NVFP4")), tmp_path / "run")
    counted = calls(again)
    assert counted["baseline"] == {"academic/tiny_mc": 0}  # computed once, shared by every later run
    assert counted["W8A8_INT8"] == counted["W4A16"] == {"academic/tiny_mc": 0}
    assert counted["NVFP4"]["academic/tiny_mc"] > 0
    assert again.data["metrics"][:2] == first.data["metrics"][:2]


def test_another_batch_size_recomputes_rather_than_reusing_the_baseline(tmp_path, model_copy):
    run_suite(suite(model_copy), tmp_path / "run")
    config = suite(model_copy)
    config = config.model_copy(update={"run": config.run.model_copy(update={"batch_size": 4})})
    counted = calls(run_suite(config, tmp_path / "run"))
    assert counted["baseline"]["academic/tiny_mc"] > 0 and counted["W8A8_INT8"]["academic/tiny_mc"] > 0


def test_one_byte_of_weights_recomputes_that_model_only(tmp_path, model_copy):
    other = tmp_path / "other"
    shutil.copytree(TINY, other)
    run_suite(suite(model_copy), tmp_path / "run")
    run_suite(suite(other), tmp_path / "run")
    weights = model_copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01  # one bit of the last weight
    weights.write_bytes(bytes(data))
    changed = calls(run_suite(suite(model_copy), tmp_path / "run"))
    assert changed["baseline"]["academic/tiny_mc"] > 0 and changed["W8A8_INT8"]["academic/tiny_mc"] > 0
    untouched = calls(run_suite(suite(other), tmp_path / "run"))
    assert untouched["baseline"] == untouched["W8A8_INT8"] == {"academic/tiny_mc": 0}


def test_chat_template_and_generation_settings_recompute_only_what_uses_them(tmp_path, model_copy):
    suites = {"academic": {"tasks": ["tiny_mc"], "limit": 8}, "similarity": {"limit": 4, "max_gen_toks": 16}}
    run_suite(suite(model_copy, **suites), tmp_path / "run")
    template = model_copy / "chat_template.jinja"
    template.write_text(template.read_text().replace("User: ", "Human: "))
    after = calls(run_suite(suite(model_copy, **suites), tmp_path / "run"))
    for name in ("baseline", "W8A8_INT8"):
        assert after[name]["academic/tiny_mc"] == 0 and after[name]["similarity/tiny_chat"] > 0
    suites["similarity"]["max_gen_toks"] = 12
    after = calls(run_suite(suite(model_copy, **suites), tmp_path / "run"))
    assert after["baseline"]["academic/tiny_mc"] == 0 and after["baseline"]["similarity/tiny_chat"] > 0


def test_truncated_weights_and_missing_shards_are_caught_before_loading(tmp_path, model_copy):
    weights = model_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ModelLoadError, match="truncated safetensors file"):
        resolve_model(str(model_copy))
    (model_copy / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}})
    )
    with pytest.raises(ModelLoadError, match="shards that are missing: model-00001"):
        resolve_model(str(model_copy))


def test_malformed_and_empty_task_data_are_errors_with_the_line(tmp_path):
    from evalsuite.suites.academic import TaskDataError, resolve_tasks

    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "mine.yaml").write_text(
        "task: mine\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: mine.jsonl\ntest_split: test\n"
        "output_type: multiple_choice\ndoc_to_text: q\ndoc_to_target: 0\ndoc_to_choice: [a, b]\n"
    )
    (folder / "mine.jsonl").write_text('{"q": 1}\n{"q": 2,}\n')
    config = parse_suite(
        {"name": "s", "variants": ["W4A16"], "suites": {"academic": {"tasks": ["mine"], "include": [str(folder)]}}}
    )
    with pytest.raises(TaskDataError, match=r"mine.jsonl:2: not valid JSON"):
        resolve_tasks(config.suites.academic)
    (folder / "mine.jsonl").write_text("\n")
    with pytest.raises(TaskDataError, match="the dataset is empty"):
        resolve_tasks(config.suites.academic)


def test_unwritable_output_directory(tmp_path):
    from evalsuite.runner import RunError

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(RunError, match="cannot write to the output directory"):
        run_suite(suite(TINY), blocker / "run")


RESUME_SUITE = {
    "name": "resume",
    "model": {"path": "embedded:tiny"},
    "variants": ["W4A16"],
    "suites": {"academic": {"tasks": ["tiny_mc", "tiny_arith"], "limit": 120}},
    "run": {"batch_size": 4, "bootstrap_iters": 50},
}


def _responses(run_dir):
    path = run_dir / "store.sqlite"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=1) as conn:
            return conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _start(suite_file, run_dir):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "evalsuite", "run", str(suite_file), "--out", str(run_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )


def _kill_midway(suite_file, run_dir, sig):
    proc = _start(suite_file, run_dir)
    deadline = time.time() + 300
    while _responses(run_dir) < 150 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=60)
    return proc.returncode, output


def test_kill_9_then_rerun_completes_with_no_duplicates_and_equal_metrics(tmp_path):
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(yaml.safe_dump(RESUME_SUITE))
    code, _ = _kill_midway(suite_file, tmp_path / "killed", signal.SIGKILL)
    assert code == -signal.SIGKILL
    partial = _responses(tmp_path / "killed")
    assert 0 < partial
    Store(tmp_path / "killed" / "store.sqlite").close()  # readable after the kill
    resumed = _start(suite_file, tmp_path / "killed")
    assert resumed.wait(timeout=600) == 0
    straight = _start(suite_file, tmp_path / "straight")
    assert straight.wait(timeout=600) == 0
    a = json.loads((tmp_path / "killed" / "results.json").read_text())
    b = json.loads((tmp_path / "straight" / "results.json").read_text())
    assert _responses(tmp_path / "killed") == _responses(tmp_path / "straight")  # nothing duplicated or missing
    for ma, mb in zip(a["metrics"], b["metrics"], strict=True):
        assert (ma["task"], ma["metric"], ma["variant"], ma["n"]) == (mb["task"], mb["metric"], mb["variant"], mb["n"])
        assert ma["value"] == pytest.approx(mb["value"], abs=1e-9)


def test_ctrl_c_keeps_what_is_done_and_says_how_to_resume(tmp_path):
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(yaml.safe_dump(RESUME_SUITE))
    code, output = _kill_midway(suite_file, tmp_path / "run", signal.SIGINT)
    assert code == 130
    assert "run the same command again to resume" in output
    assert _responses(tmp_path / "run") >= 150


def test_rotation_and_algorithm_options_are_part_of_the_key(tmp_path):
    variants = [
        "W8A8_INT8",
        {"scheme": "W8A8_INT8", "rotation": "hadamard"},
        {"scheme": "W8A8_INT8", "algorithm": "smoothquant", "options": {"alpha": 0.5}},
        {"name": "sq-alpha-0.8", "scheme": "W8A8_INT8", "algorithm": "smoothquant", "options": {"alpha": 0.8}},
    ]
    config = parse_suite(
        {
            "name": "s",
            "model": {"path": "embedded:tiny"},
            "variants": variants,
            "suites": {"academic": {"tasks": ["tiny_mc"], "limit": 6}},
            "run": {"batch_size": 8, "bootstrap_iters": 0, "calibration": {"samples": 4, "seq_len": 64}},
        }
    )
    counted = calls(run_suite(config, tmp_path / "run"))
    keys = {name: info["model_key"] for name, info in run_suite(config, tmp_path / "run").data["variants"].items()}
    assert all(c["academic/tiny_mc"] > 0 for c in counted.values()), counted
    assert len(set(keys.values())) == len(keys)
