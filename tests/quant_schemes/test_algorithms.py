"""Calibrated algorithms against independent facts: function-preserving transforms, layer-error ordering
against RTN, KV-cache error bounds, determinism, and the combinations that are refused."""

import pytest
import torch

from evalsuite.calibration import CalibrationError, build_calibration
from evalsuite.config import CalibrationSpec, ConfigError, load_suite, parse_suite
from evalsuite.kernels.hadamard import hadamard_ref
from evalsuite.lm import EvalLM
from evalsuite.quant_schemes import PRESETS
from evalsuite.quant_schemes.algorithms import UnknownAlgorithmError, awq, check_combination
from evalsuite.quant_schemes.algorithms.awq import clipped_weight, search_scale
from evalsuite.quant_schemes.algorithms.gptq import gptq_weight
from evalsuite.quant_schemes.algorithms.sequential import Recorded, _recorder, decoder_blocks
from evalsuite.quant_schemes.algorithms.smooth import fold, fold_pairs
from evalsuite.quant_schemes.algorithms.smoothquant import smoothing_scales
from evalsuite.quant_schemes.apply import quantize, target_layers
from evalsuite.quant_schemes.args import QuantArgs
from evalsuite.quant_schemes.formats import quantize_weight
from evalsuite.quant_schemes.kv_cache import fake_quant
from evalsuite.quant_schemes.linear import QuantLinear
from evalsuite.quant_schemes.rotation import HadamardRotated
from evalsuite.quant_schemes.scheme import Scheme
from tests.utils import assert_close, seed_everything

W4 = PRESETS["W4A16"]
PER_TENSOR = {  # integer weight-only, one scale for the whole tensor: rtn takes it, gptq and awq do not
    "W8A16_TENSOR": Scheme(weights=QuantArgs(num_bits=8, strategy="tensor")),
    "W4A16_TENSOR": Scheme(weights=QuantArgs(num_bits=4, strategy="tensor")),
}
PROMPT = torch.tensor([[5, 17, 33, 2, 99, 250, 7, 64, 128, 300, 12, 1]])


def logits(model, ids=PROMPT):
    with torch.no_grad():
        return model(input_ids=ids).logits.double()


def outlier_layer(seed=0, n=96, k=256, rows=2048):
    """A random layer and correlated inputs (mixed from 64 factors, as hidden states are) whose channels 3, 50
    and 200 carry 25x outliers, as LLM activations do."""
    seed_everything(seed)
    w = torch.randn(n, k) * 0.05
    x = torch.randn(rows, 64) @ torch.randn(64, k) / 8 + 0.1 * torch.randn(rows, k)
    x[:, [3, 50, 200]] *= 25
    return w, x


def output_error(x, w, w_hat):
    return float((x @ w.t() - x @ w_hat.t()).pow(2).sum())


@pytest.fixture
def fresh(tiny):
    """A fresh float copy of the embedded model, so tests may change it."""
    from evalsuite import models

    return models.load(tiny.source, "cpu", "float32")


@pytest.fixture(scope="module")
def calib_batches():
    from evalsuite import models

    loaded = models.load(models.resolve_model("embedded:tiny"), "cpu", "float32")
    spec = CalibrationSpec(set="tiny_calib", samples=8, seq_len=64, batch_size=4)
    return build_calibration(spec, EvalLM(loaded.model, loaded.tokenizer, progress=False)).batches


def test_smoothing_folds_leave_the_float_model_unchanged(fresh):
    before = logits(fresh.model)
    seed_everything(1)
    layers = target_layers(fresh.model, W4)
    for block in decoder_blocks(fresh.model):
        linears = {n: m for n, m in layers.items() if any(m is x for x in block.modules())}
        pairs = fold_pairs(block, linears)
        assert sorted(tuple(c.rsplit(".", 1)[-1] for c in p.consumers) for p in pairs) == [
            ("down_proj",),  # up -> down
            ("gate_proj", "up_proj"),  # post_attention_layernorm -> gate, up
            ("o_proj",),  # v -> o (one key/value head per query head)
            ("q_proj", "k_proj", "v_proj"),  # input_layernorm -> q, k, v
        ]
        for pair in pairs:
            k = linears[pair.consumers[0]].in_features
            fold(pair, linears, torch.rand(k) * 4 + 0.25)
    torch.testing.assert_close(logits(fresh.model), before, atol=1e-4, rtol=1e-4)


def test_hadamard_rotation_leaves_the_float_model_unchanged(fresh):
    before = logits(fresh.model)
    for name, layer in target_layers(fresh.model, W4).items():
        parent, _, child = name.rpartition(".")
        setattr(fresh.model.get_submodule(parent), child, HadamardRotated(layer, "torch-ref"))
    torch.testing.assert_close(logits(fresh.model), before, atol=1e-4, rtol=1e-4)


def test_hadamard_is_the_orthonormal_sylvester_matrix():
    h = torch.ones(1, 1)
    for _ in range(4):
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    h = h / 4.0  # H_16 / sqrt(16)
    eye = torch.eye(16)
    torch.testing.assert_close(hadamard_ref(eye), h)
    torch.testing.assert_close(hadamard_ref(hadamard_ref(eye)), eye, atol=1e-6, rtol=0)


def test_gptq_beats_rtn_on_a_layer_with_outlier_channels():
    w, x = outlier_layer()
    hessian = 2 * x.t() @ x / x.shape[0]
    rtn = quantize_weight(w, W4.weights).dequantize()
    for act_order in (False, True):
        gptq = gptq_weight(w, hessian, W4.weights, act_order=act_order).dequantize()
        assert output_error(x, w, gptq) <= output_error(x, w, rtn) * 0.5, act_order  # error feedback pays
    asym = PRESETS["W4A16_ASYM"].weights
    assert output_error(x, w, gptq_weight(w, hessian, asym).dequantize()) <= output_error(
        x, w, quantize_weight(w, asym).dequantize()
    )


@pytest.mark.parametrize("observer", ["minmax", "mse"])
@pytest.mark.parametrize("preset", ["W4A16", "W4A16_ASYM"])
def test_gptq_with_a_diagonal_hessian_is_rtn_with_the_same_observer(preset, observer):
    """A diagonal Hessian leaves no error to spread over other columns: GPTQ must then pick the very scales
    and codes RTN picks, by the scheme's observer (mse searches the clipping; minmax does not)."""
    seed_everything(5)
    args = QuantArgs(**{**PRESETS[preset].weights.model_dump(), "observer": observer})
    w = torch.randn(48, 384)
    gptq, rtn = gptq_weight(w, torch.eye(384), args), quantize_weight(w, args)
    assert_close(gptq.scale, rtn.scale, what="scale")
    assert_close(gptq.qdata, rtn.qdata, what="codes")
    if observer == "mse":
        assert not torch.equal(gptq.scale, quantize_weight(w, PRESETS[preset].weights).scale)


def test_gptq_quantizes_dead_columns_to_zero():
    w, x = outlier_layer()
    x[:, [7, 8, 100]] = 0  # channels that never fire: their Hessian rows are zero
    q = gptq_weight(w, 2 * x.t() @ x / x.shape[0], W4.weights).dequantize()
    assert (q[:, [7, 8, 100]] == 0).all()
    assert output_error(x, w, q) <= output_error(x, w, quantize_weight(w, W4.weights).dequantize())


def test_awq_scales_and_clipping_beat_rtn_on_held_out_rows_of_a_layer_with_outlier_channels():
    w, x = outlier_layer(seed=2)
    fit, held = x[:1024], x[1024:]  # searched on one half, measured on the other
    rtn = output_error(held, w, quantize_weight(w, W4.weights).dequantize())
    s = search_scale(fit, fit.abs().mean(0), [w], W4, grid=20)
    assert s[[3, 50, 200]].min() > 1.5 * s.median()  # alpha > 0 chosen: alpha = 0 gives s = 1 everywhere
    scaled = quantize_weight(w * s, W4.weights).dequantize() / s
    assert output_error(held, w, scaled) <= 0.5 * rtn
    clipped = clipped_weight(w * s, fit / s, W4, grid=20).dequantize() / s
    assert output_error(held, w, clipped) <= output_error(held, w, scaled)


def _layer_inputs(model, batches, layer):
    return _inputs_of(model, batches, {"layer": layer})["layer"]


def _inputs_of(model, batches, layers):
    """What each of `layers` sees over `batches`, recorded as calibration records it, in one pass."""
    records = {name: Recorded() for name in layers}
    handles = [m.register_forward_hook(_recorder(records[n], hessian=True)) for n, m in layers.items()]
    with torch.no_grad():
        for ids in batches:
            model(input_ids=ids)
    for handle in handles:
        handle.remove()
    return records


@pytest.mark.parametrize("layer_name", ["model.layers.0.self_attn.q_proj", "model.layers.2.mlp.down_proj"])
def test_gptq_and_awq_beat_rtn_on_held_out_rows_of_layers_of_the_embedded_model(tiny, calib_batches, layer_name):
    layer = tiny.model.get_submodule(layer_name)
    fit, held = _layer_inputs(tiny.model, calib_batches[:1], layer), _layer_inputs(tiny.model, calib_batches[1:], layer)
    w, x = layer.weight.detach().float(), held.x
    rtn = output_error(x, w, quantize_weight(w, W4.weights).dequantize())
    gptq = gptq_weight(w, 2 * fit.hessian / fit.rows, W4.weights).dequantize()
    assert output_error(x, w, gptq) <= rtn
    s = search_scale(fit.x, fit.mean_abs, [w], W4, grid=10)
    awq = clipped_weight(w * s, fit.x / s, W4, grid=10).dequantize() / s
    assert output_error(x, w, awq) <= rtn


def test_awq_run_on_the_embedded_model_keeps_the_float_function_and_beats_rtn(fresh, monkeypatch):
    """awq.run end to end: the folds leave the float model's logits unchanged; the clipping search sees the
    inputs divided by the folded scales (so with the folded weight it computes the float layer's outputs); and
    on held-out rows each fold group's output error, in the float model's coordinates, is at most RTN's."""
    model = fresh.model
    layers = target_layers(model, W4)
    float_weights = {n: m.weight.detach().clone() for n, m in layers.items()}
    spec = CalibrationSpec(set="tiny_calib", samples=24, seq_len=64, batch_size=8)
    batches = build_calibration(spec, EvalLM(model, fresh.tokenizer, progress=False)).batches
    calib, held = batches[:2], batches[2:]  # 1024 rows to search on, 512 held out
    seen = _inputs_of(
        model, calib, {n: layers[n] for n in ("model.layers.0.self_attn.o_proj", "model.layers.0.mlp.down_proj")}
    )
    inputs = _inputs_of(model, held, layers)
    before = logits(model)
    names_of = {id(m.weight): n for n, m in layers.items()}
    clip_inputs = {}

    def spy(w, x, scheme, grid):
        clip_inputs[names_of[id(w)]] = (w.detach().clone(), x.clone())
        return clipped_weight(w, x, scheme, grid)

    monkeypatch.setattr(awq, "clipped_weight", spy)
    weights, _ = awq.run(model, layers, W4, calib, lambda n, w: QuantLinear(w, None, None, "torch-ref"), 10, 10)
    torch.testing.assert_close(logits(model), before, atol=1e-4, rtol=1e-4)
    for name, record in seen.items():  # block 0 runs on the float model's own inputs
        w, x = clip_inputs[name]
        torch.testing.assert_close(x @ w.t(), record.x @ float_weights[name].t(), atol=1e-4, rtol=1e-4)
    totals = {"awq": 0.0, "rtn": 0.0}
    for group in ("q_proj k_proj v_proj", "o_proj", "gate_proj up_proj", "down_proj"):
        errors = {"awq": 0.0, "rtn": 0.0}
        for name in (n for n in layers if n.rsplit(".", 1)[-1] in group.split()):
            w, x = float_weights[name], inputs[name].x
            undone = weights[name].dequantize() * w / layers[name].weight.detach()  # the folds divided out
            errors["awq"] += output_error(x, w, undone)
            errors["rtn"] += output_error(x, w, quantize_weight(w, W4.weights).dequantize())
        assert errors["awq"] <= errors["rtn"], group
        totals = {k: totals[k] + errors[k] for k in totals}
    assert totals["awq"] <= 0.9 * totals["rtn"]


def test_smoothing_scales_move_outliers_into_the_weights():
    w, x = outlier_layer()
    s = smoothing_scales(x.abs().amax(0), [w], alpha=0.5)
    assert s[[3, 50, 200]].min() > 3 * s.median()
    smoothed = x / s
    spread = lambda t: t.abs().amax(0).max() / t.abs().amax(0).median()  # noqa: E731
    assert spread(smoothed) < spread(x)


@pytest.mark.parametrize("preset", ["KV_INT8", "KV_FP8"])
def test_kv_cache_round_trip_is_within_the_format_error_bound(preset):
    seed_everything(3)
    args = PRESETS[preset].kv_cache
    t = torch.randn(2, 4, 9, 16)  # (batch, heads, tokens, head_dim)
    amax = t.abs().amax(dim=(0, 2, 3)) if args.strategy.value == "channel" else t.abs().amax()
    qmax = 127.0 if preset == "KV_INT8" else 448.0
    scale = (amax / qmax).reshape(1, -1, 1, 1) if amax.numel() > 1 else amax / qmax
    deq = fake_quant(t, args, scale)
    if preset == "KV_INT8":
        assert ((deq - t).abs() <= scale / 2 + 1e-7).all()
    else:  # E4M3: 3 mantissa bits, relative error <= 2**-4 above the subnormal range
        normal = (t / scale).abs() >= 2**-6
        assert ((deq - t).abs()[normal.expand_as(t)] <= (t.abs() * 2**-4 + 1e-7)[normal.expand_as(t)]).all()
    per_token = PRESETS["KV_INT8"].kv_cache.model_copy(update={"strategy": "token", "dynamic": True})
    token_scale = t.abs().amax(-1, keepdim=True) / 127
    assert ((fake_quant(t, per_token, None) - t).abs() <= token_scale / 2 + 1e-7).all()


@pytest.mark.parametrize(
    "scheme, algorithm, options",
    [
        ("W4A16", "gptq", {}),
        ("W4A16", "awq", {"grid": 5, "clip_grid": 5}),
        ("W8A8_INT8", "smoothquant", {}),
        ("W4A16", "rtn", {"rotation": "hadamard"}),
        ("W8A8_INT8+KV_INT8", "rtn", {}),
    ],
)
def test_each_algorithm_is_deterministic(tiny, calib_batches, scheme, algorithm, options):
    from evalsuite import models

    outs = []
    for _ in range(2):
        m = models.load(tiny.source, "cpu", "float32")
        report = quantize(m.model, scheme, algorithm, calib=calib_batches, **options)
        outs.append((logits(m.model), {n: s.get("sqnr_db") for n, s in report.layer_stats.items()}))
        assert report.layers or report.kernels
    assert torch.equal(outs[0][0], outs[1][0]) and outs[0][1] == outs[1][1]


def test_quantized_layer_sqnr_is_recorded_and_gptq_improves_it(tiny, calib_batches):
    from evalsuite import models

    reports = {}
    for algorithm in ("rtn", "gptq"):
        m = models.load(tiny.source, "cpu", "float32")
        reports[algorithm] = quantize(m.model, "W4A16", algorithm, calib=calib_batches)
    rtn = [s["sqnr_db"] for s in reports["rtn"].layer_stats.values()]
    gptq = [s["sqnr_db"] for s in reports["gptq"].layer_stats.values()]
    assert all(10 < v < 60 for v in rtn)
    assert sum(gptq) / len(gptq) > sum(rtn) / len(rtn)


@pytest.mark.parametrize(
    "scheme, algorithm, rotation, message",
    [
        ("W8A8_INT8", "awq", None, "awq cannot quantize .*integer weight-only"),
        ("KV_INT8", "gptq", None, "gptq cannot quantize"),
        ("W4A16", "smoothquant", None, "quantized activations"),
        ("W4A16", "awq", "hadamard", "folds scales across layers"),
        ("KV_FP8", "rtn", "hadamard", "weight scheme"),
        ("W8A16_TENSOR", "gptq", None, "Strategy 'tensor'.*write weights.strategy: group .* or channel"),
        ("W4A16_TENSOR", "awq", None, "Strategy 'tensor'.*write weights.strategy: group .* or channel"),
    ],
)
def test_nonsense_combinations_are_refused_naming_the_legal_ones(scheme, algorithm, rotation, message):
    with pytest.raises(UnknownAlgorithmError, match=message):
        check_combination(PER_TENSOR.get(scheme) or PRESETS[scheme], algorithm, rotation)


def test_gptq_weight_refuses_per_tensor_scales():
    with pytest.raises(ValueError, match="weights.strategy must be group or channel, not 'tensor'"):
        gptq_weight(torch.randn(8, 16), torch.eye(16), PER_TENSOR["W8A16_TENSOR"].weights)


def test_refused_in_the_suite_file_before_any_model_loads():
    with pytest.raises(ConfigError, match="variants\\[0\\].*awq cannot quantize.*Legal combinations"):
        parse_suite(
            {
                "name": "t",
                "variants": [{"scheme": "W8A8_INT8", "algorithm": "awq"}],
                "suites": {"academic": {"tasks": ["tiny_mc"]}},
            }
        )
    with pytest.raises(ConfigError, match="needs calibration data"):
        parse_suite(
            {
                "name": "t",
                "variants": [{"scheme": "W4A16", "algorithm": "gptq"}],
                "suites": {"academic": {"tasks": ["tiny_mc"]}},
                "run": {"calibration": None},
            }
        )


def test_calibration_too_small_or_empty_is_an_error(tiny, tmp_path):
    lm = EvalLM(tiny.model, tiny.tokenizer, progress=False)
    with pytest.raises(CalibrationError, match="needs 2560000"):
        build_calibration(CalibrationSpec(set="tiny_calib", samples=10000, seq_len=256), lm)
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"text": ""}\n')
    with pytest.raises(CalibrationError, match="is empty"):
        build_calibration(CalibrationSpec(set=str(empty), samples=2, seq_len=8), lm)
    with pytest.raises(CalibrationError, match="neither built in"):
        build_calibration(CalibrationSpec(set="no_such_set", samples=2, seq_len=8), lm)
    with pytest.raises(CalibrationError, match="needs set, samples and seq_len"):
        build_calibration(CalibrationSpec(set="tiny_calib"), lm)


def test_a_model_other_than_the_demo_never_gets_the_demo_text():
    suite = {
        "name": "x",
        "variants": [{"scheme": "W4A16", "algorithm": "gptq"}],
        "suites": {"academic": {"tasks": ["tiny_mc"]}},
    }
    demo = parse_suite(suite).run.calibration
    assert (demo.set, demo.samples, demo.seq_len) == ("tiny_calib", 32, 128) and demo.origin.startswith("default")
    other = parse_suite({**suite, "model": {"path": "/models/SmolLM2-135M-Instruct"}}).run.calibration
    assert (other.set, other.samples, other.seq_len) == ("python_reference", 128, 512), other
    assert "a model other than the demo" in other.origin
    # a demo suite pointed at another model (the CLI's --model) takes that model's defaults, not the demo's
    moved = parse_suite({**load_suite("demo").model_dump(exclude={"source"}), "model": {"path": "/models/x"}})
    assert moved.run.calibration.set == "python_reference"
    named = parse_suite({**suite, "model": {"path": "/m"}, "run": {"calibration": {"set": "tiny_ppl", "seq_len": 64}}})
    assert (named.run.calibration.set, named.run.calibration.seq_len, named.run.calibration.samples) == (
        "tiny_ppl",
        64,
        128,
    )
    assert named.run.calibration.origin == "suite file"


def test_the_general_set_is_large_enough_for_its_default_windows(tiny):
    from evalsuite.calibration import load_texts

    texts = load_texts("python_reference")
    assert len(texts) > 50 and sum(len(t) for t in texts) > 300_000
    lm = EvalLM(tiny.model, tiny.tokenizer, progress=False)
    data = build_calibration(CalibrationSpec(set="python_reference", samples=128, seq_len=512, chat_template=False), lm)
    assert data.tokens == 128 * 512 and data.description.startswith("python_reference: 128 x 512 tokens")


def test_static_activations_of_our_own_schemes_are_refused_in_the_suite_file():
    scheme = {
        "weights": {"num_bits": 8, "type": "float", "strategy": "tensor"},
        "input_activations": {"num_bits": 8, "type": "float", "strategy": "tensor", "dynamic": False},
    }
    with pytest.raises(ConfigError, match=r"variants\[0\].*static input_activations .*set input_activations.dynamic"):
        parse_suite(
            {"name": "t", "variants": [{"name": "s", "scheme": scheme}], "suites": {"academic": {"tasks": ["tiny_mc"]}}}
        )
