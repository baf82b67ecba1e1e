"""The layer-by-layer calibration engine: layers outside the decoder blocks (lm_head), tied embeddings under
a rotation, and the keyword arguments each block gets per batch (uneven last batch, sliding-window blocks)."""

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from evalsuite import models
from evalsuite.calibration import build_calibration
from evalsuite.config import CalibrationSpec
from evalsuite.lm import EvalLM
from evalsuite.quant_schemes import PRESETS
from evalsuite.quant_schemes.algorithms.sequential import block_inputs, decoder_blocks, run_blocks
from evalsuite.quant_schemes.apply import quantize
from evalsuite.quant_schemes.formats import quantize_weight
from evalsuite.quant_schemes.linear import QuantLinear
from evalsuite.quant_schemes.rotation import HadamardRotated
from tests.utils import assert_close, seed_everything, sqnr

W4_ALL = {"weights": PRESETS["W4A16"].weights.model_dump(), "ignore": []}  # lm_head too
PROMPT = torch.tensor([[5, 17, 33, 2, 99, 250, 7, 64, 128, 300, 12, 1]])


def logits(model, ids=PROMPT):
    with torch.no_grad():
        return model(input_ids=ids).logits.double()


@pytest.fixture
def fresh(tiny):
    return models.load(tiny.source, "cpu", "float32")


def small_calib(loaded, samples=2, seq_len=16, batch_size=2):
    spec = CalibrationSpec(set="tiny_calib", samples=samples, seq_len=seq_len, batch_size=batch_size)
    return build_calibration(spec, EvalLM(loaded.model, loaded.tokenizer, progress=False)).batches


def test_the_embedded_model_ties_lm_head_to_the_embeddings(tiny):
    assert tiny.model.config.tie_word_embeddings
    assert tiny.model.lm_head.weight is tiny.model.model.embed_tokens.weight


def test_a_calibrated_scheme_that_targets_lm_head_quantizes_it_by_rtn(fresh):
    lm_head = fresh.model.lm_head.weight.detach().clone()
    report = quantize(fresh.model, W4_ALL, "rtn", calib=small_calib(fresh))  # calibrated: layer by layer
    assert "lm_head" in report.layers
    stats = report.layer_stats["lm_head"]
    assert stats["algorithm"] == "rtn" and "sqnr_db" not in stats  # outside the blocks: no calibration, no SQNR
    assert "sqnr_db" in report.layer_stats["model.layers.0.mlp.down_proj"]
    assert isinstance(fresh.model.lm_head, QuantLinear)
    expected = quantize_weight(lm_head, PRESETS["W4A16"].weights).dequantize()
    assert_close(fresh.model.lm_head.dequantize(), expected, what="lm_head")


def test_run_blocks_refuses_layers_outside_the_blocks_naming_them(fresh):
    layers = {"lm_head": fresh.model.lm_head}
    with pytest.raises(ValueError, match=r"\['lm_head'\] lie outside the decoder blocks.*round-to-nearest"):
        run_blocks(fresh.model, layers, [PROMPT], lambda *a: {}, lambda *a: None)


def test_rotating_a_tied_lm_head_leaves_the_embeddings_and_the_float_model_unchanged(fresh):
    embed = fresh.model.model.embed_tokens.weight.detach().clone()
    before = logits(fresh.model)
    fresh.model.lm_head = HadamardRotated(fresh.model.lm_head, "torch-ref")
    assert_close(fresh.model.model.embed_tokens.weight.detach(), embed, what="embed_tokens")
    torch.testing.assert_close(logits(fresh.model), before, atol=1e-4, rtol=1e-4)


def test_a_rotated_quantized_lm_head_keeps_the_embeddings_float(fresh):
    embed = fresh.model.model.embed_tokens.weight.detach().clone()
    before = logits(fresh.model)
    report = quantize(fresh.model, W4_ALL, "rtn", calib=small_calib(fresh), rotation="hadamard")
    assert "lm_head.linear" in report.layers
    assert_close(fresh.model.model.embed_tokens.weight.detach(), embed, what="embed_tokens")
    assert sqnr(before, logits(fresh.model)) > 10  # a rotated embedding table gives noise (below 0 dB)


def test_eager_attention_with_an_uneven_last_batch_calibrates(fresh):
    fresh.model.set_attn_implementation("eager")  # a (batch, 1, T, T) mask, which must match each batch
    calib = small_calib(fresh, samples=6, seq_len=16, batch_size=4)
    assert [b.shape[0] for b in calib] == [4, 2]
    report = quantize(fresh.model, "W4A16", "rtn", calib=calib)
    assert all(10 < s["sqnr_db"] < 60 for s in report.layer_stats.values())


def test_each_block_gets_its_own_mask_and_each_batch_its_own_kwargs():
    """A Qwen2 with one full and one sliding-window block: running the blocks on what block_inputs recorded
    reproduces the model's own final hidden states, batch by batch (block 0's mask would not)."""
    seed_everything(4)
    config = Qwen2Config(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        use_sliding_window=True,
        sliding_window=4,
        layer_types=["full_attention", "sliding_attention"],
        attn_implementation="eager",
    )
    model = Qwen2ForCausalLM(config).eval()
    batches = list(torch.randint(0, 128, (6, 12)).split(4))  # batches of 4 and 2
    expected = []
    handle = model.model.norm.register_forward_pre_hook(lambda _m, args: expected.append(args[0]))
    with torch.no_grad():
        for ids in batches:
            model(input_ids=ids, use_cache=False)
    handle.remove()
    hidden, kwargs = block_inputs(model, batches)
    assert not torch.equal(kwargs[0][0]["attention_mask"], kwargs[1][0]["attention_mask"])
    with torch.no_grad():
        for b, h in enumerate(hidden):
            for i, block in enumerate(decoder_blocks(model)):
                h = block(h, **kwargs[i][b])
            torch.testing.assert_close(h, expected[b], atol=1e-5, rtol=1e-5)
