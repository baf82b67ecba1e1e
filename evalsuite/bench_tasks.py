"""Synthetic task sets at leaderboard sizes for `evalsuite bench harness --scale`: local data in the original
datasets' schemas, read by lm-eval's own task files (MMLU 5-shot, HellaSwag 10-shot, ARC-Challenge 25-shot,
GSM8K 5-shot), so requests have the structure that decides speed: MMLU's few-shot examples are the first five
dev questions of a subject, shared by all its questions; HellaSwag and ARC draw theirs at random per question
and score multi-token endings; GSM8K generates up to 256 tokens with stop sequences.

    configs = write_task_sets(Path("data"), scale=0.02, seed=0, tokens_per_word=3.1)  # {task: [lm-eval configs]}

The text is seeded pseudo-words, its lengths drawn (log-normal) around each dataset's typical token counts,
so contexts come out about as long as the real ones: MMLU ~600 tokens, HellaSwag ~750, ARC ~900, GSM8K ~900.
`scale` is the fraction of each evaluation split that is written (MMLU keeps whole subjects, in order, until
the fraction is reached, so the shared prefixes keep their real fan-out); few-shot pools are not scaled.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

FULL_SIZES = {"mmlu": 14042, "hellaswag": 10042, "arc_challenge": 1172, "gsm8k": 1319}
FEWSHOT = {"mmlu": 5, "hellaswag": 10, "arc_challenge": 25, "gsm8k": 5}
SYLLABLES = [c + v for c in "bcdfghklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]


class Text:
    """Seeded pseudo-words, about `tokens_per_word` tokens each, drawn with Zipf-like frequencies."""

    def __init__(self, rng: random.Random, tokens_per_word: float, vocabulary: int = 3000):
        self.rng, self.tokens_per_word = rng, tokens_per_word
        self.words = ["".join(rng.choices(SYLLABLES, k=rng.randint(1, 4))) for _ in range(vocabulary)]
        self.weights = [1 / (rank + 1) for rank in range(vocabulary)]

    def length(self, median: float, sigma: float, low: int, high: int) -> int:
        """A token count drawn log-normally around `median`, clipped to [low, high]."""
        return max(low, min(high, round(self.rng.lognormvariate(math.log(median), sigma))))

    def __call__(self, median: float, sigma: float = 0.5, low: int = 1, high: int = 2000) -> str:
        n = max(1, round(self.length(median, sigma, low, high) / self.tokens_per_word))
        words = self.rng.choices(self.words, weights=self.weights, k=n)
        for i in range(11, n, 12):
            words[i] += "."
        return " ".join(words).capitalize()


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _count(task: str, scale: float) -> int:
    return max(1, round(FULL_SIZES[task] * scale))


def _mmlu(root: Path, text: Text, subjects: list[str], scale: float) -> list[str]:
    """Subject sizes like MMLU's (100 to ~1500, summing to 14,042); whole subjects in order up to the scale."""
    weights = [text.rng.lognormvariate(0, 0.8) for _ in subjects]
    spare = FULL_SIZES["mmlu"] - 100 * len(subjects)
    sizes = [100 + int(spare * w / sum(weights)) for w in weights]
    sizes[0] += FULL_SIZES["mmlu"] - sum(sizes)
    left, used = _count("mmlu", scale), []

    def doc(subject: str) -> dict:
        choices = [text(5, 0.8, 1, 80) for _ in range(4)]
        return {
            "question": text(35, 0.7, 8, 400),
            "subject": subject,
            "choices": choices,
            "answer": text.rng.randrange(4),
        }

    for subject, size in zip(subjects, sizes, strict=True):
        if left <= 0:
            break
        n = min(size, left)
        left -= n
        _write(root / subject / "dev.jsonl", [doc(subject) for _ in range(5)])
        _write(root / subject / "test.jsonl", [doc(subject) for _ in range(n)])
        used.append(f"mmlu_{subject}")
    return used


def _hellaswag(root: Path, text: Text, scale: float) -> None:
    def doc(i: int) -> dict:
        ctx_a, ctx_b = text(28, 0.5, 5, 200), text(8, 0.6, 1, 60).lower()
        return {
            "ind": i,
            "activity_label": text(3, 0.4, 1, 10),
            "ctx_a": ctx_a,
            "ctx_b": ctx_b,
            "ctx": f"{ctx_a} {ctx_b}",
            "endings": [text(22, 0.4, 3, 120).lower() for _ in range(4)],
            "source_id": f"synthetic~{i}",
            "split": "val",
            "split_type": "indomain",
            "label": str(text.rng.randrange(4)),
        }

    _write(root / "train.jsonl", [doc(i) for i in range(2000)])
    _write(root / "validation.jsonl", [doc(i) for i in range(_count("hellaswag", scale))])


def _arc(root: Path, text: Text, scale: float) -> None:
    def doc(i: int) -> dict:
        labels = ["A", "B", "C", "D"]
        choices = {"text": [text(4, 0.7, 1, 40) for _ in labels], "label": labels}
        return {
            "id": f"arc-{i}",
            "question": text(20, 0.5, 5, 150),
            "choices": choices,
            "answerKey": text.rng.choice(labels),
        }

    folder = root / "ARC-Challenge"
    _write(folder / "train.jsonl", [doc(i) for i in range(1119)])
    _write(folder / "validation.jsonl", [doc(i) for i in range(50)])
    _write(folder / "test.jsonl", [doc(i) for i in range(_count("arc_challenge", scale))])


def _gsm8k(root: Path, text: Text, scale: float) -> None:
    def doc() -> dict:
        answer = f"{text(100, 0.5, 20, 400)}\n#### {text.rng.randint(1, 999)}"
        return {"question": text(55, 0.4, 15, 250), "answer": answer}

    _write(root / "main" / "train.jsonl", [doc() for _ in range(1000)])
    _write(root / "main" / "test.jsonl", [doc() for _ in range(_count("gsm8k", scale))])


def write_task_sets(
    root: Path, scale: float, seed: int, tokens_per_word: float, max_gen_toks: int = 256
) -> dict[str, list[dict]]:
    """Write the four task sets under root; {task: lm-eval task configs reading them}. GSM8K generates up
    to `max_gen_toks` tokens (256, as lm-eval's task; fewer for a model with few positions)."""
    from evalsuite.suites.academic import task_manager
    from evalsuite.suites.local_data import leaf_tasks, local_config

    if not 0 < scale <= 1:
        raise ValueError(f"--scale {scale}: a fraction of the leaderboard sizes, in (0, 1]")
    manager = task_manager(True)
    text = Text(random.Random(seed), tokens_per_word)
    subjects = [leaf.removeprefix("mmlu_") for leaf in leaf_tasks("mmlu", manager)]
    leaves = {"mmlu": _mmlu(root / "mmlu", text, subjects, scale)}
    _hellaswag(root / "hellaswag", text, scale)
    _arc(root / "arc", text, scale)
    _gsm8k(root / "gsm8k", text, scale)
    folders = {"hellaswag": "hellaswag", "arc_challenge": "arc", "gsm8k": "gsm8k"}
    leaves.update({task: [task] for task in folders})
    configs = {}
    for task, names in leaves.items():
        folder = root / folders.get(task, "mmlu")
        configs[task] = [{**local_config(n, folder, manager.task_index), "num_fewshot": FEWSHOT[task]} for n in names]
    for config in configs["gsm8k"]:
        config["generation_kwargs"] = {**config["generation_kwargs"], "max_gen_toks": max_gen_toks}
    return configs


def tokens_per_word(tokenizer, seed: int = 0) -> float:
    """How many tokens the tokenizer spends on one of our pseudo-words, on average (spaces included)."""
    text = Text(random.Random(seed), 1.0)
    sample = text(2000, 0.0, 2000, 2000)
    return len(tokenizer.encode(sample, add_special_tokens=False)) / len(sample.split())
