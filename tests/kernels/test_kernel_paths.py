"""Every quantized GEMM call records the path it took (evalsuite.kernels.paths): the weight-only launcher its
GEMV, fused GEMM or dequantize-then-cuBLAS with the reason, a torch-ref layer the reference; a run writes each
variant's counts to results.json and its report names every call that did not run our quantized kernels."""

import json
import shutil

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from evalsuite import models
from evalsuite.config import parse_suite
from evalsuite.kernels import _weight_only, paths
from evalsuite.kernels.fp4_gemm import fp4_gemm, mxfp4_quantize_ref
from evalsuite.kernels.w4a16_gemm import pack_int4, w4a16_gemm
from evalsuite.quant_schemes.linear import QuantLinear
from evalsuite.quant_schemes.scheme import resolve
from evalsuite.reports import render_reports
from evalsuite.runner import run_suite
from tests.kernels.common import DEVICE


def _int4(n, k, group):
    codes = torch.randint(0, 16, (n, k), dtype=torch.uint8, device=DEVICE)
    return pack_int4(codes), torch.rand(n, -(-k // group), device=DEVICE) / 100


def test_the_launcher_records_the_path_of_each_call_with_its_reason():
    qweight, scale = _int4(24, 64, 32)
    paths.reset()
    for m in (1, 17, 300, 300):
        w4a16_gemm(torch.randn(m, 64, device=DEVICE).to(torch.bfloat16), qweight, scale, None, 32)
    packed, e8m0 = mxfp4_quantize_ref(torch.randn(24, 64, device=DEVICE))
    fp4_gemm(torch.randn(2, 64, device=DEVICE), packed, e8m0, "mxfp4")
    taken = {(e["kernel"], e["path"]): e for e in paths.taken()}
    assert set(taken) == {
        ("w4a16_gemm[int4]", paths.TRITON_GEMV),
        ("w4a16_gemm[int4]", paths.TRITON_GEMM),
        ("w4a16_gemm[int4]", paths.DEQUANT_CUBLAS),
        ("fp4_gemm[mxfp4]", paths.TRITON_GEMV),
    }
    dequant = taken["w4a16_gemm[int4]", paths.DEQUANT_CUBLAS]
    assert (dequant["calls"], dequant["rows"]) == (2, 600) and "DEQUANT_GEMM_MIN_M (256)" in dequant["reason"]
    assert taken["w4a16_gemm[int4]", paths.TRITON_GEMM]["rows"] == 17
    assert taken["fp4_gemm[mxfp4]", paths.TRITON_GEMV]["reason"] == _weight_only.WHY_GEMV
    assert paths.taken()[0]["path"] == paths.DEQUANT_CUBLAS  # most calls first


def test_a_small_batch_the_gemv_cannot_take_says_why_it_ran_the_gemm():
    qweight, scale = _int4(8, 30, 10)  # K = 30 and groups of 10 are not whole 8-code words
    paths.reset()
    w4a16_gemm(torch.randn(3, 30, device=DEVICE), qweight, scale, None, 10)
    (entry,) = paths.taken()
    assert entry["path"] == paths.TRITON_GEMM and entry["reason"] == _weight_only.WHY_GEMM_NOT_GEMV


def test_a_torch_ref_layer_records_the_reference_for_every_call():
    layer = QuantLinear.from_float(torch.nn.Linear(64, 32), resolve("W4A16"), backend="torch-ref")
    paths.reset()
    layer(torch.randn(2, 5, 64))
    assert paths.taken() == [
        {
            "kernel": "w4a16_gemm",
            "path": paths.TORCH_REF,
            "reason": "kernel backend 'torch-ref': the pure-torch reference",
            "calls": 1,
            "rows": 10,
        }
    ]


@pytest.fixture
def small_model(tmp_path):
    """A one-layer random Llama with the embedded model's tokenizer: small enough for the interpreter."""
    path = tmp_path / "small"
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=796, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, head_dim=32, max_position_embeddings=256,
                      tie_word_embeddings=True)  # fmt: skip
    LlamaForCausalLM(cfg).save_pretrained(path)
    tiny = models.EMBEDDED["embedded:tiny"]
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        shutil.copy(tiny / name, path / name)
    return path


def test_a_weight_only_variant_at_a_large_batch_records_dequant_cublas_in_results_and_report(tmp_path, small_model):
    config = parse_suite(
        {
            "name": "paths",
            "model": {"path": str(small_model), "dtype": "float32"},
            "variants": ["W4A16"],
            "suites": {"academic": {"tasks": ["tiny_ppl"], "limit": 4}},
            "run": {"batch_size": 8, "bootstrap_iters": 10, "backend": "triton"},
        }
    )
    outcome = run_suite(config, tmp_path / "run")
    variants = json.loads(outcome.results_path.read_text())["variants"]
    assert variants["baseline"]["kernel_paths"] == []  # no quantized layer
    entries = variants["W4A16"]["kernel_paths"]
    by_path = {e["path"]: e for e in entries}
    assert paths.DEQUANT_CUBLAS in by_path, entries  # whole tiny_ppl documents: M >= 256 rows per call
    for e in entries:
        assert e["kernel"] == "w4a16_gemm[int4]"
        if e["path"] == paths.DEQUANT_CUBLAS:
            assert e["rows"] >= _weight_only.DEQUANT_GEMM_MIN_M * e["calls"]
        else:
            assert e["rows"] < _weight_only.DEQUANT_GEMM_MIN_M * e["calls"]
    assert sum(e["calls"] for e in entries) % 7 == 0  # seven quantized linears per forward pass
    md, html = render_reports(outcome.results_path)
    dequant = by_path[paths.DEQUANT_CUBLAS]
    for text in (md.read_text(), html.read_text()):
        assert f"W4A16: {dequant['calls']:,} of {sum(e['calls'] for e in entries):,} quantized-layer calls" in text
        assert "dequant-cublas" in text and "GEMM paths" in text
