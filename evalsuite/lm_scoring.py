"""How `EvalLM` lays out scoring inputs and reads scores back. Each request's model input is its context and
continuation less the last token (cut on the left to the model's positions, as lm-eval does); identical inputs
are one row. Inputs that begin with the same tokens (a context shared by its choices, as in HellaSwag; a
subject's few-shot examples, shared by all its questions, as in MMLU) are packed into rows holding that common
prefix once followed by their branches, each branch attending to the prefix and to itself only, so the shared
tokens are computed once per row instead of once per request. Also here: batched tokenization of the
requests, the attention mask of packed rows, batching by rows and tokens, and every target token's
log-probability gathered from a batch's logits."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from evalsuite.quant_schemes.kv_cache import ATTENTION as KV_ATTENTION

MIN_SHARED_CONTEXT = 8  # a shorter context shared by several continuations is not worth packing
MIN_SHARED_PREFIX = 32  # a shorter common prefix of different contexts is recomputed in every row
ATTENTION_SHARE = 0.1  # a packed row is kept so wide that its (dense, masked) attention costs ~10% of its matmuls
PACK_WIDTH_RANGE = (1024, 4096)
ALIGN = 16  # packed-mask rows start this many elements apart, the alignment SDPA's masked kernels need
TOKENS_PER_ROW = 1024  # a batch holds batch_size rows and, when packed, batch_size * TOKENS_PER_ROW tokens at most

Batch = list[tuple[int, object]]  # (index into the request list, result)


@dataclass
class Row:
    """One model input row: its tokens, position ids (packed rows only), how many leading tokens are the
    shared prefix, the branch segments, and what to score: (request index, positions, token ids)."""

    tokens: list[int]
    positions: list[int] | None
    ctx_len: int
    segments: list[tuple[int, int]]
    targets: list[tuple[int, list[int], list[int]]]


@dataclass
class _Input:
    """A distinct model input: its tokens, where its context ends, and the requests read from it."""

    tokens: list[int]
    ctx_end: int
    targets: list[tuple[int, list[int], list[int]]]


def encode_pairs(lm, pairs: list[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
    """`lm._encode_request` of every (context, continuation) pair, each distinct string encoded once and in
    batches (a fast tokenizer encodes a batch on all cores): a subject's questions share a context, and
    tokenizing MMLU's requests one by one took as long as scoring them."""
    out: list = [None] * len(pairs)
    split = []
    for i, (context, continuation) in enumerate(pairs):
        if context == "":
            out[i] = lm._encode_request(context, continuation)
            continue
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        split.append((i, context, context + continuation))
    strings = list(dict.fromkeys(s for _, context, whole in split for s in (context, whole)))
    ids = dict(zip(strings, _encode_many(lm, strings), strict=True))
    for i, context, whole in split:
        out[i] = (ids[context], ids[whole][len(ids[context]) :])
    return out


def _encode_many(lm, strings: list[str]) -> list[list[int]]:
    """`lm.tok_encode` of each string: one batch call per special-tokens setting with a fast tokenizer."""
    if not getattr(lm.tokenizer, "is_fast", False):
        return [lm.tok_encode(s) for s in strings]
    bos = lm.tokenizer.bos_token
    out: list = [None] * len(strings)
    for special in (True, False):
        picked = [i for i, s in enumerate(strings) if (not (bos and s.startswith(bos))) == special]
        if picked:
            encoded = lm.tokenizer([strings[i] for i in picked], add_special_tokens=special)["input_ids"]
            for i, ids in zip(picked, encoded, strict=True):
                out[i] = list(ids)
    return out


def pack_width(config) -> int:
    """The widest packed row for a model: attention over a row of W tokens costs about 4·W·(heads·head_dim)
    FLOPs per token and layer against 2·(its linear weights) for the matmuls; W keeps that ratio near
    ATTENTION_SHARE (2,662 tokens for Llama-3.1-8B), within PACK_WIDTH_RANGE."""
    hidden = config.hidden_size
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    linear = hidden * head_dim * (2 * heads + 2 * kv) + 3 * hidden * getattr(config, "intermediate_size", 4 * hidden)
    width = int(ATTENTION_SHARE * 2 * linear / (4 * heads * head_dim))
    return max(PACK_WIDTH_RANGE[0], min(PACK_WIDTH_RANGE[1], width))


def _inputs(items: list[tuple[int, list[int], list[int]]], max_length: int, dedup: bool) -> list[_Input]:
    """Each request's input, cut on the left to max_length; requests with identical inputs share one."""
    found: dict[tuple[int, ...], _Input] = {}
    out = []
    for index, ctx, cont in items:
        tokens = (list(ctx) + cont)[-(max_length + 1) :][:-1]
        n = len(tokens)
        target = (index, list(range(n - len(cont), n)), cont)
        key = tuple(tokens)
        if dedup and key in found:
            found[key].targets.append(target)
            found[key].ctx_end = min(found[key].ctx_end, n - len(cont) + 1)
            continue
        entry = _Input(tokens, n - len(cont) + 1, [target])
        found[key] = entry
        out.append(entry)
    return out


def _common(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _groups(inputs: list[_Input], share_prefix: bool) -> list[tuple[int, list[_Input]]]:
    """Inputs sorted by their tokens, so those with a long common prefix are neighbours, in groups: [(common
    prefix length, members)]. A neighbour joins while it shares the whole context of the group's first input
    (at least MIN_SHARED_CONTEXT tokens) or, with share_prefix, at least MIN_SHARED_PREFIX tokens, and while
    that keeps at least half of what the group shared so far."""
    order = sorted(inputs, key=lambda e: e.tokens)
    groups, i = [], 0
    while i < len(order):
        first, j = order[i], i + 1
        common = len(first.tokens)
        while j < len(order):
            shared = min(common, _common(first.tokens, order[j].tokens))
            whole_context = shared >= min(first.ctx_end, order[j].ctx_end) >= MIN_SHARED_CONTEXT
            prefix = share_prefix and shared >= MIN_SHARED_PREFIX
            if not (whole_context or prefix) or (j > i + 1 and shared < common // 2):
                break
            common, j = shared, j + 1
        groups.append((common, order[i:j]))
        i = j
    return groups


def _plain(entry: _Input) -> Row:
    return Row(entry.tokens, None, len(entry.tokens), [], entry.targets)


def _packed(prefix: list[int], members: list[_Input]) -> Row:
    """One row: the prefix, then each member's remaining tokens as a branch at positions after the prefix."""
    c = len(prefix)
    tokens, positions, segments, targets = list(prefix), list(range(c)), [], []
    for entry in members:
        start = len(tokens)
        tokens += entry.tokens[c:]
        positions += range(c, len(entry.tokens))
        segments.append((start, len(tokens)))
        for index, preds, cont in entry.targets:
            targets.append((index, [p if p < c else start + p - c for p in preds], cont))
    return Row(tokens, positions, c, segments, targets)


def plan_rows(
    items: list[tuple[int, list[int], list[int]]],
    max_length: int,
    share_context: bool,
    share_prefix: bool = True,
    width: int = PACK_WIDTH_RANGE[1],
) -> list[Row]:
    """Model inputs for scoring; items are (request index, context ids, continuation ids). With share_context,
    identical inputs are one row and a group of inputs with a common prefix is packed into rows of at most
    `width` tokens or twice the prefix (or of one input each where that saves nothing); without it, one row
    per request."""
    inputs = _inputs(items, max_length, share_context)
    if not share_context:
        return [_plain(e) for e in inputs]
    rows = []
    for common, members in _groups(inputs, share_prefix):
        branches = sum(len(e.tokens) - common for e in members)
        if len(members) == 1 or (len(members) - 1) * common < branches:
            rows += [_plain(e) for e in members]
            continue
        prefix = members[0].tokens[:common]
        members = sorted(members, key=lambda e: -len(e.tokens))
        limit = max(width, 2 * common)  # a context with a few choices is packed whole, however wide
        row: list[_Input] = []
        used = common
        for entry in [*members, None]:
            extra = 0 if entry is None else len(entry.tokens) - common
            if row and (entry is None or used + extra > limit):
                rows.append(_plain(row[0]) if len(row) == 1 else _packed(prefix, row))
                row, used = [], common
            if entry is not None:
                row.append(entry)
                used += extra
    return rows


def batches(rows: list[Row], size: int) -> list[list[Row]]:
    """Rows longest first, in batches of at most `size` rows; plain and packed rows in separate batches, a
    batch of packed rows also within size * TOKENS_PER_ROW tokens (padding included)."""
    rows = sorted(rows, key=lambda r: (r.positions is not None, -len(r.tokens), r.tokens))
    out: list[list[Row]] = []
    for row in rows:
        last = out[-1] if out else None
        fits = (
            last is not None
            and len(last) < size
            and (last[0].positions is None) == (row.positions is None)
            and (row.positions is None or len(last[0].tokens) * (len(last) + 1) <= size * TOKENS_PER_ROW)
        )
        if fits:
            last.append(row)
        else:
            out.append([row])
    return out


def packed_mask(rows: list[Row], width: int, model: torch.nn.Module, device: torch.device) -> torch.Tensor:
    """(B, 1, W, W) additive mask in the model's dtype: the shared prefix causal; each branch sees the prefix and
    its own past; padding sees itself only. Built once per batch in the form the attention kernels take as is:
    SDPA would otherwise turn a boolean mask into this one and pad its rows to an aligned stride again in every
    layer, so the rows are stored ALIGN apart and the blocked entries are -inf, as SDPA's own conversion makes
    them (eager attention gets the dtype's minimum, as transformers builds it)."""
    segment = torch.full((len(rows), width), -1, dtype=torch.long)  # 0: context, i: continuation i, -1: pad
    for b, row in enumerate(rows):
        segment[b, : row.ctx_len] = 0
        for i, (start, end) in enumerate(row.segments, start=1):
            segment[b, start:end] = i
    segment = segment.to(device)
    q, k = segment[:, :, None], segment[:, None, :]  # (B, W, 1), (B, 1, W)
    causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
    allowed = causal & (q != -1) & ((k == 0) | (k == q))
    allowed |= torch.eye(width, dtype=torch.bool, device=device) & (q == -1)
    sdpa = model.config._attn_implementation in ("sdpa", KV_ATTENTION)
    blocked = float("-inf") if sdpa else torch.finfo(model.dtype).min
    stride = -(-width // ALIGN) * ALIGN
    mask = torch.zeros(len(rows), 1, width, stride, dtype=model.dtype, device=device)[..., :width]
    return mask.masked_fill_(~allowed[:, None], blocked)


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
