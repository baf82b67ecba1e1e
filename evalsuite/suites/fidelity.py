"""The fidelity panel: how closely a variant's next-token distributions follow the baseline's on the same
tokens. Token-level KL divergence KL(baseline || variant) (mean, median, p90, p99, max), top-1 agreement and
the perplexity ratio.

Computed streaming: both models run on the same batch, their final hidden states are projected to the
vocabulary a chunk of positions at a time, and only per-token scalars are kept. Full-vocabulary logits are
never stored, and memory stays bounded by batch x chunk x vocabulary at any context length. Each text's
record is a request of the variant's `EvalLM` ("fidelity"), so the panel is cached in the run's store,
resumable after a kill, and split across ranks like every other request.

    texts = load_texts("tiny_ppl")
    stats = compare(baseline_lm, variant_lm, texts, batch_size=8)
"""

from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from evalsuite.config import FidelitySuite
from evalsuite.errors import UserError
from evalsuite.jsonl import read_jsonl
from evalsuite.reports import format as fmt
from evalsuite.suites.base import BASELINE, CompareContext, ModelContext, Section, Suite, SuiteRun, measure
from evalsuite.tasks import ACADEMIC_DIR

log = logging.getLogger("evalsuite")
CHUNK = 128  # positions projected to the vocabulary at a time
_REMEMBERED: dict | None = None  # the reference's hidden states by (model key, batch), inside `remember_reference`


class FidelityError(UserError, ValueError):
    pass


def load_texts(name_or_path: str) -> list[str]:
    """Texts from a built-in task's JSONL (e.g. tiny_ppl) or any JSONL file with a 'text' field per line."""
    path = ACADEMIC_DIR / f"{name_or_path}.jsonl"
    path = path if path.is_file() else Path(name_or_path)
    if not path.is_file():
        raise FidelityError(f"fidelity text set {name_or_path!r} is neither built in nor a JSONL file")
    texts = []
    for number, row in read_jsonl(path, FidelityError):
        if not isinstance(row.get("text"), str):
            raise FidelityError(f"{path}:{number}: each line needs a string field 'text'")
        texts.append(row["text"])
    if not texts:
        raise FidelityError(f"{path}: holds no texts")
    return texts


def _hidden(model, input_ids: torch.Tensor, rows: list[list[int]], sub_batch: int | None) -> torch.Tensor:
    """Final hidden states (B, T, H), before the output projection; computed `sub_batch` rows at a time when
    given (the same rows in other batch shapes: the batch-size noise floor)."""
    decoder = model.get_decoder()
    if sub_batch is None or sub_batch >= len(rows):
        return decoder(input_ids=input_ids).last_hidden_state
    parts = []
    for start in range(0, len(rows), sub_batch):
        width = max(len(r) for r in rows[start : start + sub_batch])
        part = decoder(input_ids=input_ids[start : start + sub_batch, :width]).last_hidden_state
        parts.append(F.pad(part, (0, 0, 0, input_ids.shape[1] - width)))
    return torch.cat(parts)


@contextlib.contextmanager
def remember_reference():
    """Within this block the reference model's final hidden states are computed once per (model key, batch of
    token rows) and reused: `evalsuite explain` and `fix` compare many restored copies of a variant with the
    same baseline on the same texts, and the baseline's forward would otherwise run again for each copy."""
    global _REMEMBERED
    outer, _REMEMBERED = _REMEMBERED, ({} if _REMEMBERED is None else _REMEMBERED)
    try:
        yield
    finally:
        _REMEMBERED = outer


def _reference_hidden(reference, input_ids: torch.Tensor, rows: list[list[int]]) -> torch.Tensor:
    if _REMEMBERED is None or not reference.model_key:
        return _hidden(reference.model, input_ids, rows, None)
    key = (reference.model_key, tuple(map(tuple, rows)))
    if key not in _REMEMBERED:
        _REMEMBERED[key] = _hidden(reference.model, input_ids, rows, None)
    return _REMEMBERED[key]


def project(model, head: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Logits from final hidden states as the model's own forward makes them: the output projection, then
    the families' post-processing (Cohere's logit_scale, Gemma 2's final softcapping)."""
    logits = head(hidden)
    config = model.config
    if getattr(config, "logit_scale", None) is not None:
        logits = logits * config.logit_scale
    if getattr(config, "final_logit_softcapping", None):
        cap = config.final_logit_softcapping
        logits = torch.tanh(logits / cap) * cap
    return logits


def token_rows(lm, texts: list[str]) -> list[list[int]]:
    """Each text as the model reads it: the prefix token, then the text, cut at the model's length."""
    rows = [[lm.prefix_token_id] + lm.tokenizer.encode(t, add_special_tokens=False) for t in texts]
    return [r[: lm.max_length] for r in rows]


@torch.no_grad()
def _panel_batch(reference, lm, chunk: list[list[int]], sub_batch: int | None) -> list[dict]:
    """Per-text records of one batch: the per-token KL(reference || lm), how many tokens agree on the top-1
    prediction, and both models' summed negative log-likelihood of the text."""
    device = reference.device
    width = max(len(r) for r in chunk)
    input_ids = torch.tensor([r + [0] * (width - len(r)) for r in chunk], device=device)
    valid = torch.tensor([[i < len(r) - 1 for i in range(width)] for r in chunk], device=device)  # predicts t+1
    targets = torch.roll(input_ids, -1, dims=1)
    lm.model_calls += 1
    hidden = (_reference_hidden(reference, input_ids, chunk), _hidden(lm.model, input_ids, chunk, sub_batch))
    heads = (reference.model.get_output_embeddings(), lm.model.get_output_embeddings())
    kld = torch.zeros(valid.shape, device=device)
    agree = torch.zeros(valid.shape, dtype=torch.bool, device=device)
    nll = torch.zeros((2, *valid.shape), dtype=torch.float64, device=device)
    for t0 in range(0, width, CHUNK):
        sl = slice(t0, t0 + CHUNK)
        mask = valid[:, sl]
        if not mask.any():
            continue
        lp_b = F.log_softmax(project(reference.model, heads[0], hidden[0][:, sl]).float(), dim=-1)[mask]
        lp_v = F.log_softmax(project(lm.model, heads[1], hidden[1][:, sl]).float(), dim=-1)[mask]  # (n, V)
        if not (torch.isfinite(lp_b).all() and torch.isfinite(lp_v).all()):
            raise FidelityError(f"{lm.label or 'variant'}: non-finite log-probabilities in the fidelity panel")
        kld[:, sl][mask] = (lp_b.exp() * (lp_b - lp_v)).sum(dim=-1).clamp(min=0)
        agree[:, sl][mask] = lp_b.argmax(-1) == lp_v.argmax(-1)
        tgt = targets[:, sl][mask][:, None]
        nll[0][:, sl][mask] = -lp_b.gather(1, tgt)[:, 0].double()
        nll[1][:, sl][mask] = -lp_v.gather(1, tgt)[:, 0].double()
    out = []
    for b, row in enumerate(chunk):
        n = len(row) - 1
        out.append(
            {
                "tokens": n,
                "kld": kld[b, :n].tolist(),
                "agree": int(agree[b, :n].sum()),
                "reference_nll": float(nll[0, b, :n].sum()),
                "nll": float(nll[1, b, :n].sum()),
            }
        )
    return out


def per_text(reference, lm, texts: list[str], batch_size: int, sub_batch: int | None = None) -> list[dict]:
    """The panel's record of each text (texts of fewer than two tokens are left out), through `lm`'s request
    cache: computed once per text, reference model and batch shape, committed batch by batch (a run killed
    midway resumes where it stopped), and split across ranks in a distributed run. Both models run on the
    same batch; with `sub_batch`, `lm` sees the rows in batches of that size (the batch-size noise floor)."""
    rows = token_rows(reference, texts)
    keep = [i for i, r in enumerate(rows) if len(r) > 1]
    args = [(texts[i], reference.model_key, batch_size, sub_batch) for i in keep]

    def compute(todo: list[int]):
        order = sorted(todo, key=lambda j: (-len(rows[keep[j]]), j))
        for number, start in enumerate(range(0, len(order), batch_size)):
            if lm.skips(number):
                continue
            chosen = order[start : start + batch_size]
            records = _panel_batch(reference, lm, [rows[keep[j]] for j in chosen], sub_batch)
            yield list(zip(chosen, records, strict=True))

    return lm.cached("fidelity", args, compute)


def summarize(records: list[dict]) -> dict:
    """The panel over all texts: KLD mean, median, p90, p99 and max over tokens, top-1 agreement, perplexities."""
    count = sum(r["tokens"] for r in records)
    if count == 0:
        raise FidelityError("the fidelity texts hold no tokens to compare")
    kld = np.concatenate([np.asarray(r["kld"], dtype=np.float64) for r in records])
    base_ppl = math.exp(sum(r["reference_nll"] for r in records) / count)
    var_ppl = math.exp(sum(r["nll"] for r in records) / count)
    return {
        "tokens": count,
        "kld_mean": float(kld.mean()),
        "kld_median": float(np.median(kld)),
        "kld_p90": float(np.quantile(kld, 0.9)),
        "kld_p99": float(np.quantile(kld, 0.99)),
        "kld_max": float(kld.max()),
        "top1_agreement": sum(r["agree"] for r in records) / count,
        "baseline_ppl": base_ppl,
        "variant_ppl": var_ppl,
        "ppl_ratio": var_ppl / base_ppl,
    }


def compare(reference, lm, texts: list[str], batch_size: int, sub_batch: int | None = None) -> dict:
    """Per-token KL divergence, top-1 agreement and perplexity of both models over `texts`."""
    return summarize(per_text(reference, lm, texts, batch_size, sub_batch))


class Fidelity(Suite):
    """Each variant's next-token distributions against the baseline's on the same tokens; the baseline stays
    resident while the variants run (`needs_baseline`)."""

    name, title = "fidelity", "Fidelity (token-level, against the baseline)"
    Spec = FidelitySuite
    needs_baseline = True

    def plan(self) -> None:
        self.sets = {Path(n).stem: load_texts(n)[: self.spec.limit] for n in self.spec.texts}

    def evaluate(self, ctx: ModelContext) -> SuiteRun:
        out = SuiteRun()
        if ctx.baseline_lm is None or ctx.name == BASELINE:
            return out
        for name, texts in self.sets.items():
            calls = ctx.lm.model_calls
            out.outputs[name] = compare(ctx.baseline_lm, ctx.lm, texts, self.spec.batch_size)
            out.model_calls[name] = ctx.lm.model_calls - calls
            log.info("  %-14s %-22s %.5f", name, "kld_mean", out.outputs[name]["kld_mean"])
        return out

    def compare(self, runs: dict[str, SuiteRun], ctx: CompareContext) -> dict:
        return {variant: run.outputs for variant, run in runs.items() if run.outputs}

    @classmethod
    def measures(cls, section: dict) -> list[dict]:
        return [
            measure(cls.name, name, "kld_mean", variant, t.get("kld_mean"))
            for variant, sets in section.items()
            for name, t in sets.items()
        ]

    @classmethod
    def report(cls, data: dict) -> Section | None:
        entries = [(v, n, t) for v, sets in data.get("suites", {}).get(cls.name, {}).items() for n, t in sets.items()]
        floor = data.get("noise_floor", {})
        if floor.get("baseline"):
            b = floor["baseline"]
            label = f"noise floor: baseline at batch {b['batch_size']} vs {b['other_batch_size']}"
            entries += [(label, name, t) for name, t in b["tokens"].items()]
        for v, twin in floor.get("variants", {}).items():
            label = f"noise floor: {v} {' vs '.join(twin['backends'])}"
            entries += [(label, name, t) for name, t in twin["tokens"].items()]
        rows = [
            [
                v,
                name,
                str(t["tokens"]),
                *(f"{t[k]:.2e}" for k in ("kld_mean", "kld_median", "kld_p90", "kld_p99", "kld_max")),
                fmt.pct(t["top1_agreement"], 2),
                f"{t['ppl_ratio']:.4f}",
            ]
            for v, name, t in entries
        ]
        header = [
            "variant",
            "texts",
            "tokens",
            "KLD mean",
            "median",
            "p90",
            "p99",
            "max",
            "top-1 agreement",
            "PPL ratio",
        ]
        return Section("fidelity", cls.title, header, rows) if rows else None
