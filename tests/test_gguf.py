"""A GGUF file as the baseline, loaded through transformers' GGUF support (which dequantizes it); the
provenance says which GGUF tensor types were dequantized."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from evalsuite import models
from evalsuite.config import parse_suite
from evalsuite.runner import run_suite

gguf = pytest.importorskip("gguf", reason="pip install gguf (in the test extra) to test GGUF baselines")
TINY = models.EMBEDDED["embedded:tiny"]


def _permute(x, heads):  # llama.cpp stores q/k rows permuted for its rotary layout
    return x.reshape(heads, 2, x.shape[0] // heads // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)


def write_gguf(path):
    """The embedded model as a llama GGUF file: Q8_0 projection weights, F32 embeddings and norms."""
    cfg = json.loads((TINY / "config.json").read_text())
    tok = json.loads((TINY / "tokenizer.json").read_text())
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg.get("rope_theta", 10000.0))
    w.add_rope_dimension_count(cfg["hidden_size"] // cfg["num_attention_heads"])
    w.add_vocab_size(cfg["vocab_size"])
    vocab = sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list([t for t, _ in vocab])
    w.add_token_types([gguf.TokenType.CONTROL if t == "<|endoftext|>" else gguf.TokenType.NORMAL for t, _ in vocab])
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]])
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg["num_hidden_layers"])
    for name, tensor in load_file(TINY / "model.safetensors").items():
        arr = tensor.float().numpy()
        if name.endswith("q_proj.weight"):
            arr = _permute(arr, cfg["num_attention_heads"])
        if name.endswith("k_proj.weight"):
            arr = _permute(arr, cfg["num_key_value_heads"])
        gname = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if arr.ndim == 2 and "token_embd" not in gname:
            q8 = gguf.GGMLQuantizationType.Q8_0
            w.add_tensor(gname, gguf.quants.quantize(arr, q8), raw_dtype=q8)
        else:
            w.add_tensor(gname, arr.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_a_gguf_file_is_a_baseline(tmp_path):
    path = write_gguf(tmp_path / "tiny-q8_0.gguf")
    source = models.resolve_model(str(path))
    assert source.gguf_file == "tiny-q8_0.gguf" and source.gguf_types == {"F32": 10, "Q8_0": 28}
    loaded = models.load(source, "cpu", "float32")
    original = models.load(models.resolve_model("embedded:tiny"), "cpu", "float32")
    ids = torch.tensor([[5, 17, 33, 2, 99, 250, 7, 64]])
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.model(input_ids=ids).logits, original.model(input_ids=ids).logits, atol=0.2, rtol=0
        )  # Q8_0 rounding of the projections
    config = parse_suite(
        {
            "name": "gguf",
            "model": {"path": str(path)},
            "variants": ["W8A8_INT8"],
            "suites": {"academic": {"tasks": ["tiny_mc"], "limit": 8}},
            # a GGUF file is a user's model: a few calibration windows instead of its default 128 x 512 tokens
            "run": {"batch_size": 8, "bootstrap_iters": 0, "calibration": {"samples": 4, "seq_len": 128}},
        }
    )
    data = run_suite(config, tmp_path / "run").data
    assert data["model"]["gguf"]["tensor_types"] == {"F32": 10, "Q8_0": 28}
    assert "dequantized" in data["model"]["gguf"]["dequantized"]
    # sizes: the dequantized weights in memory (float32 here), the file beside them; W8A8 is smaller than that
    assert data["model"]["file_bytes"] == path.stat().st_size
    assert data["model"]["weight_bytes"] == models.memory_bytes(loaded.model) > path.stat().st_size
    assert data["variants"]["W8A8_INT8"]["compression_ratio"] > 1.5
    base = data["variants"]["baseline"]
    assert base["description"] == "GGUF tiny-q8_0.gguf (F32 x10, Q8_0 x28), dequantized to float32", base


def test_a_broken_gguf_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 10)
    with pytest.raises(models.ModelLoadError, match="not a readable GGUF file"):
        models.resolve_model(str(bad))
