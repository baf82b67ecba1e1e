"""Leaderboard tasks by their lm-eval names, over small local copies written here in the original datasets'
schemas (ARC, MMLU, GSM8K), in JSONL, CSV and parquet."""

import json

import pandas as pd
import pytest

from evalsuite.config import load_suite, parse_suite
from evalsuite.runner import run_suite
from evalsuite.suites.local_data import LocalDataError, leaf_tasks, local_configs


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def arc_rows(n, offset=0):
    return [
        {
            "id": f"arc-{offset + i}",
            "question": f"Which of these is a fruit ({offset + i})?",
            "choices": {"text": ["dog", "apple", "car", "drum"], "label": ["A", "B", "C", "D"]},
            "answerKey": "B",
        }
        for i in range(n)
    ]


@pytest.fixture
def arc_dir(tmp_path):
    folder = tmp_path / "arc" / "ARC-Challenge"
    for split, n in (("train", 4), ("validation", 2), ("test", 6)):
        write_jsonl(folder / f"{split}.jsonl", arc_rows(n, offset=100 * len(split)))
    return tmp_path / "arc"


def test_a_task_reads_its_splits_from_data_dir(arc_dir):
    (config,) = local_configs("arc_challenge", arc_dir)
    assert config["dataset_path"] == "json" and "dataset_name" not in config
    assert set(config["dataset_kwargs"]["data_files"]) == {"train", "validation", "test"}


def test_a_group_expands_to_its_tasks():
    from evalsuite.suites.academic import task_manager

    leaves = leaf_tasks("mmlu", task_manager(True))
    assert len(leaves) == 57 and "mmlu_anatomy" in leaves and "mmlu" not in leaves


def test_missing_files_name_what_the_task_reads(tmp_path):
    (tmp_path / "ARC-Challenge").mkdir()
    with pytest.raises(LocalDataError, match=r"no test.jsonl/.csv/.parquet in .*ARC-Challenge; the task reads splits"):
        local_configs("arc_challenge", tmp_path)
    with pytest.raises(LocalDataError, match="is not a directory"):
        local_configs("arc_challenge", tmp_path / "nowhere")


def suite(tasks):
    return parse_suite(
        {
            "name": "lb",
            "model": {"path": "embedded:tiny"},
            "variants": ["W8A8_INT8"],
            "suites": {"academic": {"tasks": tasks}},
            "run": {"batch_size": 16, "bootstrap_iters": 50},
        }
    )


def test_leaderboard_tasks_run_offline_from_local_copies(tmp_path, arc_dir):
    mmlu = tmp_path / "mmlu"
    from evalsuite.suites.academic import task_manager

    for leaf in leaf_tasks("mmlu", task_manager(True)):
        subject = leaf.removeprefix("mmlu_")
        rows = [
            {
                "question": f"{subject} question {i}?",
                "subject": subject,
                "choices": ["one", "two", "three", "four"],
                "answer": i % 4,
            }
            for i in range(3)
        ]
        folder = mmlu / subject
        folder.mkdir(parents=True)
        pd.DataFrame(rows[:1]).to_parquet(folder / "dev.parquet")
        pd.DataFrame(rows[1:]).to_parquet(folder / "test.parquet")
    gsm = tmp_path / "gsm8k" / "main"
    gsm.mkdir(parents=True)
    pd.DataFrame(
        [
            {"question": f"What is {a} plus {a}?", "answer": f"{a} plus {a} is {2 * a}.\n#### {2 * a}"}
            for a in range(1, 9)
        ]
    ).iloc[:3].to_csv(gsm / "train.csv", index=False)
    pd.DataFrame([{"question": f"What is {a} plus {a}?", "answer": f"#### {2 * a}"} for a in range(1, 6)]).to_csv(
        gsm / "test.csv", index=False
    )
    config = suite(
        [
            {"name": "arc_challenge", "num_fewshot": 2, "metric": "acc_norm", "data_dir": str(arc_dir)},
            {"name": "mmlu", "num_fewshot": 1, "metric": "acc", "data_dir": str(mmlu)},
            {
                "name": "gsm8k",
                "num_fewshot": 1,
                "data_dir": str(tmp_path / "gsm8k"),
                "metric": "exact_match (strict-match)",
            },
        ]
    )
    data = run_suite(config, tmp_path / "run").data
    rows = {(m["variant"], m["task"], m["metric"]): m for m in data["metrics"]}
    assert rows[("baseline", "arc_challenge", "acc_norm")]["n"] == 6
    assert rows[("baseline", "mmlu", "acc")]["n"] == 57 * 2  # pooled over every subject
    assert rows[("baseline", "gsm8k", "exact_match (strict-match)")]["n"] == 5
    assert data["details"]["baseline"]["academic"]["mmlu"]["subtasks"][0] == "mmlu_abstract_algebra"
    assert {r["task"] for r in data["recovery"] if r["scope"] == "task"} == {"arc_challenge", "mmlu", "gsm8k"}


@pytest.mark.parametrize("name", ["openllm_v1", "openllm_v2", "realworld"])
def test_preset_suites_use_lm_eval_task_names(name):
    from evalsuite.suites.task_checks import check_task_names

    config = load_suite(name)
    if config.suites.academic:
        check_task_names([t.name for t in config.suites.academic.tasks])
    else:
        assert config.suites.code and config.suites.judge


def test_a_task_missing_its_packages_is_refused_before_any_model_loads(monkeypatch):
    import importlib.util

    from evalsuite import models
    from evalsuite.runner import run_suite
    from evalsuite.suites.task_checks import TASK_PACKAGES, TaskDataError

    real, needed = importlib.util.find_spec, {p for packages in TASK_PACKAGES.values() for p in packages}

    def find_spec(name, *args):  # every task package installed but math_verify
        return None if name == "math_verify" else object() if name in needed else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(models, "load", lambda *a, **k: pytest.fail("a model loaded before the task was checked"))
    with pytest.raises(
        TaskDataError, match=r"'leaderboard_math_hard' needs the Python packages math_verify.*leaderboard"
    ):
        run_suite(load_suite("openllm_v2"))
