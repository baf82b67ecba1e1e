"""Requests that share a long prefix (a subject's few-shot examples) are packed behind one copy of it, identical
inputs are computed once, and every score stays what the request gives alone."""

import pytest
import torch
import torch.nn.functional as F

from evalsuite.lm import EvalLM
from evalsuite.lm_scoring import ALIGN, Row, pack_width, packed_mask, plan_rows
from tests.test_lm import ll_requests, reference_loglikelihood

SHOTS = "".join(
    f"Question: What is {a} plus {b}?\nAnswer: {a + b}\n\n" for a, b in ((1, 2), (3, 4), (10, 5), (7, 7), (2, 9))
)
QUESTIONS = [f"Question: What is {a} plus {a}?\nAnswer:" for a in (3, 6, 12, 20, 31)]
PAIRS = [(SHOTS + q, c) for q in QUESTIONS for c in (" 6", " 12", " twelve apples")] + [
    ("The frog is", " green."),
    ("Question: Which of these is a fruit: dog, apple, car or drum?\nAnswer:", " apple"),
]


def items_of(lm, pairs):
    return [(i, *pair) for i, pair in enumerate(lm._encode_requests(pairs))]


def test_questions_with_common_shots_are_packed_behind_one_copy(tiny):
    lm = EvalLM(tiny.model, tiny.tokenizer, progress=False)
    rows = plan_rows(items_of(lm, PAIRS), lm.max_length, True, True, width=10_000)
    packed = [r for r in rows if r.positions is not None]
    assert len(packed) == 1 and len(rows) == 3  # the shots once, the two unrelated requests alone
    (row,) = packed
    assert tiny.tokenizer.decode(row.tokens[: row.ctx_len]).startswith(SHOTS.rstrip()[:100])
    assert sorted(i for i, _, _ in row.targets) == list(range(len(QUESTIONS) * 3))
    assert len(row.tokens) < sum(len(c) + len(t) for _, c, t in items_of(lm, PAIRS[:15])) / 3
    for _, preds, cont in row.targets:  # every read position lies in the row, one per continuation token
        assert len(preds) == len(cont) and all(0 <= p < len(row.tokens) for p in preds)


def test_packed_rows_stay_within_the_width():
    items = [(i, list(range(100)) + [200 + i] * 30, [7]) for i in range(10)]
    rows = plan_rows(items, 1000, True, True, width=250)
    assert len(rows) == 2 and all(len(r.tokens) <= 250 and len(r.segments) == 5 for r in rows)
    assert sorted(i for r in rows for i, _, _ in r.targets) == list(range(10))
    without = plan_rows(items, 1000, True, False, width=250)  # no prefix sharing: contexts differ, rows alone
    assert len(without) == 10 and all(r.positions is None for r in without)


def test_identical_inputs_share_a_row():
    """Two-token answers " C" and " D" after the same context have the same input (the context and the
    space): one row, as lm-eval's one-token dedup computes it, also when the context is cut on the left."""
    items = [(i, list(range(40)), [99, 50 + i]) for i in range(4)]
    for max_length in (64, 16):
        (row,) = plan_rows(items, max_length, True)
        assert row.positions is None and len(row.tokens) == min(41, max_length)
        assert sorted(i for i, _, _ in row.targets) == [0, 1, 2, 3]
    assert len(plan_rows(items, 64, False)) == 4  # without context sharing, a row per request


def test_pack_width_follows_the_model_shape(tiny):
    from transformers import LlamaConfig

    from evalsuite.bench_e2e import SHAPES

    assert pack_width(LlamaConfig(**SHAPES["llama-3.1-8b"])) == 2662
    assert pack_width(tiny.model.config) == 1024  # a small model: its matmuls are cheap, the floor holds


@pytest.mark.parametrize("batch_size", [2, 16])
def test_packed_scores_match_the_unbatched_reference(tiny, batch_size, monkeypatch):
    from evalsuite import lm_scoring

    monkeypatch.setattr(lm_scoring, "PACK_WIDTH_RANGE", (96, 96))  # several rows, each with the shots
    lm = EvalLM(tiny.model, tiny.tokenizer, batch_size=batch_size, progress=False)
    rows = plan_rows(items_of(lm, PAIRS), lm.max_length, True, True, pack_width(tiny.model.config))
    assert sum(r.positions is not None for r in rows) >= 2  # the packed path is the one under test
    got = lm.loglikelihood(ll_requests(PAIRS))
    plain = EvalLM(tiny.model, tiny.tokenizer, batch_size=batch_size, progress=False, share_context=False)
    expected = plain.loglikelihood(ll_requests(PAIRS))
    assert [g for _, g in expected] == [g for _, g in got]
    assert [lp for lp, _ in expected] == pytest.approx([lp for lp, _ in got], abs=1e-4)
    for (context, continuation), (logprob, _) in zip(PAIRS, got, strict=True):
        reference = reference_loglikelihood(tiny.model, tiny.tokenizer, context, continuation)
        assert logprob == pytest.approx(reference, abs=1e-4)


def test_one_token_answers_of_a_truncated_context_share_one_row(tiny):
    lm = EvalLM(tiny.model, tiny.tokenizer, batch_size=4, progress=False, max_length=16)
    pairs = [(SHOTS + QUESTIONS[0], c) for c in (" A", " B", " twelve apples")]
    rows = plan_rows(items_of(lm, pairs), 16, True)
    assert sorted(len(r.targets) for r in rows) == [1, 2]
    got = lm.loglikelihood(ll_requests(pairs))
    plain = EvalLM(tiny.model, tiny.tokenizer, batch_size=4, progress=False, max_length=16, share_context=False)
    assert [lp for lp, _ in plain.loglikelihood(ll_requests(pairs))] == pytest.approx([lp for lp, _ in got], abs=1e-4)


def test_batched_tokenization_matches_one_by_one(tiny):
    lm = EvalLM(tiny.model, tiny.tokenizer, progress=False)
    pairs = [*PAIRS, ("", " hello there"), ("Ends with spaces  ", "x"), (PAIRS[0][0], " 6")]
    assert lm._encode_requests(pairs) == [lm._encode_request(*p) for p in pairs]


def test_packed_mask_is_sdpa_ready_and_means_what_the_rows_say(tiny):
    """The mask is built once per batch as SDPA takes it without a per-layer conversion (additive, in the model's
    dtype, rows an aligned stride apart) and gives attention the same bits as the boolean mask it replaces."""
    rows = [
        Row(tokens=[0] * 7, positions=[0, 1, 2, 3, 4, 3, 4], ctx_len=3, segments=[(3, 5), (5, 7)], targets=[]),
        Row(tokens=[0] * 4, positions=[0, 1, 2, 3], ctx_len=2, segments=[(2, 4)], targets=[]),
    ]
    mask = packed_mask(rows, 9, tiny.model, torch.device("cpu"))
    assert mask.shape == (2, 1, 9, 9) and mask.dtype == tiny.model.dtype
    assert all(s % ALIGN == 0 for s in mask.stride()[:-1]) and mask.stride(-1) == 1
    seen = mask[:, 0] == 0
    assert seen[0, 4].tolist() == [True] * 5 + [False] * 4  # a first-branch token: the context and its own past
    assert seen[0, 6].tolist() == [True] * 3 + [False, False, True, True, False, False]  # the second skips the first
    assert seen[1, 6].tolist() == [False] * 6 + [True, False, False]  # padding sees itself only
    assert torch.equal(seen[0, :3, :3], torch.ones(3, 3, dtype=torch.bool).tril())
    q, k, v = torch.randn(3, 2, 4, 9, 16).unbind(0)
    boolean = F.scaled_dot_product_attention(q, k, v, attn_mask=seen[:, None])
    assert torch.equal(F.scaled_dot_product_attention(q, k, v, attn_mask=mask.float()), boolean)
