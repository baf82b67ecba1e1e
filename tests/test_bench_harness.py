"""The leaderboard-shaped task sets have the structure that decides speed, and on the embedded model in
float32 our runner and lm-eval's HF backend agree on them: identical metrics, log-likelihoods within 1e-4,
identical greedy generations."""

import json
import random

from evalsuite.bench_harness import main
from evalsuite.bench_tasks import FEWSHOT, Text, write_task_sets


def test_task_sets_follow_the_leaderboard_layout(tmp_path):
    configs = write_task_sets(tmp_path, 0.01, 0, 3.0)
    mmlu = configs["mmlu"]
    assert 1 <= len(mmlu) < 57 and all(c["num_fewshot"] == 5 for c in mmlu)
    tests = [json.loads(x) for c in mmlu for x in open(c["dataset_kwargs"]["data_files"]["test"])]
    assert len(tests) == round(14042 * 0.01)  # whole subjects in order, the last one cut to the scale
    assert len(open(tmp_path / "hellaswag" / "validation.jsonl").readlines()) == round(10042 * 0.01)
    assert {t: configs[t][0]["num_fewshot"] for t in FEWSHOT} == FEWSHOT
    assert configs["gsm8k"][0]["generation_kwargs"]["max_gen_toks"] == 256
    again = write_task_sets(tmp_path / "again", 0.01, 0, 3.0)
    first = lambda c: open(c["dataset_kwargs"]["data_files"]["test"]).read()  # noqa: E731
    assert first(again["mmlu"][0]) == first(mmlu[0])  # seeded


def test_text_lengths_follow_the_drawn_token_counts():
    text = Text(random.Random(1), tokens_per_word=2.0)
    words = [len(text(60, 0.0, 60, 60).split()) for _ in range(5)]
    assert words == [30] * 5


def test_both_harnesses_agree_in_float32_on_the_embedded_model(tmp_path):
    out = tmp_path / "out"
    args = ["--scale", "0.001", "--limit", "2", "--tasks", "mmlu,hellaswag,gsm8k", "--device", "cpu"]
    assert main([*args, "--dtype", "float32", "--batch-size", "4", "--reference-spread", "--out", str(out)]) == 0
    rows = {r["task"]: r for r in json.loads((out / "bench-harness.json").read_text())["rows"]}
    assert set(rows) == {"mmlu", "hellaswag", "gsm8k"}
    for task in ("mmlu", "hellaswag"):
        assert rows[task]["max_loglikelihood_diff"] < 1e-4 and max(rows[task]["metric_abs_diff"].values()) == 0
    assert rows["gsm8k"]["docs"] == 1 and rows["mmlu"]["docs"] == 2
    assert rows["gsm8k"]["identical_generations"] == rows["gsm8k"]["generations"] == 2  # one per filter
    table = (out / "bench-harness.md").read_text()
    assert "| mmlu |" in table
    # lm-eval against itself at batch size 1: a spread for each log-likelihood task, none for generation
    assert all(0 <= rows[t]["lm_eval_batch1_loglikelihood_diff"] < 1e-4 for t in ("mmlu", "hellaswag"))
    assert "lm_eval_batch1_loglikelihood_diff" not in rows["gsm8k"]
    assert "| hellaswag | " in table.split("lm-eval batch 1 vs batched")[1]
