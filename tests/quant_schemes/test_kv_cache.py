"""KV-cache quantization through the whole path: `quantize` installs KVQuant, `calibrate` records the absmax
of K (after rotary embedding) and V, `KVQuant.scale` turns it into the static scale, and the patched
attention quantizes with it."""

import pytest
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from evalsuite import models
from evalsuite.quant_schemes.apply import quantize
from evalsuite.quant_schemes.kv_cache import attention_modules
from tests.utils import assert_close, seed_everything, sqnr

PROMPT = torch.tensor([[5, 17, 33, 2, 99, 250, 7, 64, 128, 300, 12, 1]])


def logits(model, ids=PROMPT):
    with torch.no_grad():
        return model(input_ids=ids).logits.double()


def kv_absmax(model, batches, per_head: bool) -> list[dict[str, torch.Tensor]]:
    """max |K| and |V| per attention layer (per head, or overall), computed here from each attention module's
    inputs: K = rotary(k_proj(x)), V = v_proj(x), both (B, H, T, D)."""
    found = [{"k": [], "v": []} for _ in attention_modules(model)]

    def hook(index):
        def record(module, _args, kw):
            x, (cos, sin) = kw["hidden_states"], kw["position_embeddings"]
            shape = (*x.shape[:-1], -1, module.head_dim)
            k = module.k_proj(x).view(shape).transpose(1, 2)  # (B, H, T, D)
            v = module.v_proj(x).view(shape).transpose(1, 2)  # (B, H, T, D)
            _, k = apply_rotary_pos_emb(k, k, cos, sin)
            dims = (0, 2, 3) if per_head else (0, 1, 2, 3)
            found[index]["k"].append(k.abs().amax(dim=dims))
            found[index]["v"].append(v.abs().amax(dim=dims))

        return record

    modules = attention_modules(model)
    handles = [m.register_forward_pre_hook(hook(i), with_kwargs=True) for i, m in enumerate(modules)]
    with torch.no_grad():
        for ids in batches:
            model(input_ids=ids, use_cache=False)
    for handle in handles:
        handle.remove()
    return [{w: torch.stack(t).amax(dim=0) for w, t in layer.items()} for layer in found]


@pytest.mark.parametrize(
    "preset, qmax, per_head, floor_db",
    [("KV_INT8", 127.0, True, 15), ("KV_FP8", 448.0, False, 20)],  # static scales, random calibration tokens
)
def test_static_kv_scales_are_the_calibrated_absmax_and_the_attention_quantizes_with_them(
    tiny, preset, qmax, per_head, floor_db
):
    model = models.load(tiny.source, "cpu", "float32").model
    seed_everything(6)
    calib = list(torch.randint(0, model.config.vocab_size, (6, 24)).split(4))  # batches of 4 and 2
    expected = kv_absmax(model, calib, per_head)
    before = logits(model)
    report = quantize(model, preset, "rtn", calib=calib)
    assert report.kernels == [f"kv_cache[{report.scheme.kv_cache.describe()}]"] and not report.layers
    modules = attention_modules(model)
    assert len(modules) == model.config.num_hidden_layers
    for module, absmax in zip(modules, expected, strict=True):
        for which in ("k", "v"):
            scale = module.evalsuite_kv.scale(which)
            want = (absmax[which] / qmax).reshape(1, -1, 1, 1) if per_head else absmax[which] / qmax
            assert_close(scale, want, atol=0, rtol=1e-6, what=f"layer {module.layer_idx} {which} scale")
    after = logits(model)
    assert (after - before).abs().max() > 0  # the patched attention quantizes K and V
    assert sqnr(before, after) > floor_db  # ... within 8-bit error, not garbage
