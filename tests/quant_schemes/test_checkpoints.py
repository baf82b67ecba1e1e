"""Pre-quantized checkpoints as variants, and export. compressed-tensors checkpoints are written here by the
compressed-tensors package itself and our dequantized weights must equal its own decompression exactly;
GPTQ and AWQ layouts are written by small packers that follow those formats' documented layouts."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from evalsuite import models
from evalsuite.config import parse_suite
from evalsuite.quant_schemes import PRESETS
from evalsuite.quant_schemes.checkpoints import CheckpointError, load_quantized
from evalsuite.quant_schemes.formats import quantize_weight
from tests.utils import assert_close

TINY = models.EMBEDDED["embedded:tiny"]
IDS = torch.tensor([[5, 17, 33, 2, 99, 250, 7, 64, 128, 300, 12, 1]])


def write_ct(kind: str, out):
    """A compressed-tensors checkpoint of the embedded model, made with the compressed-tensors package."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationArgs,
        QuantizationConfig,
        QuantizationScheme,
        apply_quantization_config,
    )
    from compressed_tensors.quantization.utils import calculate_qparams
    from transformers import AutoModelForCausalLM

    specs = {
        "w4a16": (
            dict(num_bits=4, type="int", symmetric=True, strategy="group", group_size=128),
            None,
            "pack-quantized",
        ),
        "w4a16_asym": (
            dict(num_bits=4, type="int", symmetric=False, strategy="group", group_size=128),
            None,
            "pack-quantized",
        ),
        "w8a8": (
            dict(num_bits=8, type="int", symmetric=True, strategy="channel"),
            dict(num_bits=8, type="int", symmetric=True, strategy="token", dynamic=True),
            "int-quantized",
        ),
        "fp8": (
            dict(num_bits=8, type="float", symmetric=True, strategy="channel"),
            dict(num_bits=8, type="float", symmetric=True, strategy="token", dynamic=True),
            "float-quantized",
        ),
        "fp8_static": (  # llm-compressor's FP8 preset: per-tensor weights, static per-tensor input scales
            dict(num_bits=8, type="float", symmetric=True, strategy="tensor"),
            dict(num_bits=8, type="float", symmetric=True, strategy="tensor", dynamic=False),
            "float-quantized",
        ),
        "int8_static": (
            dict(num_bits=8, type="int", symmetric=True, strategy="tensor"),
            dict(num_bits=8, type="int", symmetric=True, strategy="tensor", dynamic=False),
            "int-quantized",
        ),
        "int8_channel_static": (
            dict(num_bits=8, type="int", symmetric=True, strategy="channel"),
            dict(num_bits=8, type="int", symmetric=True, strategy="tensor", dynamic=False),
            "int-quantized",
        ),
        "w8a16_asym": (dict(num_bits=8, type="int", symmetric=False, strategy="channel"), None, "int-quantized"),
        "w8a8_asym": (
            dict(num_bits=8, type="int", symmetric=False, strategy="channel"),
            dict(num_bits=8, type="int", symmetric=True, strategy="token", dynamic=True),
            "int-quantized",
        ),
    }
    w_args, a_args, fmt = specs[kind]
    w = QuantizationArgs(**w_args)
    model = AutoModelForCausalLM.from_pretrained(TINY, dtype=torch.bfloat16)
    input_amax = calibrate_input_amax(model) if a_args and not a_args["dynamic"] else {}
    scheme = QuantizationScheme(targets=["Linear"], weights=w, input_activations=a_args and QuantizationArgs(**a_args))
    apply_quantization_config(
        model, QuantizationConfig(config_groups={"group_0": scheme}, ignore=["lm_head"], format=fmt)
    )
    for name, module in model.named_modules():
        if hasattr(module, "input_scale"):  # static: calibrated to part of the observed range, so some saturate
            qmax = 448.0 if a_args["type"] == "float" else 127.0
            module.input_scale.data.fill_(input_amax[name] * STATIC_RANGE / qmax)
        if hasattr(module, "weight_scale"):
            weight = module.weight.detach().float()
            if w.strategy == "tensor":
                grouped = weight.reshape(1, 1, -1)
            elif w.group_size:
                grouped = weight.reshape(weight.shape[0], -1, w.group_size)
            else:
                grouped = weight[:, None, :]
            scale, zero = calculate_qparams(grouped.amin(-1), grouped.amax(-1), w)
            module.weight_scale.data = scale.to(module.weight_scale.dtype).reshape(module.weight_scale.shape)
            if hasattr(module, "weight_zero_point"):
                module.weight_zero_point.data = zero.to(module.weight_zero_point.dtype).reshape(
                    module.weight_zero_point.shape
                )
    compressor = ModelCompressor.from_pretrained_model(model, quantization_format=fmt)
    compressor.compress_model(model)
    model.save_pretrained(out)
    compressor.update_config(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(TINY / name, out / name)
    return out


STATIC_RANGE = 0.5  # static input scales cover half of the calibration inputs' absmax


def calibrate_input_amax(model) -> dict[str, float]:
    """The absmax of each Linear's input over IDS, as a calibration pass would record it."""
    amax, hooks = {}, []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name != "lm_head":
            hook = module.register_forward_pre_hook(lambda m, a, n=name: amax.update({n: a[0].float().abs().max()}))
            hooks.append(hook)
    with torch.no_grad():
        model(input_ids=IDS)
    for hook in hooks:
        hook.remove()
    return {n: float(v) for n, v in amax.items()}


def ct_decompressed(path, prefix):
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import QuantizationScheme

    qc = json.loads((path / "config.json").read_text())["quantization_config"]
    scheme = QuantizationScheme(**qc["config_groups"]["group_0"])
    tensors = load_file(path / "model.safetensors")
    local = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    return BaseCompressor.load_from_registry(qc["format"]).decompress(local, scheme)["weight"]


@pytest.mark.parametrize("kind", ["w4a16", "w4a16_asym", "w8a8", "fp8", "fp8_static", "int8_static", "w8a16_asym"])
def test_compressed_tensors_checkpoints_dequantize_exactly_as_the_package(kind, tmp_path):
    path = write_ct(kind, tmp_path / kind)
    model, report = load_quantized(path, "cpu", torch.bfloat16, "torch-ref")
    assert len(report["layers"]) == 28 and report["quant_method"] == "compressed-tensors"
    for prefix in report["layers"]:
        reference = ct_decompressed(path, prefix)
        ours = model.get_submodule(prefix).dequantize().to(reference.dtype)
        assert torch.equal(ours, reference), prefix
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=IDS).logits).all()


def layer_inputs(model, prefixes) -> dict[str, torch.Tensor]:
    """Each layer's input in a forward pass over IDS."""
    inputs, hooks = {}, []
    for prefix in prefixes:
        hook = model.get_submodule(prefix).register_forward_pre_hook(lambda m, a, p=prefix: inputs.update({p: a[0]}))
        hooks.append(hook)
    with torch.no_grad():
        model(input_ids=IDS)
    for hook in hooks:
        hook.remove()
    return inputs


@pytest.mark.parametrize("kind", ["fp8_static", "int8_static", "int8_channel_static"])
def test_static_input_scales_are_the_checkpoints_own(kind, tmp_path):
    """Each layer quantizes its input with the checkpoint's input_scale: the codes equal compressed-tensors'
    own quantize() with that scale (exactly), and the output equals (codes * input_scale) @ (stored weight *
    weight_scale).T computed here from the stored tensors, within fp32 accumulation-order noise (1e-5 of the
    largest output). The scales cover half the calibration range, so dynamic scales would give other outputs."""
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.lifecycle.forward import quantize

    from evalsuite.kernels.act_quant import act_quant_ref

    path = write_ct(kind, tmp_path / kind)
    qc = json.loads((path / "config.json").read_text())["quantization_config"]
    ct_args = QuantizationArgs(**qc["config_groups"]["group_0"]["input_activations"])
    stored = load_file(path / "model.safetensors")
    model, report = load_quantized(path, "cpu", torch.float32, "torch-ref")
    dtype = "fp8" if "fp8" in kind else "int8"
    assert report["kernels"] == [f"act_quant[{dtype} static]", f"{dtype}_gemm"]
    inputs = layer_inputs(model, report["layers"])
    for prefix in report["layers"]:
        layer, x = model.get_submodule(prefix), inputs[prefix].reshape(-1, inputs[prefix].shape[-1])  # (M, K)
        a_scale = stored[f"{prefix}.input_scale"].float()
        assert torch.equal(layer.input_scale, a_scale.reshape(1, 1)), prefix
        codes = quantize(x, a_scale, None, ct_args, dtype=torch.float8_e4m3fn if dtype == "fp8" else torch.int8)
        ours, _ = act_quant_ref(x, dtype, "tensor", layer.input_scale)
        assert_close(ours, codes, what=f"{prefix} activation codes")
        assert int((codes.float().abs() >= (448 if dtype == "fp8" else 127)).sum()) > 0, f"{prefix}: none saturate"
        weight = stored[f"{prefix}.weight"].float() * stored[f"{prefix}.weight_scale"].float().reshape(-1, 1)
        reference = (codes.float() * a_scale) @ weight.t()  # (M, N)
        tol = 1e-5 * float(reference.abs().max())
        with torch.no_grad():
            y = layer(x)
        assert_close(y, reference, atol=tol, what=f"{prefix} output")
        dynamic, d_scale = act_quant_ref(x, dtype, "tensor")
        assert float(((dynamic.float() * d_scale) @ weight.t() - reference).abs().max()) > 100 * tol, prefix
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=IDS).logits).all()


def test_asymmetric_int8_weight_only_runs_with_its_zero_points(tmp_path):
    path = write_ct("w8a16_asym", tmp_path / "w8a16")
    stored = load_file(path / "model.safetensors")
    model, report = load_quantized(path, "cpu", torch.float32, "torch-ref")
    assert report["kernels"] == ["w4a16_gemm"]
    inputs = layer_inputs(model, report["layers"])
    for prefix in report["layers"]:
        layer, x = model.get_submodule(prefix), inputs[prefix].reshape(-1, inputs[prefix].shape[-1])
        zero = stored[f"{prefix}.weight_zero_point"].float()
        assert bool((zero != 0).any()), prefix
        weight = (stored[f"{prefix}.weight"].float() - zero) * stored[f"{prefix}.weight_scale"].float()
        assert torch.equal(layer.dequantize(), weight), prefix
        reference = x @ weight.t()
        with torch.no_grad():
            assert_close(layer(x), reference, atol=1e-5 * float(reference.abs().max()), what=prefix)


def edit_tensors(path, edit):
    tensors = load_file(path / "model.safetensors")
    edit(tensors)
    save_file(tensors, path / "model.safetensors")


Q = "model.layers.0.self_attn.q_proj"


def test_asymmetric_w8a8_weights_are_refused_naming_the_layer(tmp_path):
    path = write_ct("w8a8_asym", tmp_path / "a")
    with pytest.raises(
        CheckpointError,
        match=r"layer model\.layers\.0\.mlp\.down_proj \(and 27 more\) has asymmetric "
        r"int8 weights \(weight_zero_point\).* W8A8 GEMMs apply no zero point.*weight-only",
    ):
        load_quantized(path, "cpu", torch.float32, "torch-ref")


def test_static_checkpoint_problems_are_refused_naming_the_layer(tmp_path):
    path = write_ct("fp8_static", tmp_path / "s")
    edit_tensors(path, lambda t: t.pop(f"{Q}.input_scale"))
    with pytest.raises(CheckpointError, match=rf"{Q}: input_activations are static .* {Q}\.input_scale is missing"):
        load_quantized(path, "cpu", torch.float32, "torch-ref")
    edit_tensors(path, lambda t: t.update({f"{Q}.input_scale": torch.zeros(1, dtype=torch.bfloat16)}))
    with pytest.raises(CheckpointError, match=rf"{Q}: static input_scale is 0\.0; it must be a positive normal"):
        load_quantized(path, "cpu", torch.float32, "torch-ref")
    edit_tensors(path, lambda t: t.update({f"{Q}.input_scale": torch.ones(3)}))
    with pytest.raises(CheckpointError, match=rf"{Q}: static input_scale of shape \(3,\); per-tensor"):
        load_quantized(path, "cpu", torch.float32, "torch-ref")


def test_a_layer_tensor_no_loader_reads_is_refused(tmp_path):
    path = write_ct("fp8", tmp_path / "d")  # dynamic activations: an input_scale there would be ignored
    edit_tensors(path, lambda t: t.update({f"{Q}.input_scale": torch.ones(1)}))
    with pytest.raises(CheckpointError, match=rf"{Q}: the checkpoint's {Q}\.input_scale would be ignored"):
        load_quantized(path, "cpu", torch.float32, "torch-ref")


# --- GPTQ and AWQ layouts --------------------------------------------------------------------------------


def pack_rows(codes, order=range(8)):
    """(R, 8C) 4-bit codes -> (R, C) int32 words, element order[i] of each eight at bits 4i."""
    r, c = codes.shape[0], codes.shape[1] // 8
    groups = codes.reshape(r, c, 8).to(torch.int64)
    word = torch.zeros(r, c, dtype=torch.int64)
    for i, element in enumerate(order):
        word |= groups[:, :, element] << (4 * i)
    return ((word + 2**31) % 2**32 - 2**31).to(torch.int32)  # the same 32 bits, as a signed int32


def quantized_layers(asym):
    """The embedded model's q/k/v/o/gate/up/down weights as 4-bit group-128 codes, scales and zero points."""
    state = load_file(TINY / "model.safetensors")
    args = PRESETS["W4A16_ASYM" if asym else "W4A16"].weights
    from evalsuite.kernels.w4a16_gemm import unpack_int4

    out = {}
    for name, w in state.items():
        if name.endswith("_proj.weight"):
            qw = quantize_weight(w.float(), args)
            codes = unpack_int4(qw.qdata, w.shape[1])
            zero = qw.zero_point if asym else torch.full_like(qw.scale, 8, dtype=torch.uint8)
            out[name.removesuffix(".weight")] = (codes, qw.scale, zero, None)
    return state, out


def write_gptq_awq(method, path, asym=False):
    state, layers = quantized_layers(asym)
    tensors = {k: v for k, v in state.items() if not k.endswith("_proj.weight")}
    for prefix, (codes, scale, zero, _) in layers.items():
        if method == "gptq":  # qweight (K/8, N) packs along K; qzeros (G, N/8) along N, stored minus one
            tensors[f"{prefix}.qweight"] = pack_rows(codes).t().contiguous()
            tensors[f"{prefix}.qzeros"] = pack_rows(zero.t().to(torch.int64) - 1)
            tensors[f"{prefix}.g_idx"] = torch.arange(codes.shape[1], dtype=torch.int32) // 128
        else:  # AutoAWQ GEMM: qweight (K, N/8) and qzeros (G, N/8) pack along N, interleaved
            tensors[f"{prefix}.qweight"] = pack_rows(codes.t().contiguous(), (0, 2, 4, 6, 1, 3, 5, 7))
            tensors[f"{prefix}.qzeros"] = pack_rows(zero.t().contiguous(), (0, 2, 4, 6, 1, 3, 5, 7))
        tensors[f"{prefix}.scales"] = scale.t().to(torch.float16).contiguous()
    path.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, path / "model.safetensors")
    config = json.loads((TINY / "config.json").read_text())
    config["quantization_config"] = (
        {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False, "sym": not asym}
        if method == "gptq"
        else {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"}
    )
    (path / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TINY / name, path / name)
    return layers


@pytest.mark.parametrize("method, asym", [("gptq", False), ("gptq", True), ("awq", True)])
def test_gptq_and_awq_layouts_keep_their_codes(method, asym, tmp_path):
    layers = write_gptq_awq(method, tmp_path / method, asym)
    model, report = load_quantized(tmp_path / method, "cpu", torch.float32, "torch-ref")
    assert report["quant_method"] == method and len(report["layers"]) == len(layers)
    for prefix, (codes, scale, zero, _) in layers.items():
        ours = model.get_submodule(prefix).dequantize()
        scale16 = scale.to(torch.float16).float()  # those formats store float16 scales
        exact = (codes.float() - zero.float().repeat_interleave(128, 1)) * scale16.repeat_interleave(128, 1)
        torch.testing.assert_close(ours, exact, atol=0, rtol=0)
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=IDS).logits).all()


def test_act_order_gptq_is_refused_clearly(tmp_path):
    write_gptq_awq("gptq", tmp_path / "g")
    tensors = load_file(tmp_path / "g" / "model.safetensors")
    prefix = "model.layers.0.self_attn.q_proj"
    tensors[f"{prefix}.g_idx"] = torch.flip(tensors[f"{prefix}.g_idx"], [0])
    save_file(tensors, tmp_path / "g" / "model.safetensors")
    with pytest.raises(CheckpointError, match="act-order .* not contiguous"):
        load_quantized(tmp_path / "g", "cpu", torch.float32, "torch-ref")


def suite(variants, **run):
    return parse_suite(
        {
            "name": "ckpt",
            "variants": variants,
            "suites": {"academic": {"tasks": ["tiny_mc"], "limit": 8}},
            "run": {"batch_size": 8, "bootstrap_iters": 0, **run},
        }
    )


def test_a_checkpoint_is_a_variant(tmp_path):
    from evalsuite.runner import run_suite

    path = write_ct("w4a16", tmp_path / "ct")
    data = run_suite(suite(["W4A16", {"path": str(path)}]), tmp_path / "run").data
    info = data["variants"]["ct"]
    assert info["algorithm"] == "checkpoint:compressed-tensors" and info["kernels"] == ["w4a16_gemm"]
    assert info["compression_ratio"] > 2
    assert {r["variant"] for r in data["recovery"]} == {"W4A16", "ct"}


def test_a_checkpoint_with_another_tokenizer_is_refused(tmp_path):
    from evalsuite.runner import RunError, run_suite

    path = write_ct("w8a8", tmp_path / "ct")
    tok = json.loads((path / "tokenizer.json").read_text())
    tok["added_tokens"][0]["content"] = "<|other|>"
    (path / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(RunError, match="tokenizer differs from the baseline's"):
        run_suite(suite([{"path": str(path)}]), tmp_path / "run")


@pytest.mark.parametrize("variant", [{"scheme": "W4A16", "algorithm": "gptq"}, "W8A8_FP8"])
def test_export_loads_back_through_compressed_tensors(variant, tmp_path):
    from evalsuite.exporting import export_variant
    from evalsuite.quant_schemes.linear import QuantLinear
    from evalsuite.variants import quantize_variant

    config = suite([variant], calibration={"samples": 4, "seq_len": 64})
    spec = config.variants[0]
    out = export_variant(config, spec.name, tmp_path / "exported")
    loaded = models.load(models.resolve_model("embedded:tiny"), "cpu", "float32")
    quantize_variant(spec, loaded, config, "torch-ref", {})  # the same variant in memory (deterministic)
    layers = {n: m for n, m in loaded.model.named_modules() if isinstance(m, QuantLinear)}
    for prefix, layer in layers.items():
        reference = ct_decompressed(out, prefix)  # the compressed-tensors package's own decompression
        torch.testing.assert_close(reference.float(), layer.dequantize().to(reference.dtype).float(), atol=0, rtol=0)
    back, report = load_quantized(out, "cpu", torch.float32, "torch-ref")
    assert report["quant_method"] == "compressed-tensors" and len(report["layers"]) == len(layers)
    with torch.no_grad():
        torch.testing.assert_close(back(input_ids=IDS).logits, loaded.model(input_ids=IDS).logits, atol=2e-2, rtol=0)
