"""Rows that share a long prefix (a subject's few-shot examples) compute it once and score as if alone."""

import pytest

from evalsuite import lm_scoring
from evalsuite.lm import EvalLM
from evalsuite.lm_scoring import plan_rows, shared_prefixes
from tests.test_lm import ll_requests, reference_loglikelihood

SHOTS = "".join(
    f"Question: What is {a} plus {b}?\nAnswer: {a + b}\n\n" for a, b in ((1, 2), (3, 4), (10, 5), (7, 7), (2, 9))
)
QUESTIONS = [f"Question: What is {a} plus {a}?\nAnswer:" for a in (3, 6, 12, 20, 31)]
PAIRS = [(SHOTS + q, c) for q in QUESTIONS for c in (" 6", " 12", " twelve apples")] + [
    ("The frog is", " green."),
    ("Question: Which of these is a fruit: dog, apple, car or drum?\nAnswer:", " apple"),
]


@pytest.fixture(autouse=True)
def small_savings(monkeypatch):
    monkeypatch.setattr(lm_scoring, "MIN_PREFIX_SAVING", 64)  # five questions behind an 80-token prefix


def test_rows_with_a_common_prefix_are_grouped_behind_it(tiny):
    lm = EvalLM(tiny.model, tiny.tokenizer, progress=False)
    items = [(i, *lm._encode_request(*pair)) for i, pair in enumerate(PAIRS)]
    groups, alone = shared_prefixes(plan_rows(items, lm.max_length, True))
    ((prefix, members),) = groups
    assert len(members) == len(QUESTIONS) and len(alone) == 2
    assert tiny.tokenizer.decode(prefix).startswith(SHOTS.rstrip()[:100])
    for row in members:  # every read position lies behind the prefix
        assert row.first_target() >= 0 and all(p >= 0 for _, preds, _ in row.targets for p in preds)


@pytest.mark.parametrize("batch_size", [2, 16])
def test_prefix_shared_scores_match_the_unbatched_reference(tiny, batch_size):
    lm = EvalLM(tiny.model, tiny.tokenizer, batch_size=batch_size, progress=False)
    got = lm.loglikelihood(ll_requests(PAIRS))
    unshared = EvalLM(tiny.model, tiny.tokenizer, batch_size=batch_size, progress=False, share_context=False)
    groups, _ = shared_prefixes(plan_rows([(i, *lm._encode_request(*p)) for i, p in enumerate(PAIRS)], 256, True))
    assert len(groups) == 1  # the shared path is the one under test
    plain = unshared.loglikelihood(ll_requests(PAIRS))
    assert [g for _, g in plain] == [g for _, g in got]
    assert [lp for lp, _ in plain] == pytest.approx([lp for lp, _ in got], abs=1e-4)
    for (context, continuation), (logprob, _) in zip(PAIRS, got, strict=True):
        expected = reference_loglikelihood(tiny.model, tiny.tokenizer, context, continuation)
        assert logprob == pytest.approx(expected, abs=1e-4)


def test_one_token_answers_of_a_truncated_context_share_one_row(tiny):
    lm = EvalLM(tiny.model, tiny.tokenizer, batch_size=4, progress=False, max_length=16)
    pairs = [(SHOTS + QUESTIONS[0], c) for c in (" A", " B", " twelve apples")]
    items = [(i, *lm._encode_request(*p)) for i, p in enumerate(pairs)]
    rows = plan_rows(items, 16, True)
    assert sorted(len(r.targets) for r in rows) == [1, 2]
    got = lm.loglikelihood(ll_requests(pairs))
    plain = EvalLM(tiny.model, tiny.tokenizer, batch_size=4, progress=False, max_length=16, share_context=False)
    assert [lp for lp, _ in plain.loglikelihood(ll_requests(pairs))] == pytest.approx([lp for lp, _ in got], abs=1e-4)
