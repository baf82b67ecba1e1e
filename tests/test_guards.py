"""NaN or Inf in the logits is a hard failure that names the variant, the task, the sample and the first layer
whose output is non-finite."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from evalsuite import models, runner
from evalsuite.config import parse_suite
from evalsuite.guards import NonFiniteError
from evalsuite.lm import EvalLM
from evalsuite.models import EMBEDDED
from evalsuite.runner import run_suite
from evalsuite.suites import academic

TINY = EMBEDDED["embedded:tiny"]
LIMIT = 6
TASK_DATA = Path(academic.__file__).parents[2] / "tasks" / "academic"


def suite(model, variants=(), task="tiny_mc"):
    return parse_suite(
        {
            "name": "nan",
            "model": {"path": str(model)},
            "variants": list(variants) or ["W8A8_INT8"],
            "suites": {"academic": {"tasks": [task], "limit": LIMIT}},
            "run": {"batch_size": 4, "bootstrap_iters": 0},
        }
    )


def questions(task: str) -> list[str]:
    lines = (TASK_DATA / f"{task}.jsonl").read_text().splitlines()[:LIMIT]
    return [json.loads(line)["question"] for line in lines]


def named_sample(message: str) -> str:
    match = re.search(r", sample (.*): the first layer", message)
    assert match, f"the error does not name a sample: {message}"
    return match.group(1)


def test_nan_in_a_baseline_weight_names_the_baseline_the_task_the_sample_and_the_layer(tmp_path):
    model = tmp_path / "model"
    shutil.copytree(TINY, model)
    weights = load_file(model / "model.safetensors")
    name = "model.layers.1.mlp.down_proj.weight"
    assert name in weights, f"the embedded model has no {name}; it has {sorted(weights)[:8]}..."
    weights[name][3, 5] = float("nan")
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})

    with pytest.raises(NonFiniteError) as caught:
        run_suite(suite(model), tmp_path / "run")
    message = str(caught.value)
    assert "baseline / tiny_mc" in message, message
    assert message.endswith("the first layer with a NaN/Inf output is model.layers.1.mlp.down_proj"), message
    sample = named_sample(message)
    assert any(q in sample for q in questions("tiny_mc")), f"the named sample is none of the task's documents: {sample}"


def test_nan_in_a_variant_scale_names_the_variant_and_its_layer(tmp_path, monkeypatch):
    quantize_variant = runner.quantize_variant

    def poisoned(spec, loaded, *args, **kwargs):
        out = quantize_variant(spec, loaded, *args, **kwargs)
        layer = loaded.model.get_submodule("model.layers.0.self_attn.v_proj")
        assert type(layer).__name__ == "QuantLinear", f"v_proj was not quantized: {type(layer).__name__}"
        with torch.no_grad():
            layer.scale.view(-1)[0] = float("nan")
        return out

    monkeypatch.setattr(runner, "quantize_variant", poisoned)
    with pytest.raises(NonFiniteError) as caught:
        run_suite(suite(TINY, ["W8A8_INT8"]), tmp_path / "run")
    message = str(caught.value)
    assert "W8A8_INT8 / tiny_mc" in message, message
    assert message.endswith("is model.layers.0.self_attn.v_proj"), message
    assert any(q in named_sample(message) for q in questions("tiny_mc")), message


def _unique_token(tokenizer, docs: list[dict]) -> tuple[int, int]:
    """(document index, token id) of a token of one document's prompt that occurs in no other document's
    prompt or choices."""
    encode = lambda text: set(tokenizer.encode(text, add_special_tokens=False))  # noqa: E731
    prompts = [encode(f"Question: {d['question']}\nAnswer:") for d in docs]
    everything = [p | encode(" ".join(d.get("choices", []))) for d, p in zip(docs, prompts, strict=True)]
    for i, mine in enumerate(prompts):
        only = sorted(mine - set().union(*(t for j, t in enumerate(everything) if j != i)))
        if only:
            return i, only[0]
    raise AssertionError(f"no prompt token occurs in exactly one of {docs}")


GENERATION_TASK = """\
task: tiny_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: tiny_gen.jsonl
test_split: test
output_type: generate_until
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_target: "{{answer}}"
generation_kwargs: {until: ["\\n"], max_gen_toks: 8, do_sample: false}
metric_list: [{metric: exact_match, aggregation: mean, higher_is_better: true}]
"""


def _generation_task(folder: Path) -> list[dict]:
    """tiny_arith's first documents, one with a word no other has (the arithmetic prompts share every token):
    one of the two shortest, which sorts after the other, so that it is not the first row of its batch."""
    docs = [json.loads(line) for line in (TASK_DATA / "tiny_arith.jsonl").read_text().splitlines()[:LIMIT]]
    assert [d["question"] for d in docs[::3]] == ["What is 48 plus 6?", "What is 66 minus 0?"], "tiny_arith changed"
    docs[3]["question"] = "What is 66 grape 0?"
    folder.mkdir()
    (folder / "tiny_gen.yaml").write_text(GENERATION_TASK)
    (folder / "tiny_gen.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    return docs


@pytest.mark.parametrize("task", ["tiny_mc", "tiny_gen"], ids=["loglikelihood", "generation"])
def test_the_named_sample_is_the_one_with_non_finite_logits(task, tmp_path):
    """Only one document contains the poisoned token, so only its row goes non-finite: the error must name it,
    not whichever row of its batch comes first."""
    if task == "tiny_gen":
        docs, include = _generation_task(tmp_path / "tasks"), [str(tmp_path / "tasks")]
    else:
        docs, include = [json.loads(line) for line in (TASK_DATA / f"{task}.jsonl").read_text().splitlines()], []
    academic_suite = {"tasks": [task], "limit": LIMIT, "include": include}
    config = parse_suite({"name": "s", "variants": ["W4A16"], "suites": {"academic": academic_suite}})
    resolved = academic.resolve_tasks(config.suites.academic)[0]
    loaded = models.load(models.resolve_model("embedded:tiny"), "cpu", "float32")
    index, token = _unique_token(loaded.tokenizer, docs[:LIMIT])
    head = loaded.model.get_output_embeddings()  # untie it from the embedding: only the inputs are poisoned
    head.weight = torch.nn.Parameter(head.weight.detach().clone())
    with torch.no_grad():
        loaded.model.get_input_embeddings().weight[token, 7] = float("nan")
    lm = EvalLM(loaded.model, loaded.tokenizer, 4, label="poisoned")
    with pytest.raises(NonFiniteError) as caught:
        academic.run_task(lm, resolved, 1234, 0)
    message = str(caught.value)
    assert f"poisoned / {task}" in message, message
    assert message.endswith("is model.embed_tokens"), message
    question = docs[index]["question"]
    assert question in named_sample(message), f"expected document {index} ({question!r}) to be named: {message}"
