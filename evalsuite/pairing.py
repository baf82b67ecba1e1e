"""Baseline and variant records paired by document: the comparability check, a metric's per-document values
and positions, and the answers that flipped.

    base, variant = aligned(base_task.samples, task.samples, "academic/gsm8k (W4A16)")   # or ComparabilityError
    values, positions = metric_values(base, "acc", filter_of("acc", base), documents(base))
"""

from __future__ import annotations

import json

from evalsuite import stats
from evalsuite.errors import UserError


class ComparabilityError(UserError, RuntimeError):
    """Baseline and variant were not given the same prompts, so comparing them would be meaningless."""


SHOWN_CHARS = 40  # of each prompt around the first difference, in a comparability error
SHOWN_DOCS = 5


def _first_difference(a: str, b: str) -> tuple[int, str, str]:
    """Where two texts first differ, and each one's text around that point."""
    at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    start = max(0, at - SHOWN_CHARS // 2)
    return at, a[start : at + SHOWN_CHARS], b[start : at + SHOWN_CHARS]


def _prompt_difference(base: dict, variant: dict) -> str:
    """What differs between two records' requests, in words, with the first differing text of each."""
    for field, text in (("prompt", str), ("choices", lambda c: json.dumps(c, ensure_ascii=False, default=str))):
        a, b = base.get(field), variant.get(field)
        if a == b:
            continue
        if a is None or b is None:
            return f"only the {'variant' if a is None else 'baseline'} records its {field}"
        at, shown_a, shown_b = _first_difference(text(a), text(b))
        verb = "differ" if field == "choices" else "differs"
        return f"the {field} first {verb} at character {at}: baseline {shown_a!r} vs variant {shown_b!r}"
    if "prompt" not in base:
        return "the records carry no prompt text to show"
    return "the prompt text and choices are equal, so another argument of the request differs (generation settings)"


def aligned(base: list[dict], variant: list[dict], where: str) -> tuple[list[dict], list[dict]]:
    """Baseline and variant records in the same document order; ComparabilityError unless both were scored on
    the same documents with the same prompts."""
    key = lambda r: (r["filter"], r["doc_id"])  # noqa: E731
    b, v = sorted(base, key=key), sorted(variant, key=key)
    if [key(r) for r in b] != [key(r) for r in v]:
        kb, kv = {key(r) for r in b}, {key(r) for r in v}
        only = lambda keys: ", ".join(str(d) for _, d in sorted(keys)[:SHOWN_DOCS]) or "none"  # noqa: E731
        raise ComparabilityError(
            f"{where}: baseline and variant were scored on different documents ({len(b)} vs {len(v)} records; "
            f"baseline only: {only(kb - kv)}; variant only: {only(kv - kb)}); evaluate both with the same task "
            "data and limit"
        )
    for rb, rv in zip(b, v, strict=True):
        if rb["prompt_hash"] != rv["prompt_hash"]:
            raise ComparabilityError(
                f"{where}: document {rb['doc_id']} was given different prompts to the baseline and the variant "
                f"({_prompt_difference(rb, rv)}; prompt hash {rb['prompt_hash']} vs {rv['prompt_hash']}); refusing "
                "to compare: evaluate both with the same task files, few-shot and generation settings"
            )
    return b, v


def values_of(records: list[dict], metric: str, filter_name: str | None) -> stats.Values | None:
    """A metric's per-document values in the records' order (of one filter where it is given)."""
    raw = [r[metric] for r in records if metric in r and (filter_name is None or r["filter"] == filter_name)]
    return stats.values_of(metric.split(" (")[0], raw)


def documents(records: list[dict]) -> dict:
    """{doc_id: position} of the documents of aligned records, in their order: what a bootstrap resamples."""
    return {doc: i for i, doc in enumerate(dict.fromkeys(r["doc_id"] for r in records))}


def metric_values(records: list[dict], metric: str, filter_name: str | None, docs: dict) -> tuple:
    """(values, positions): a metric's per-document values (None when they cannot be resampled) and the
    position in `docs` of the document each value belongs to."""
    chosen = [r for r in records if metric in r and (filter_name is None or r["filter"] == filter_name)]
    return values_of(records, metric, filter_name), [docs[r["doc_id"]] for r in chosen]


def filter_of(metric: str, records: list[dict]) -> str | None:
    """The one filter whose records hold `metric`, or None when several do."""
    filters = {r["filter"] for r in records if metric in r}
    return next(iter(filters)) if len(filters) == 1 else None


MAX_FLIPPED_SAMPLES = 100  # per variant and task, for the report's explorer


def _shown(record: dict, prediction) -> str:
    """A prediction as text: a multiple-choice index becomes its choice."""
    choices = record.get("choices")
    if isinstance(prediction, int) and choices and 0 <= prediction < len(choices):
        return str(choices[prediction]).strip()
    return str(prediction)


def flipped_samples(base: list[dict], variant: list[dict], metric: str, filter_name: str | None) -> list[dict]:
    """The documents whose primary metric changed between baseline and variant, both answers side by side."""
    out = []
    for b, v in zip(base, variant, strict=True):
        if filter_name is not None and b["filter"] != filter_name or metric not in b or b[metric] == v[metric]:
            continue
        out.append(
            {
                "doc_id": b["doc_id"],
                "direction": "correct → wrong" if b[metric] > v[metric] else "wrong → correct",
                "prompt": str(b.get("prompt", ""))[-1500:],
                "target": _shown(b, b.get("target")),
                "baseline": _shown(b, b.get("prediction")),
                "variant": _shown(v, v.get("prediction")),
            }
        )
        if len(out) == MAX_FLIPPED_SAMPLES:
            break
    return out
