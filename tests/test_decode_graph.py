"""The graph decoder against the existing eager path (graphs.DynamicDecoder, HF's forward): same greedy tokens,
same cache contents, the refusals, and what it records. On CPU its CUDA graph is skipped (and it says so);
the compiled functions are traced here with a CPU-only backend, fullgraph, so a graph break fails the test."""

import json
import logging

import pytest
import torch

from evalsuite import decode_graph
from evalsuite.decode_graph import EAGER, GraphDecoder, pick_decoder, unsupported
from evalsuite.graphs import DynamicDecoder
from evalsuite.lm import EvalLM

CONTEXTS = [[5, 17, 33, 2, 9, 100, 41], [7, 8], [300, 301, 302, 40]]  # left-padded to 7 in one batch


def greedy(decoder, contexts, steps):
    """Greedy tokens (steps, B) and every step's logits, copied: a CUDA-graph decoder returns its static output
    buffer, which the next replay overwrites."""
    logits = decoder.prefill(contexts)
    tokens, all_logits = [], [logits.clone()]
    for _ in range(steps):
        next_ids = logits.argmax(-1)
        tokens.append(next_ids.tolist())
        logits = decoder.step(next_ids)
        all_logits.append(logits.clone())
    return tokens, all_logits


def random_model(kind: str, vocab: int = 320):
    """A small seeded model with grouped-query attention (4 query heads share 2 key/value heads)."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    config_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen3": (Qwen3Config, Qwen3ForCausalLM)}[kind]
    config = config_cls(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        vocab_size=vocab,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    return model_cls(config).eval()


def test_greedy_tokens_match_the_eager_hf_path_on_the_embedded_model(tiny):
    want, want_logits = greedy(DynamicDecoder(tiny.model), CONTEXTS, 12)
    decoder = GraphDecoder(tiny.model, batch_size=3, max_len=32)
    got, got_logits = greedy(decoder, CONTEXTS, 12)
    assert got == want
    for a, b in zip(got_logits, want_logits, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert decoder.graphs is False  # CPU: no graph, and said; the embedded model's 4 layers fused q/k/v, gate/up
    assert decoder.describe() == "graph decoder (eager; q/k/v and gate/up fused in 8/8 groups)"


@pytest.mark.parametrize("kind", ["llama", "qwen3"])
def test_grouped_query_attention_and_qk_norms_match(kind):
    model = random_model(kind)
    want, want_logits = greedy(DynamicDecoder(model), CONTEXTS, 8)
    got, got_logits = greedy(GraphDecoder(model, batch_size=3, max_len=24), CONTEXTS, 8)
    assert got == want
    for a, b in zip(got_logits, want_logits, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_cache_slots_hold_what_hf_caches_and_nothing_past_the_last_token():
    model = random_model("llama")
    reference = DynamicDecoder(model)
    reference.prefill(CONTEXTS)
    decoder = GraphDecoder(model, batch_size=3, max_len=20)
    decoder.prefill(CONTEXTS)
    ids = torch.tensor([11, 12, 13])
    for _ in range(3):
        reference.step(ids)
        decoder.step(ids)
    width = 7 + 3
    assert decoder.length == width and decoder.write.item() == width - 1
    real = decoder.keep[:, :width]  # the pad slots hold what each path makes of pads, which nothing reads
    assert real.sum(-1).tolist() == [10, 5, 7]
    for i, layer in enumerate(reference.cache.layers):
        for which, theirs in enumerate((layer.keys, layer.values)):
            ours = decoder.kv[i][which, :, :, :width]
            torch.testing.assert_close(ours.transpose(1, 2)[real], theirs.transpose(1, 2)[real], atol=1e-5, rtol=1e-5)
        assert not decoder.kv[i][:, :, :, width:].any()
    # positions continue each row's own count (the left-padded rows are shorter)
    assert decoder.positions[:, 0].tolist() == [9, 4, 6]


@pytest.mark.parametrize("variant", ["W4A16", "NVFP4", "W8A8_INT8"])
def test_weight_only_layers_apply_the_silu_gate_in_their_own_kernel(variant):
    """Quantized (torch-ref kernels, float32): the weight-only variants' fused gate/up layers return silu(gate) *
    up themselves (`QuantLinear.silu_gated`, the GEMV epilogue's reference) and the step calls no `gated`; their
    layers also take the RMSNorms and residual adds (the references of the GEMV's prologue and epilogue); the
    tokens and logits are the HF path's. W8A8 keeps the separate gate and the step's add+RMSNorm."""
    from evalsuite import models
    from evalsuite.quant_schemes.apply import quantize

    model = models.load(models.resolve_model("embedded:tiny"), "cpu", "float32").model
    quantize(model, variant, backend="torch-ref")
    want, want_logits = greedy(DynamicDecoder(model), CONTEXTS, 6)
    decoder = GraphDecoder(model, batch_size=3, max_len=24, layer_ops=True)
    layers = len(model.model.layers)
    gated = f"SiLU-gate in the gate/up kernel in {layers}/{layers} layers"
    assert (gated in decoder.describe()) == (variant != "W8A8_INT8"), decoder.describe()
    fused_ops = f"RMSNorm and residual add in the linear layers' kernels ({4 * layers}/{4 * layers}:"
    assert (fused_ops in decoder.describe()) == (variant != "W8A8_INT8"), decoder.describe()
    # by default (LAYER_OPS None) only where the format asks for them: the integer weight-only ones, not FP4
    by_default = GraphDecoder(model, batch_size=3, max_len=24).describe()
    assert decode_graph.LAYER_OPS is None and (fused_ops in by_default) == (variant == "W4A16"), by_default
    assert "RMSNorm and residual add" not in GraphDecoder(model, batch_size=3, max_len=24, layer_ops=False).describe()
    calls = []
    decoder.fns = {**decoder.fns, "gated": lambda *a: calls.append(1) or EAGER["gated"](*a)}
    got, got_logits = greedy(decoder, CONTEXTS, 6)
    assert got == want
    assert bool(calls) == (variant == "W8A8_INT8")
    for a, b in zip(got_logits, want_logits, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_a_second_batch_reuses_the_decoder_and_a_smaller_one_fills_rows():
    model = random_model("llama")
    decoder = GraphDecoder(model, batch_size=3, max_len=24)
    greedy(decoder, CONTEXTS, 5)
    fewer = [[9, 8, 7, 6, 5], [4, 3]]
    want, _ = greedy(DynamicDecoder(model), fewer, 6)
    got, _ = greedy(decoder, fewer, 6)
    assert [row[:2] for row in got] == want


def test_the_compiled_functions_trace_without_graph_breaks():
    """fullgraph tracing (aot_eager: dynamo and AOT autograd, no codegen) of everything the step compiles,
    and the tokens they give; on CUDA the same functions go to Inductor."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = random_model("qwen3")
    want, _ = greedy(DynamicDecoder(model), CONTEXTS, 5)
    decoder = GraphDecoder(model, batch_size=3, max_len=16, fuse="aot_eager")
    got, _ = greedy(decoder, CONTEXTS, 5)
    assert got == want
    assert set(decoder.fns) == set(EAGER) and all(decoder.fns[n] is not EAGER[n] for n in EAGER)
    # one graph per function for every layer and step: no guard on which layer's weights came in (a
    # recompile per layer would hit dynamo's limit, and inside a capture fail_on_recompile)
    assert counters["stats"]["unique_graphs"] == len(EAGER)
    greedy(GraphDecoder(model, batch_size=3, max_len=20, fuse="aot_eager"), CONTEXTS, 3)
    assert counters["stats"]["unique_graphs"] == len(EAGER)  # a new cache length: compiled dynamic, no recompile


def test_a_recompile_where_the_graph_is_captured_fails_loudly():
    from evalsuite.decode_graph import _no_recompile, compiled

    gated = compiled("aot_eager")["gated"]
    x = torch.randn(2, 3)
    gated(x, x)
    with _no_recompile():
        gated(x, x)  # compiled already: runs
        with pytest.raises(RuntimeError, match="fail_on_recompile"):
            gated(torch.randn(4, 5), torch.randn(4, 5))


@pytest.mark.parametrize("room", [1, 2, 6])
def test_warm_up_before_capture_leaves_the_decoding_unchanged(room):
    """What runs before a capture (CUDA-only itself): steps that write throwaway tokens, then the state put
    back; with one slot left it takes one step, so it never writes past the cache."""
    model = random_model("llama")
    want, _ = greedy(DynamicDecoder(model), CONTEXTS, room)
    decoder = GraphDecoder(model, batch_size=3, max_len=7 + room)
    logits = decoder.prefill(CONTEXTS)
    decoder._warm_up()
    got = []
    for _ in range(room):
        next_ids = logits.argmax(-1)
        got.append(next_ids.tolist())
        logits = decoder.step(next_ids)
    assert got == want


def test_bad_inputs_are_refused_with_what_would_fix_them():
    model = random_model("llama")
    decoder = GraphDecoder(model, batch_size=2, max_len=8)
    with pytest.raises(ValueError, match="3 contexts for a decoder built for 2"):
        decoder.prefill(CONTEXTS)
    with pytest.raises(ValueError, match="context of 8 tokens does not fit a cache of 8"):
        decoder.prefill([list(range(8))])
    decoder.prefill([[1, 2, 3, 4, 5, 6, 7]])
    decoder.step(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="the cache of 8 tokens is full"):
        decoder.step(torch.tensor([1, 2]))


def test_models_it_cannot_run_are_named_with_the_reason():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=64))
    assert "model type 'gpt2'" in unsupported(gpt2, 64)
    with pytest.raises(ValueError, match="cannot run this model: model type 'gpt2'"):
        GraphDecoder(gpt2, 1, 64)
    model = random_model("llama")
    assert unsupported(model, 64) is None
    model.config._attn_implementation = "evalsuite_kvq"  # what KV-cache quantization installs
    assert "evalsuite_kvq" in unsupported(model, 64)
    model.config._attn_implementation = "sdpa"
    model.config.sliding_window = 16
    assert "sliding-window attention (16 tokens) with a cache of 64" in unsupported(model, 64)


def test_off_cuda_the_harness_keeps_the_eager_hf_decoder_and_says_so(tiny, caplog, monkeypatch):
    monkeypatch.setattr(decode_graph, "_LOGGED", set())  # each choice is logged once per process
    with caplog.at_level(logging.INFO, logger="evalsuite.decode_graph"):
        decoder, path = pick_decoder(tiny.model, 2, 64)
        pick_decoder(tiny.model, 2, 64)
    assert isinstance(decoder, DynamicDecoder)
    assert path == "eager HF decoder: graph decoder skipped, no CUDA device (cpu)"
    assert caplog.text.count(f"decoding with the {path}") == 1
    lm = EvalLM(tiny.model, tiny.tokenizer, progress=False)  # what the runner records: each decoder once
    lm._decoder(2, 16), lm._decoder(3, 40)
    assert lm.decoders_used == [path]


def test_bench_e2e_puts_the_decoders_side_by_side(tmp_path):
    from evalsuite.bench_e2e import main

    args = ["--shape", "tiny", "--layers", "1", "--device", "cpu", "--variants", "bf16,W8A8_INT8"]
    args += ["--batches", "1", "--steps", "2", "--repeats", "1", "--context", "4", "--no-prefill"]
    assert main(args + ["--decoders", "hf,graph,eager", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "bench-e2e.json").read_text())
    assert data["meta"]["copy_gb_s"] > 0
    for row in data["rows"]:
        for kind in ("hf", "graph", "eager"):
            assert row[f"decode_tok_s_b1_{kind}"] > 0
            assert row[f"roofline_b1_{kind}"] == pytest.approx(
                row["weight_bytes"] * row[f"decode_tok_s_b1_{kind}"] / (data["meta"]["copy_gb_s"] * 1e9)
            )
        # CPU: the graph is skipped, and it says so; one layer, its two groups fused
        assert row["decoders"]["graph"] == "graph decoder (eager; q/k/v and gate/up fused in 2/2 groups)"
    table = (tmp_path / "bench-e2e.md").read_text()
    assert "| graph / hf |" in table and "W8A8_INT8" in table and "(1.00x)" in table
    with pytest.raises(SystemExit):
        main(args + ["--decoders", "hf,fast"])


def test_bench_e2e_times_the_step_with_and_without_the_layers_own_norms(tmp_path):
    """graph-layer-ops / graph-no-layer-ops: the W4A16 step with the layers' RMSNorms and residual adds forced on
    and off, side by side, each saying what it ran."""
    from evalsuite.bench_e2e import main

    args = ["--shape", "tiny", "--layers", "1", "--device", "cpu", "--variants", "W4A16", "--batches", "1"]
    args += ["--steps", "2", "--repeats", "1", "--context", "4", "--no-prefill", "--out", str(tmp_path)]
    assert main(args + ["--decoders", "graph-layer-ops,graph-no-layer-ops"]) == 0
    row = json.loads((tmp_path / "bench-e2e.json").read_text())["rows"][0]
    assert row["decode_tok_s_b1_graph-layer-ops"] > 0 and row["decode_tok_s_b1_graph-no-layer-ops"] > 0
    assert "RMSNorm and residual add in the linear layers' kernels (4/4:" in row["decoders"]["graph-layer-ops"]
    assert "RMSNorm and residual add" not in row["decoders"]["graph-no-layer-ops"]


def test_bench_e2e_says_how_many_layers_took_the_decode_order(tmp_path):
    """--decode-order mma128: the int4 layers the tensor-core GEMV runs take its order (none off an NVIDIA GPU,
    and none with float32 activations), and the row and the table say how many did."""
    from evalsuite.bench_e2e import main

    args = ["--shape", "tiny", "--layers", "1", "--device", "cpu", "--variants", "bf16,W4A16", "--batches", "1"]
    args += ["--steps", "2", "--repeats", "1", "--context", "4", "--no-prefill", "--decoders", "eager"]
    assert main(args + ["--decode-order", "mma128", "--out", str(tmp_path)]) == 0
    bf16, w4 = json.loads((tmp_path / "bench-e2e.json").read_text())["rows"]
    assert "decode_order" not in bf16
    assert w4["decode_order"] == "mma128" and w4["decode_order_layers"] == 0
    assert "| W4A16 (mma128 order, 0 layers) |" in (tmp_path / "bench-e2e.md").read_text()


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs and Inductor's GPU code need a GPU")


@CUDA
def test_cuda_graph_steps_give_the_eager_tokens_on_the_gpu(monkeypatch):
    """The captured, compiled step against HF's eager forward in float32 (TF32 off), over two batches that
    replay the same graph, the second with fewer rows."""
    from evalsuite import models

    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    model = models.load(models.resolve_model("embedded:tiny"), "cuda", "float32").model
    decoder = GraphDecoder(model, batch_size=3, max_len=48)
    assert decoder.graphs
    assert decoder.describe() == (
        "graph decoder (cuda-graph, inductor-compiled; q/k/v and gate/up fused in 8/8 groups; "
        "step attention: Triton decode kernel, which applies RoPE and writes the new keys and values)"
    )
    for contexts in (CONTEXTS, [[9, 8, 7, 6, 5], [4, 3]]):
        want, want_logits = greedy(DynamicDecoder(model), contexts, 16)
        got, got_logits = greedy(decoder, contexts, 16)
        assert [row[: len(contexts)] for row in got] == want
        for a, b in zip(got_logits, want_logits, strict=True):
            torch.testing.assert_close(a[: len(contexts)], b, atol=1e-3, rtol=1e-3)
    assert decoder.graph is not None


def test_an_unknown_attention_choice_is_refused(tiny):
    with pytest.raises(ValueError, match="attention must be 'auto', 'triton' or 'torch', got 'flash'"):
        GraphDecoder(tiny.model, batch_size=1, max_len=16, attention="flash")


@CUDA
@pytest.mark.parametrize("variant", ["W4A16", "NVFP4", "W8A8_INT8"])
def test_quantized_kernels_run_inside_the_captured_step(variant):
    """Each variant's Triton kernels replayed from our graph give the logits the HF path gives, in bf16."""
    from evalsuite import models
    from evalsuite.graphs import StaticDecoder
    from evalsuite.quant_schemes.apply import quantize

    model = models.load(models.resolve_model("embedded:tiny"), "cuda", "bfloat16").model
    quantize(model, variant, backend="triton")
    reference, decoder = StaticDecoder(model, 3, 40), GraphDecoder(model, batch_size=3, max_len=40)
    assert ("SiLU-gate in the gate/up kernel in" in decoder.describe()) == (variant != "W8A8_INT8")
    pairs = [(reference.prefill(CONTEXTS), decoder.prefill(CONTEXTS))]
    for ids in ([11, 12, 13], [14, 15, 16], [17, 18, 19]):  # the same tokens into both: capture, then replays
        ids = torch.tensor(ids, device="cuda")
        pairs.append((reference.step(ids).clone(), decoder.step(ids).clone()))
    assert decoder.graph is not None
    for want, got in pairs:  # bf16 rounding apart (the fused norms round once), the same logits
        error = (got.float() - want.float()).abs().max() / want.float().abs().max()
        assert error < 3e-2, f"{variant}: logits differ by {error:.3g} of their largest value"


@CUDA
def test_on_cuda_the_harness_decodes_with_the_step_unless_it_cannot(monkeypatch):
    """The default on CUDA is the graph decoder; a model it cannot run, or a caller asking for the HF path,
    gets the HF forward in a CUDA graph, and the recorded line says which and why."""
    from evalsuite.graphs import StaticDecoder

    monkeypatch.setattr(decode_graph, "_LOGGED", set())
    model = random_model("llama").cuda()
    decoder, path = pick_decoder(model, 2, 64)
    assert isinstance(decoder, GraphDecoder)
    assert path == (
        "graph decoder (cuda-graph, inductor-compiled; q/k/v and gate/up fused in 4/4 groups; "
        "step attention: Triton decode kernel, which applies RoPE and writes the new keys and values)"
    )
    decoder, path = pick_decoder(model, 2, 64, step=False)
    assert isinstance(decoder, StaticDecoder) and path == "HF forward in a CUDA graph (asked for)"
    model.config.sliding_window = 16
    decoder, path = pick_decoder(model, 2, 64)
    assert isinstance(decoder, StaticDecoder)
    assert (
        path == "HF forward in a CUDA graph: fallback, the graph decoder cannot run sliding-window attention "
        "(16 tokens) with a cache of 64"
    )


def test_compiled_step_functions_take_new_batch_sizes_and_cache_lengths_without_recompiling(monkeypatch):
    """Inductor on the CPU (the same dynamo guards as on CUDA): after one compile, a generation run's other batch
    sizes and cache lengths reuse it; a recompile there would fail under the stance."""
    monkeypatch.setattr(decode_graph, "_COMPILED", {})
    torch._dynamo.reset()
    fns = decode_graph.compiled("inductor")

    def attend(batch: int, length: int) -> torch.Tensor:
        q = torch.randn(batch, 4, 1, 16)
        kv = torch.randn(2, batch, 2, length, 16)
        mask = torch.rand(batch, 1, length) > 0.3
        mask[..., 0] = True
        torch.testing.assert_close(fns["attend"](q, kv, mask, 0.25), EAGER["attend"](q, kv, mask, 0.25))
        return fns["norm"](torch.randn(batch, 1, 64), torch.ones(64), 1e-6)

    attend(2, 64)  # 2 rows, as many as the stacked keys and values: no tie between the two (duck sizing is off)
    with torch.compiler.set_stance("fail_on_recompile"):
        for batch, length in ((5, 96), (7, 256), (4, 128)):
            assert attend(batch, length).shape == (batch, 1, 64)


def test_compiled_rope_writes_the_new_keys_and_values_into_the_cache_in_place(monkeypatch):
    """RoPE writes the cache itself (so that Inductor puts the write in its own kernel): compiled, the cache it
    was given holds the rotated keys and the values at the write slots, the other slots untouched, as eagerly."""
    monkeypatch.setattr(decode_graph, "_COMPILED", {})
    torch._dynamo.reset()
    rope = decode_graph.compiled("inductor")["rope"]
    b, t, heads, kv_heads, d, length = 2, 3, 4, 2, 16, 10
    q, k, v = torch.randn(b, t, heads * d), torch.randn(b, t, kv_heads * d), torch.randn(b, t, kv_heads * d)
    cos, sin = torch.randn(b, t, d), torch.randn(b, t, d)
    index = torch.tensor([4, 5, 6])
    cache = torch.randn(2, b, kv_heads, length, d)
    want_cache = cache.clone()
    want_q = EAGER["rope"](q, k, v, cos, sin, d, None, want_cache, index)
    before = cache.clone()
    got_q = rope(q, k, v, cos, sin, d, None, cache, index)
    torch.testing.assert_close(got_q, want_q)
    torch.testing.assert_close(cache, want_cache)
    assert not torch.equal(cache[..., 4:7, :], before[..., 4:7, :])
    assert torch.equal(cache[..., :4, :], before[..., :4, :]) and torch.equal(cache[..., 7:, :], before[..., 7:, :])


def test_the_new_keys_and_values_reach_the_attention_kernel_as_one_tensor():
    """`_key_values`: a view (no copy) where the fused q/k/v output holds k and v side by side, a stacked copy
    where separate layers produced them; the same (B, 2, Hkv, D) values either way."""
    from evalsuite.decode_graph import _key_values

    b, kv_heads, d = 3, 2, 8
    fused_out = torch.randn(b, 1, (4 + 2 * kv_heads) * d)
    _, k, v = fused_out.split([4 * d, kv_heads * d, kv_heads * d], dim=-1)
    want = torch.stack((k, v), dim=1).view(b, 2, kv_heads, d)
    view = _key_values(k, v, d)
    assert view.data_ptr() == k.data_ptr() and torch.equal(view, want)
    separate = _key_values(k.clone(), v.clone(), d)
    assert separate.data_ptr() != k.data_ptr() and torch.equal(separate, want)
