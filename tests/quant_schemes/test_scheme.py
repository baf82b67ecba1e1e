import pytest
from pydantic import ValidationError

from evalsuite.quant_schemes import PRESETS, QuantArgs, Scheme, UnknownSchemeError, resolve


def test_every_preset_is_valid_and_hash_is_stable():
    hashes = {name: scheme.hash for name, scheme in PRESETS.items()}
    assert len(set(hashes.values())) == len(hashes), "two presets share a hash"
    for name, scheme in PRESETS.items():
        assert Scheme(**scheme.model_dump()).hash == hashes[name]


def test_presets_match_the_design():
    w8a8 = PRESETS["W8A8_INT8"]
    assert (w8a8.weights.num_bits, w8a8.weights.strategy.value) == (8, "channel")
    assert (w8a8.input_activations.strategy.value, w8a8.input_activations.dynamic) == ("token", True)
    w4 = PRESETS["W4A16"].weights
    assert (w4.num_bits, w4.symmetric, w4.group_size) == (4, True, 128) and PRESETS["W4A16"].input_activations is None
    assert PRESETS["W4A16_ASYM"].weights.symmetric is False
    assert PRESETS["MXFP4"].weights.group_size == 32 and PRESETS["NVFP4"].weights.group_size == 16


def test_unknown_preset_suggests_the_closest():
    with pytest.raises(UnknownSchemeError, match="Did you mean 'W4A16_ASYM'") as err:
        resolve("W4A16_ASM")
    assert "Known presets" in str(err.value)
    with pytest.raises(UnknownSchemeError, match="Did you mean 'W8A8_FP8'"):
        resolve("w8a8_fp8")


def test_combined_scheme():
    scheme = resolve("W4A16+KV_FP8")
    assert scheme.weights == PRESETS["W4A16"].weights and scheme.kv_cache == PRESETS["KV_FP8"].kv_cache
    with pytest.raises(UnknownSchemeError, match="sets weights a second time"):
        resolve("W4A16+W8A16")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_bits": 9, "type": "int"}, "num_bits from 2 to 8"),
        ({"num_bits": 4, "type": "float"}, "num_bits must be 8"),
        ({"type": "mxfp", "num_bits": 4, "strategy": "group", "group_size": 16}, "group_size: 32"),
        ({"strategy": "group"}, "positive group_size"),
        ({"strategy": "channel", "group_size": 128}, "only goes with strategy 'group'"),
        ({"strategy": "token"}, "dynamic: true"),
        ({"type": "float", "symmetric": False}, "symmetric only"),
        ({"strategy": "block"}, "block_structure"),
    ],
)
def test_illegal_args_name_the_legal_values(kwargs, message):
    with pytest.raises(ValidationError, match=message):
        QuantArgs(**kwargs)


def test_unknown_fields_and_mutation_are_rejected():
    with pytest.raises(ValidationError, match="Extra inputs"):
        QuantArgs(bits=4)
    with pytest.raises(ValidationError):
        PRESETS["W4A16"].weights.num_bits = 3


@pytest.mark.parametrize(
    "spec, message",
    [
        ({}, "quantizes something"),
        ({"input_activations": {"strategy": "token", "dynamic": True}}, "only quantized together with weights"),
        (
            {
                "weights": {"num_bits": 4, "strategy": "group", "group_size": 128},
                "input_activations": {"strategy": "token", "dynamic": True},
            },
            "same 8-bit type",
        ),
        ({"weights": {"type": "float", "strategy": "channel"}}, "W8A8_FP8"),
        ({"weights": {"strategy": "block", "block_structure": [128, 128]}}, "for fp8 weights"),
        ({"kv_cache": {"num_bits": 4, "type": "int"}}, "kv_cache is int8 or fp8"),
        ({"weights": {"strategy": "token", "dynamic": True}}, "weights cannot use strategy 'token'"),
        (
            {
                "weights": {"strategy": "channel", "symmetric": False},
                "input_activations": {"strategy": "token", "dynamic": True},
            },
            "must be symmetric: the GEMMs apply no zero point",
        ),
        (
            {
                "weights": {"type": "float", "strategy": "block", "block_structure": [128, 128]},
                "input_activations": {"type": "float", "strategy": "token", "dynamic": True},
            },
            "block-scaled weights are fp8 128x128",
        ),
        (
            {
                "weights": {"strategy": "group", "group_size": 128},
                "input_activations": {"strategy": "token", "dynamic": True},
            },
            "W8A8 weights use strategy 'channel', 'tensor' or \\(fp8\\) 'block', not 'group'",
        ),
        (
            {
                "weights": {"strategy": "channel"},
                "input_activations": {"strategy": "group", "group_size": 64, "dynamic": True},
            },
            "input_activations use strategy 'token' or 'tensor', not 'group'",
        ),
        (
            {"kv_cache": {"strategy": "group", "group_size": 64}},
            "kv_cache uses strategy 'tensor', 'channel' \\(per head\\) or 'token', not 'group'",
        ),
        ({"kv_cache": {"strategy": "channel", "dynamic": True}}, "dynamic kv_cache scales are per token"),
        ({"kv_cache": {"strategy": "tensor", "dynamic": True}}, "dynamic kv_cache scales are per token"),
    ],
)
def test_illegal_schemes_say_what_to_write(spec, message):
    with pytest.raises(ValidationError, match=message):
        Scheme(**spec)
