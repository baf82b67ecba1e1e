"""The embedded model's training is deterministic, its evaluation items are held out of its training text,
and its outlier-channel copy computes the same function."""

import itertools
import json

import pytest
import torch

from evalsuite import models
from evalsuite.reference import corpus, train, world
from evalsuite.reference.outliers import add_outlier_channels
from evalsuite.tasks import HERE as TASKS


def test_training_is_deterministic(tmp_path):
    for run in ("a", "b"):
        train.train(tmp_path / run, steps=2, batch=2, seed=3, threads=1, write_tasks=False, log_every=0)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    assert (tmp_path / "a" / "tokenizer.json").read_text() == (tmp_path / "b" / "tokenizer.json").read_text()


def test_evaluation_items_never_appear_in_training_text():
    sets = corpus.build_eval_sets()
    held = sets.held_out()
    docs = [
        "".join(d) if isinstance(d, tuple) else d for d in itertools.islice(corpus.training_documents(0, held), 60000)
    ]
    text = "\n".join(docs)
    for item in sets.mc:
        assert world.mc_prompt(item) not in text
    for item in sets.arith:
        assert item.question not in text
    for f in sets.code:
        assert f.prompt not in text
    for user, _ in sets.chat + sets.judge:
        assert f"User: {user}\n" not in text and f"Question: {user}\n" not in text
    for story in sets.ppl[:20]:
        assert story not in text


def test_the_committed_task_data_is_the_generated_evaluation_sets():
    sets = corpus.build_eval_sets()
    rows = [json.loads(line) for line in (TASKS / "academic" / "tiny_mc.jsonl").read_text().splitlines()]
    assert [r["question"] for r in rows] == [m.question for m in sets.mc]
    arith = [json.loads(line) for line in (TASKS / "academic" / "tiny_arith.jsonl").read_text().splitlines()]
    assert [r["answer"] for r in arith] == [str(a.value) for a in sets.arith]


def test_the_committed_model_is_small_and_loads():
    total = sum(f.stat().st_size for f in models.EMBEDDED["embedded:tiny"].iterdir())
    assert total <= 10 * 2**20
    loaded = models.load(models.resolve_model("embedded:tiny"), "cpu", "float32")
    assert type(loaded.model).__name__ == "LlamaForCausalLM"


def test_outlier_channels_keep_the_function(tiny):
    ids = torch.tensor([[5, 17, 33, 2, 99, 250, 7, 64, 128, 300]])
    fresh = models.load(tiny.source, "cpu", "float32")
    with torch.no_grad():
        before = fresh.model(input_ids=ids).logits
        add_outlier_channels(fresh.model, 32.0)
        after = fresh.model(input_ids=ids).logits
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
    layer = fresh.model.model.layers[0]
    assert layer.input_layernorm.weight[3].abs() > 10 * layer.input_layernorm.weight.abs().median()


@pytest.mark.parametrize("kind", world.FACT_QUESTIONS)
def test_judge_reasoning_labels(kind):
    question, truth = world.fact_question("frog", kind)
    import random

    wrong = world.wrong_fact(random.Random(0), "frog", kind)
    assert world.judge_reasoning(truth, truth, wrong).endswith("[[A>B]]")
    assert world.judge_reasoning(truth, wrong, truth).endswith("[[B>A]]")
    assert world.judge_reasoning(truth, truth, truth).endswith("[[A=B]]")
