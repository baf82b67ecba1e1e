"""The streaming fidelity panel against a direct computation from full logits, text by text."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evalsuite.lm import EvalLM
from evalsuite.quant_schemes.apply import quantize
from evalsuite.suites import fidelity

TEXTS = fidelity.load_texts("tiny_ppl")[:10]


def direct(base, variant, lm):
    """KL(base || variant), top-1 agreement and both perplexities from whole-vocabulary logits, one text at a time."""
    klds, agree, nll_b, nll_v = [], 0, 0.0, 0.0
    for text in TEXTS:
        ids = torch.tensor([[lm.prefix_token_id] + lm.tokenizer.encode(text, add_special_tokens=False)])
        ids = ids[:, : lm.max_length]
        lp_b = F.log_softmax(base(ids).logits[0, :-1].float(), -1)
        lp_v = F.log_softmax(variant(ids).logits[0, :-1].float(), -1)
        klds += (lp_b.exp() * (lp_b - lp_v)).sum(-1).clamp(min=0).tolist()
        agree += int((lp_b.argmax(-1) == lp_v.argmax(-1)).sum())
        target = ids[0, 1:, None]
        nll_b -= float(lp_b.gather(1, target).sum())
        nll_v -= float(lp_v.gather(1, target).sum())
    n = len(klds)
    return n, np.array(klds), agree / n, math.exp(nll_b / n), math.exp(nll_v / n)


@torch.no_grad()
def test_streaming_panel_equals_the_full_logits_computation(tiny, monkeypatch):
    monkeypatch.setattr(fidelity, "CHUNK", 32)  # several chunks per row
    variant = copy.deepcopy(tiny.model)
    quantize(variant, "W4A16")
    base_lm = EvalLM(tiny.model, tiny.tokenizer, batch_size=4, progress=False)
    var_lm = EvalLM(variant, tiny.tokenizer, batch_size=4, progress=False)
    got = fidelity.compare(base_lm, var_lm, TEXTS, batch_size=4)
    n, kld, top1, ppl_b, ppl_v = direct(tiny.model, variant, base_lm)
    assert max(len(tiny.tokenizer.encode(t)) for t in TEXTS) > 2 * fidelity.CHUNK
    assert got["tokens"] == n
    assert got["kld_mean"] == pytest.approx(kld.mean(), rel=1e-3) and got["kld_mean"] > 0
    assert got["kld_max"] == pytest.approx(kld.max(), rel=1e-3)
    assert got["kld_p90"] == pytest.approx(np.quantile(kld, 0.9), rel=1e-3)
    assert got["top1_agreement"] == pytest.approx(top1, abs=2 / n) and got["top1_agreement"] < 1
    assert got["baseline_ppl"] == pytest.approx(ppl_b, rel=1e-4)
    assert got["ppl_ratio"] == pytest.approx(ppl_v / ppl_b, rel=1e-4)


@torch.no_grad()
def test_a_model_against_itself_at_another_batch_shape_is_identical_up_to_float_noise(tiny):
    lm = EvalLM(tiny.model, tiny.tokenizer, batch_size=4, progress=False)
    got = fidelity.compare(lm, lm, TEXTS, batch_size=4, sub_batch=1)
    assert got["kld_max"] < 1e-6 and got["top1_agreement"] == 1.0 and got["ppl_ratio"] == pytest.approx(1, abs=1e-6)


def test_the_panel_is_stored_text_by_text_and_resumes_where_it_stopped(tiny, tmp_path, monkeypatch):
    from evalsuite.store import Store

    variant = copy.deepcopy(tiny.model)
    quantize(variant, "W8A8_INT8")
    store = Store(tmp_path / "store.sqlite")
    base_lm = EvalLM(tiny.model, tiny.tokenizer, batch_size=3, store=store, model_key="base", progress=False)
    whole = fidelity.compare(base_lm, EvalLM(variant, tiny.tokenizer, 3, progress=False), TEXTS, batch_size=3)

    def lm():
        return EvalLM(variant, tiny.tokenizer, 3, store=store, model_key="variant", progress=False)

    real, batches = fidelity._panel_batch, []

    def killed_after_two(reference, lm, chunk, sub_batch):
        if len(batches) == 2:
            raise KeyboardInterrupt
        batches.append(len(chunk))
        return real(reference, lm, chunk, sub_batch)

    monkeypatch.setattr(fidelity, "_panel_batch", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        fidelity.compare(base_lm, lm(), TEXTS, batch_size=3)
    assert store.count_responses("variant", kinds=("fidelity",)) == 6  # two batches of three texts committed
    monkeypatch.setattr(fidelity, "_panel_batch", real)
    resumed = lm()
    got = fidelity.compare(base_lm, resumed, TEXTS, batch_size=3)
    assert resumed.model_calls == 2  # the four texts left, in batches of three
    assert got["tokens"] == whole["tokens"] and got["top1_agreement"] == whole["top1_agreement"]
    assert got["kld_mean"] == pytest.approx(whole["kld_mean"], rel=1e-5)
    again = lm()
    assert fidelity.compare(base_lm, again, TEXTS, batch_size=3) == got and again.model_calls == 0
    store.close()


@pytest.mark.parametrize("family", ["llama", "gemma2", "cohere"])
@torch.no_grad()
def test_projected_logits_are_the_models_own(family):
    from transformers import AutoConfig, AutoModelForCausalLM

    extra = {"gemma2": {"final_logit_softcapping": 5.0, "head_dim": 16}, "cohere": {"logit_scale": 0.25}}
    config = AutoConfig.for_model(
        family,
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        **extra.get(family, {}),
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    ids = torch.randint(0, 64, (2, 7))
    hidden = model.get_decoder()(input_ids=ids).last_hidden_state
    got = fidelity.project(model, model.get_output_embeddings(), hidden)
    torch.testing.assert_close(got, model(input_ids=ids).logits, rtol=1e-5, atol=1e-5)
