"""run.fp8_accumulation: set on every fp8 layer of a variant, recorded in its info and its model key (the two
modes give different numbers on Hopper), refused with the field named when misspelt."""

import pytest
import torch

from evalsuite.config import ConfigError, parse_suite
from evalsuite.quant_schemes.apply import quantize
from evalsuite.quant_schemes.linear import QuantLinear
from evalsuite.quant_schemes.scheme import resolve
from evalsuite.variants import VariantRecord, fp8_accumulation, model_key, set_fp8_accumulation


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.up = torch.nn.Linear(64, 128)
        self.down = torch.nn.Linear(128, 64)


def _source():
    from evalsuite.models import resolve_model

    return resolve_model("embedded:tiny")


@pytest.mark.parametrize("backend", ["triton", "torch-ref"])
def test_the_mode_reaches_every_fp8_layer_and_the_record(backend):
    model = Tiny()
    quantize(model, "W8A8_FP8", backend="torch-ref")
    info = VariantRecord("fp8", backend=backend, scheme_hash="s")
    set_fp8_accumulation(model, info, "precise")
    layers = [m for m in model.modules() if isinstance(m, QuantLinear)]
    assert len(layers) == 2 and all(m.fp8_accumulation == "precise" for m in layers)
    assert info.fp8_accumulation == ("precise" if backend == "triton" else "fp32 (torch reference)")
    assert fp8_accumulation(resolve("W8A8_FP8"), backend, "precise") == info.fp8_accumulation  # predicted alike
    assert "fp8_accumulation=precise" in repr(model)


def test_variants_without_fp8_layers_record_nothing_and_keep_their_key():
    model = Tiny()
    quantize(model, "W4A16", backend="torch-ref")
    info = VariantRecord("w4", backend="triton", scheme_hash="s")
    key = model_key(_source(), info, torch.bfloat16, torch.device("cuda"), 8)
    set_fp8_accumulation(model, info, "precise")
    assert info.fp8_accumulation is None and fp8_accumulation(resolve("W4A16"), "triton", "precise") is None
    assert model_key(_source(), info, torch.bfloat16, torch.device("cuda"), 8) == key


def test_the_two_modes_are_two_model_keys():
    keys = {
        model_key(
            _source(), VariantRecord("fp8", "triton", fp8_accumulation=mode), torch.bfloat16, torch.device("cuda"), 8
        )
        for mode in ("fast", "precise")
    }
    assert len(keys) == 2


def test_a_misspelt_mode_is_refused_in_the_suite_file_and_in_the_layer():
    suite = {"name": "x", "variants": ["W8A8_FP8"], "suites": {"academic": {"tasks": ["tiny_mc"]}}}
    assert parse_suite(suite).run.fp8_accumulation == "fast"
    with pytest.raises(ConfigError, match=r"run\.fp8_accumulation"):
        parse_suite({**suite, "run": {"fp8_accumulation": "exact"}}, "suite.yaml")
    model = Tiny()
    quantize(model, "W8A8_FP8", backend="torch-ref")
    with pytest.raises(ValueError, match="fp8 accumulation 'exact' is not one of fast, precise"):
        model.up.use_fp8_accumulation("exact")
