"""The fidelity panel: how closely a variant's next-token distributions follow the baseline's on the same
tokens. Token-level KL divergence KL(baseline || variant) (mean, median, p90, p99, max), top-1 agreement and
the perplexity ratio.

Computed streaming: both models run on the same batch, their final hidden states are projected to the
vocabulary a chunk of positions at a time, and only per-token scalars are kept. Full-vocabulary logits are
never stored, and memory stays bounded by batch x chunk x vocabulary at any context length.

    texts = load_texts("tiny_ppl")
    stats = compare(baseline_lm, variant_lm, texts, batch_size=8)
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from evalsuite.config import FidelitySuite
from evalsuite.errors import UserError
from evalsuite.hashing import text_digest
from evalsuite.jsonl import read_jsonl
from evalsuite.reports import format as fmt
from evalsuite.suites.base import BASELINE, CompareContext, ModelContext, Section, Suite, SuiteRun, measure
from evalsuite.tasks import ACADEMIC_DIR

log = logging.getLogger("evalsuite")
CHUNK = 128  # positions projected to the vocabulary at a time


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


@torch.no_grad()
def compare(baseline_lm, variant_lm, texts: list[str], batch_size: int, variant_batch: int | None = None) -> dict:
    """Per-token KL divergence, top-1 agreement and perplexity of both models over `texts`. With
    `variant_batch`, the second model sees the same rows in batches of that size."""
    tokenizer = baseline_lm.tokenizer
    rows = [[baseline_lm.prefix_token_id] + tokenizer.encode(t, add_special_tokens=False) for t in texts]
    rows = [r[: baseline_lm.max_length] for r in rows if len(r) > 1]
    rows.sort(key=len, reverse=True)
    device = baseline_lm.device
    kld_values, agree, base_nll, var_nll, count = [], 0, 0.0, 0.0, 0
    heads = (baseline_lm.model.get_output_embeddings(), variant_lm.model.get_output_embeddings())
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        width = max(len(r) for r in chunk)
        input_ids = torch.tensor([r + [0] * (width - len(r)) for r in chunk], device=device)
        valid = torch.tensor([[i < len(r) - 1 for i in range(width)] for r in chunk], device=device)  # predicts t+1
        targets = torch.roll(input_ids, -1, dims=1)
        hidden = (
            _hidden(baseline_lm.model, input_ids, chunk, None),
            _hidden(variant_lm.model, input_ids, chunk, variant_batch),
        )
        for t0 in range(0, width, CHUNK):
            sl = slice(t0, t0 + CHUNK)
            mask = valid[:, sl]
            if not mask.any():
                continue
            lp_b = F.log_softmax(project(baseline_lm.model, heads[0], hidden[0][:, sl]).float(), dim=-1)[mask]
            lp_v = F.log_softmax(project(variant_lm.model, heads[1], hidden[1][:, sl]).float(), dim=-1)[mask]  # (n, V)
            if not (torch.isfinite(lp_b).all() and torch.isfinite(lp_v).all()):
                raise FidelityError("non-finite log-probabilities in the fidelity panel")
            kld = (lp_b.exp() * (lp_b - lp_v)).sum(dim=-1).clamp(min=0)  # (n,)
            kld_values.append(kld.cpu().numpy())
            agree += int((lp_b.argmax(-1) == lp_v.argmax(-1)).sum())
            tgt = targets[:, sl][mask]
            base_nll -= float(lp_b.gather(1, tgt[:, None]).sum())
            var_nll -= float(lp_v.gather(1, tgt[:, None]).sum())
            count += int(mask.sum())
    if count == 0:
        raise FidelityError("the fidelity texts hold no tokens to compare")
    kld = np.concatenate(kld_values)
    base_ppl, var_ppl = math.exp(base_nll / count), math.exp(var_nll / count)
    return {
        "tokens": count,
        "kld_mean": float(kld.mean()),
        "kld_median": float(np.median(kld)),
        "kld_p90": float(np.quantile(kld, 0.9)),
        "kld_p99": float(np.quantile(kld, 0.99)),
        "kld_max": float(kld.max()),
        "top1_agreement": agree / count,
        "baseline_ppl": base_ppl,
        "variant_ppl": var_ppl,
        "ppl_ratio": var_ppl / base_ppl,
    }


def cached(store, baseline_lm, lm, name: str, texts: list[str], batch: int) -> dict:
    """The fidelity panel of one variant against the baseline, from the store when both models and the texts
    are those it was computed for (a rerun, or a resume after kill -9, skips it)."""
    payload = json.dumps([name, texts, batch, baseline_lm.model_key], sort_keys=True)
    task_key = f"fidelity:{name}:{text_digest(payload)}"
    found = store.get_samples(lm.model_key, task_key)
    if found:
        return found[0]
    result = compare(baseline_lm, lm, texts, batch)
    store.put_samples(lm.model_key, task_key, [result])
    return result


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
            out.outputs[name] = cached(ctx.store, ctx.baseline_lm, ctx.lm, name, texts, self.spec.batch_size)
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
            entries += [(f"noise floor: {v} triton vs torch-ref", name, t) for name, t in twin["tokens"].items()]
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
