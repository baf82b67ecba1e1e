"""How `EvalLM` lays out scoring inputs and reads scores back: continuations that share a context packed into
one row behind it, rows that share a leading prefix (MMLU's few-shot examples, the same for every question of
a subject) grouped to compute that prefix once, the attention mask of packed rows, and every target token's
log-probability gathered from a batch's logits."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from evalsuite.quant_schemes.kv_cache import ATTENTION as KV_ATTENTION

MIN_SHARED_CONTEXT = 8  # a shorter shared context is not worth packing its continuations behind it
MIN_SHARED_PREFIX = 32  # a shorter common prefix of different rows is recomputed in every row
MIN_PREFIX_SAVING = 1024  # prefix tokens a group must save to be worth its own batches

Batch = list[tuple[int, object]]  # (index into the request list, result)


@dataclass
class Row:
    """One model input row: its tokens, position ids (packed rows only), how many leading tokens are the
    shared context, the continuation segments, and what to score: (request index, positions, token ids)."""

    tokens: list[int]
    positions: list[int] | None
    ctx_len: int
    segments: list[tuple[int, int]]
    targets: list[tuple[int, list[int], list[int]]]

    def first_target(self) -> int:
        """The first position whose logits are read: a prefix computed apart must end before it."""
        return min(p for _, preds, _ in self.targets for p in preds)

    def cut(self, n: int) -> Row:
        """This row without its first n tokens (computed apart, as a shared prefix); positions stay absolute."""
        return Row(
            self.tokens[n:],
            None if self.positions is None else self.positions[n:],
            self.ctx_len - n,
            [(start - n, end - n) for start, end in self.segments],
            [(index, [p - n for p in preds], cont) for index, preds, cont in self.targets],
        )


def plan_rows(items: list[tuple[int, list[int], list[int]]], max_length: int, share_context: bool) -> list[Row]:
    """Model inputs for scoring. Continuations that share a context are packed into one row after it (each
    attends to the context and to itself only), so the context is computed once (one-token continuations
    are all read at the context's last position: no packing, no mask); others get a row each, truncated on
    the left to max_length tokens as lm-eval does."""
    groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
    for index, ctx, cont in items:
        groups.setdefault(tuple(ctx), []).append((index, cont))
    rows = []
    for ctx, members in groups.items():
        packed_len = len(ctx) + sum(len(cont) - 1 for _, cont in members)
        saved = (len(members) - 1) * len(ctx)  # context tokens not recomputed
        worth = len(ctx) >= MIN_SHARED_CONTEXT and saved >= sum(len(cont) for _, cont in members)
        if share_context and len(members) > 1 and worth and packed_len <= max_length:
            if all(len(cont) == 1 for _, cont in members):  # read at the context's end: a plain causal row
                targets = [(index, [len(ctx) - 1], cont) for index, cont in members]
                rows.append(Row(list(ctx), None, len(ctx), [], targets))
                continue
            tokens, positions, segments, targets = list(ctx), list(range(len(ctx))), [], []
            for index, cont in members:
                start = len(tokens)
                tokens += cont[:-1]
                positions += range(len(ctx), len(ctx) + len(cont) - 1)
                segments.append((start, len(tokens)))
                targets.append((index, [len(ctx) - 1] + list(range(start, len(tokens))), cont))
            rows.append(Row(tokens, positions, len(ctx), segments, targets))
            continue
        single = [(index, cont) for index, cont in members if len(cont) == 1] if share_context else []
        if len(single) > 1:  # all read at the (truncated) context's last position, as lm-eval dedups them
            tokens = list(ctx)[-max_length:]
            rows.append(Row(tokens, None, len(tokens), [], [(i, [len(tokens) - 1], c) for i, c in single]))
        for index, cont in members:
            if len(single) > 1 and len(cont) == 1:
                continue
            tokens = (list(ctx) + cont)[-(max_length + 1) :][:-1]
            n = len(tokens)
            rows.append(Row(tokens, None, n, [], [(index, list(range(n - len(cont), n)), cont)]))
    return rows


def _common(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def shared_prefixes(rows: list[Row]) -> tuple[list[tuple[list[int], list[Row]]], list[Row]]:
    """Rows that begin with the same tokens, grouped: [(prefix, the rows with it cut off)], and the rows left
    alone. Rows are sorted by their tokens, so rows with a long common prefix are neighbours; a group grows
    while its common prefix stays above MIN_SHARED_PREFIX and above half of what it was, and is kept if it
    saves MIN_PREFIX_SAVING tokens. A prefix ends before the first position whose logits are read."""
    order = sorted(rows, key=lambda r: r.tokens)
    groups, alone, i = [], [], 0
    while i < len(order):
        first, j = order[i], i + 1
        common = first.first_target()
        while j < len(order):
            shared = min(common, _common(first.tokens, order[j].tokens), order[j].first_target())
            if shared < MIN_SHARED_PREFIX or (j > i + 1 and shared < common // 2):
                break
            common, j = shared, j + 1
        if j - i > 1 and (j - i - 1) * common >= MIN_PREFIX_SAVING:
            groups.append((first.tokens[:common], [r.cut(common) for r in order[i:j]]))
        else:
            alone += order[i:j]
        i = j
    return groups, alone


def batches(rows: list[Row], size: int) -> list[list[Row]]:
    """Rows longest first, in batches of at most `size`; plain and packed rows in separate batches."""
    rows = sorted(rows, key=lambda r: (r.positions is not None, -len(r.tokens), r.tokens))
    out, start = [], 0
    while start < len(rows):
        packed = rows[start].positions is not None
        chunk = [r for r in rows[start : start + size] if (r.positions is not None) == packed]
        out.append(chunk)
        start += len(chunk)
    return out


def packed_mask(
    rows: list[Row], width: int, model: torch.nn.Module, device: torch.device, past: int = 0
) -> torch.Tensor:
    """(B, 1, W, past + W) boolean: every row sees the `past` tokens of a cached prefix; context causal; each
    continuation sees the context and its own past; padding sees itself only. As an additive float mask where
    `model`'s attention takes no boolean one."""
    segment = torch.full((len(rows), width), -1, dtype=torch.long)  # 0: context, i: continuation i, -1: pad
    for b, row in enumerate(rows):
        segment[b, : row.ctx_len] = 0
        for i, (start, end) in enumerate(row.segments, start=1):
            segment[b, start:end] = i
    segment = segment.to(device)
    q, k = segment[:, :, None], segment[:, None, :]  # (B, W, 1), (B, 1, W)
    causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
    mask = causal & (q != -1) & ((k == 0) | (k == q))
    mask |= torch.eye(width, dtype=torch.bool, device=device) & (q == -1)
    mask = mask[:, None]
    if past:
        mask = torch.cat([mask.new_ones(len(rows), 1, width, past), mask], dim=-1)
    if model.config._attn_implementation in ("sdpa", KV_ATTENTION):
        return mask
    return torch.zeros(mask.shape, dtype=model.dtype, device=device).masked_fill(~mask, torch.finfo(model.dtype).min)


def gather_scores(chunk: list[Row], logits: torch.Tensor, where: dict[int, int], device: torch.device) -> Batch:
    """Every target token's log-probability and whether it is the argmax, for the whole batch at once; one
    transfer to the host at the end. `logits` is (B, K, V) at the positions that `where` maps to 0..K-1."""
    rows, cols, tokens, owner, order = [], [], [], [], []
    for b, row in enumerate(chunk):
        for index, preds, cont in row.targets:
            rows += [b] * len(cont)
            cols += [where[p] for p in preds]
            tokens += cont
            owner += [len(order)] * len(cont)
            order.append(index)
    rows_t, cols_t = torch.tensor(rows, device=device), torch.tensor(cols, device=device)
    picked = logits[rows_t, cols_t].float()  # (n_tokens, V)
    logprobs = F.log_softmax(picked, dim=-1)
    tokens_t = torch.tensor(tokens, device=device)
    token_lp = logprobs.gather(1, tokens_t[:, None])[:, 0].double()
    hits = (picked.argmax(dim=-1) == tokens_t).long()
    owner_t = torch.tensor(owner, device=device)
    totals = torch.zeros(len(order), dtype=torch.float64, device=device).index_add_(0, owner_t, token_lp)
    misses = torch.zeros(len(order), dtype=torch.long, device=device).index_add_(0, owner_t, 1 - hits)
    return [(i, (lp, miss == 0)) for i, lp, miss in zip(order, totals.tolist(), misses.tolist(), strict=True)]
