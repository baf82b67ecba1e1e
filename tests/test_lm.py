"""EvalLM scores like an unbatched reference, generates greedily with stop strings, and caches by key."""

import pytest
import torch
import torch.nn.functional as F
from lm_eval.api.instance import Instance

from evalsuite.lm import EvalLM
from evalsuite.store import Store

PAIRS = [
    ("Question: What is 12 plus 30?\nAnswer: 2 plus 0 is 2, write 2. 1 plus 3 is 4. The answer is", " 42"),
    ("Question: What is 12 plus 30?\nAnswer: 2 plus 0 is 2, write 2. 1 plus 3 is 4. The answer is", " 43"),
    ("Question: Which of these is a fruit: dog, apple, car or drum?\nAnswer:", " apple"),
    ("The frog is", " green."),
    ("", "Tom saw a green frog in the farm."),
    ("Question: What color is a frog: red, green, blue or gray?\nAnswer: ", "green"),
]


def ll_requests(pairs):
    return [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]


def reference_loglikelihood(model, tokenizer, context, continuation):
    """One sequence at a time, no padding: the definition lm-eval's HF backend implements."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    if context:
        whole = tokenizer.encode(context + continuation)
        ctx = tokenizer.encode(context)
        cont = whole[len(ctx) :]
    else:
        ctx, cont = [tokenizer.eos_token_id], tokenizer.encode(continuation)
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logprobs = F.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    positions = range(len(ctx) - 1, len(ctx) + len(cont) - 1)
    return sum(float(logprobs[p, t]) for p, t in zip(positions, cont, strict=True))


@pytest.mark.parametrize("batch_size", [1, 4, 16])
def test_loglikelihood_matches_the_unbatched_reference(tiny, batch_size):
    lm = EvalLM(tiny.model, tiny.tokenizer, batch_size=batch_size, progress=False)
    got = lm.loglikelihood(ll_requests(PAIRS))
    for (context, continuation), (logprob, _) in zip(PAIRS, got, strict=True):
        expected = reference_loglikelihood(tiny.model, tiny.tokenizer, context, continuation)
        assert logprob == pytest.approx(expected, abs=1e-4)


def test_the_trained_model_knows_its_world(tiny):
    lm = EvalLM(tiny.model, tiny.tokenizer, progress=False)
    (right, greedy), (wrong, _) = lm.loglikelihood(ll_requests(PAIRS[:2]))
    assert right > wrong and greedy


def test_rolling_loglikelihood_is_the_sum_over_the_document(tiny):
    text = "Tom saw a green frog in the farm. The frog was small and friendly."
    lm = EvalLM(tiny.model, tiny.tokenizer, progress=False)
    (got,) = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])
    assert got == pytest.approx(reference_loglikelihood(tiny.model, tiny.tokenizer, "", text), abs=1e-4)


def test_rolling_windows_cover_long_documents(tiny):
    text = " ".join(["Tom saw a green frog in the farm. The frog was small and friendly."] * 40)
    lm = EvalLM(tiny.model, tiny.tokenizer, progress=False)
    n_tokens = len(tiny.tokenizer.encode(text))
    assert n_tokens > lm.max_length
    (got,) = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])
    assert got < 0 and lm.model_calls >= 1


def test_generation_is_batch_invariant_and_stops(tiny):
    prompts = [f"Question: What is {a} plus {b}?\nAnswer:" for a, b in [(3, 4), (25, 17), (60, 9), (1, 1), (48, 48)]]
    kwargs = {"until": ["\n"], "max_gen_toks": 64}
    reqs = [Instance("generate_until", {}, (p, kwargs), i) for i, p in enumerate(prompts)]
    one = EvalLM(tiny.model, tiny.tokenizer, batch_size=1, progress=False).generate_until(reqs)
    many = EvalLM(tiny.model, tiny.tokenizer, batch_size=8, progress=False).generate_until(reqs)
    assert one == many
    assert all("\n" not in text for text in one)
    assert one[0].strip().endswith("The answer is 7.")


def test_sampling_needs_a_seed_and_is_reproducible_whatever_the_batch(tiny):
    lm = EvalLM(tiny.model, tiny.tokenizer, progress=False)
    unseeded = {"until": ["\n"], "do_sample": True, "temperature": 0.7}
    with pytest.raises(ValueError, match="explicit seed"):
        lm.generate_until([Instance("generate_until", {}, ("Question:", unseeded), 0)])
    prompts = [f"User: Write a short story about {n} and the fox.\nAssistant:" for n in ("Tom", "Ana", "Ben")]
    settings = [
        {"until": ["\nUser:"], "do_sample": True, "temperature": 1.0, "seed": s, "max_gen_toks": 24} for s in (1, 2)
    ]
    pairs = [(p, k) for p in prompts for k in settings]
    reqs = [Instance("generate_until", {}, pair, i) for i, pair in enumerate(pairs)]
    one = EvalLM(tiny.model, tiny.tokenizer, batch_size=1, progress=False).generate_until(reqs)
    many = EvalLM(tiny.model, tiny.tokenizer, batch_size=6, progress=False).generate_until(reqs)
    assert one == many
    assert len(set(one)) > 1  # different seeds and prompts give different samples


def test_cached_responses_are_served_only_to_the_same_key(tiny, tmp_path):
    store = Store(tmp_path / "store.sqlite")
    first = EvalLM(tiny.model, tiny.tokenizer, store=store, model_key="a", progress=False)
    expected = first.loglikelihood(ll_requests(PAIRS))
    assert first.model_calls > 0
    again = EvalLM(tiny.model, tiny.tokenizer, store=store, model_key="a", progress=False)
    assert again.loglikelihood(ll_requests(PAIRS)) == expected and again.model_calls == 0
    other = EvalLM(tiny.model, tiny.tokenizer, store=store, model_key="b", progress=False)
    other.loglikelihood(ll_requests(PAIRS))
    assert other.model_calls > 0


def test_more_new_tokens_than_the_model_has_positions_is_a_clear_error(tiny):
    from evalsuite.lm import GenerationError

    lm = EvalLM(tiny.model, tiny.tokenizer, progress=False)
    too_many = [Instance("generate_until", {}, ("Question: What is 3 plus 4?\nAnswer:", {"max_gen_toks": 300}), 0)]
    with pytest.raises(GenerationError, match=r"max_gen_toks 300 leaves no room for the prompt in a model of 256"):
        lm.generate_until(too_many)
    default = [Instance("generate_until", {}, ("Question: What is 3 plus 4?\nAnswer:", {"until": ["\n"]}), 0)]
    assert lm.generate_until(default)[0].strip().endswith("The answer is 7.")
