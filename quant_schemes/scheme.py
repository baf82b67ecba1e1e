"""`Scheme`: which tensors of which modules are quantized how, plus the presets by canonical name.

>>> scheme = resolve("W4A16")                    # a preset
>>> scheme = resolve("W8A8_FP8+KV_FP8")          # a weight preset combined with a KV-cache preset
>>> scheme.hash                                  # stable; goes into every cache key
>>> scheme.resolved_format()                     # its WeightFormat: named by weight_format, else by weights.type
"""

from __future__ import annotations

import difflib
import re

from pydantic import BaseModel, ConfigDict, model_serializer, model_validator

from evalsuite.hashing import text_digest

from .args import QuantArgs, QuantType, Strategy
from .weight_formats import ONLY_8BIT_PAIRS, WeightFormat, format_for

FLOAT = "float"  # an override that keeps its layers at the baseline's precision


class LayerOverride(BaseModel):
    """Layers quantized differently from the rest of their scheme: `layers` is a module name, its last
    components (`down_proj`) or `re:<regex>`; `scheme` is a weight scheme (a preset name or a dict) or
    `float` (kept at the baseline's precision). The first override that names a layer decides it.

    >>> Scheme(weights=..., overrides=[{"layers": "re:.*down_proj", "scheme": "W8A16"}])
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: str
    scheme: Scheme | None = None  # None: float

    @model_validator(mode="before")
    @classmethod
    def _resolve(cls, data):
        if isinstance(data, dict) and "scheme" in data:
            value = data["scheme"]
            if value is None or value == FLOAT:
                value = None
            elif not isinstance(value, Scheme):
                value = resolve(value)
            data = {**data, "scheme": value}
        return data

    @model_validator(mode="after")
    def _weights_only(self) -> LayerOverride:
        if not self.layers.strip():
            raise ValueError("an override names its layers: a module name, its last components or re:<regex>")
        if self.layers.startswith("re:"):
            try:
                re.compile(self.layers[3:])
            except re.error as err:
                raise ValueError(f"layers {self.layers!r} is not a regular expression: {err}") from None
        s = self.scheme
        if s is not None and (s.weights is None or s.kv_cache is not None or s.overrides):
            raise ValueError(
                "an override's scheme quantizes weights (e.g. W8A16, W8A8_INT8) with no kv_cache and no overrides "
                "of its own; write float to keep the layers at the baseline's precision"
            )
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler) -> dict:
        data = handler(self)
        if self.scheme is None:
            data["scheme"] = FLOAT
        return data


class Scheme(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    weights: QuantArgs | None = None
    input_activations: QuantArgs | None = None
    kv_cache: QuantArgs | None = None
    targets: tuple[str, ...] = ("Linear",)
    ignore: tuple[str, ...] = ("lm_head",)
    weight_format: str | None = None  # a registered WeightFormat; None: the one the weights' type picks
    overrides: tuple[LayerOverride, ...] = ()  # per-layer exceptions, first match wins

    @model_serializer(mode="wrap")
    def _dump(self, handler) -> dict:
        data = handler(self)
        if self.weight_format is None:  # schemes that name no format dump (and hash) as before it existed
            del data["weight_format"]
        if not self.overrides:  # likewise schemes without overrides
            del data["overrides"]
        return data

    @model_validator(mode="after")
    def _legal(self) -> Scheme:
        w, a, kv = self.weights, self.input_activations, self.kv_cache
        if w is None and a is None and kv is None:
            raise ValueError("a scheme quantizes something: set weights, input_activations or kv_cache")
        if w is not None and w.strategy == Strategy.TOKEN:
            raise ValueError("weights cannot use strategy 'token'; use tensor, channel, group or block")
        if w is None:
            if a is not None:
                raise ValueError(ONLY_8BIT_PAIRS)
            if self.weight_format is not None:
                raise ValueError("weight_format names how weights are stored: set weights too, or leave it out")
        else:
            self.resolved_format().check(w, a)
        if self.overrides and w is None:
            raise ValueError("overrides change how weights are quantized: the scheme needs weights too")
        if kv is not None:
            if kv.num_bits != 8 or kv.type not in (QuantType.INT, QuantType.FLOAT):
                raise ValueError("kv_cache is int8 or fp8: write num_bits: 8 and type: int or float")
            if kv.strategy not in (Strategy.TENSOR, Strategy.CHANNEL, Strategy.TOKEN):
                raise ValueError(
                    f"kv_cache uses strategy 'tensor', 'channel' (per head) or 'token', not '{kv.strategy.value}'"
                )
            if kv.dynamic and kv.strategy != Strategy.TOKEN:
                raise ValueError(
                    "dynamic kv_cache scales are per token (strategy: token); per-head and per-tensor ones are static"
                )
        return self

    def resolved_format(self) -> WeightFormat | None:
        """The format the weights are stored in (None without weights)."""
        if self.weights is None:
            return None
        return format_for(self.weights, self.input_activations is not None, self.weight_format)

    @property
    def hash(self) -> str:
        return text_digest(self.model_dump_json())

    def without_overrides(self) -> Scheme:
        return self.model_copy(update={"overrides": ()})

    def describe(self) -> str:
        parts = []
        if self.weights:
            parts.append("W " + self.weights.describe())
        if self.input_activations:
            parts.append("A " + self.input_activations.describe())
        if self.kv_cache:
            parts.append("KV " + self.kv_cache.describe())
        for o in self.overrides:
            parts.append(f"{o.layers}: {'float' if o.scheme is None else o.scheme.describe()}")
        return ", ".join(parts)


def _int(bits: int, strategy: str, **kw) -> QuantArgs:
    return QuantArgs(num_bits=bits, type="int", strategy=strategy, **kw)


def _fp8(strategy: str, **kw) -> QuantArgs:
    return QuantArgs(num_bits=8, type="float", strategy=strategy, **kw)


PRESETS: dict[str, Scheme] = {
    "W8A8_INT8": Scheme(weights=_int(8, "channel"), input_activations=_int(8, "token", dynamic=True)),
    "W8A8_FP8": Scheme(weights=_fp8("channel"), input_activations=_fp8("token", dynamic=True)),
    "W8A8_FP8_TENSOR": Scheme(weights=_fp8("tensor"), input_activations=_fp8("tensor", dynamic=True)),
    "W8A8_FP8_BLOCK": Scheme(
        weights=_fp8("block", block_structure=(128, 128)),
        input_activations=_fp8("group", group_size=128, dynamic=True),
    ),
    "W8A16": Scheme(weights=_int(8, "channel")),
    "W4A16": Scheme(weights=_int(4, "group", group_size=128)),
    "W4A16_ASYM": Scheme(weights=_int(4, "group", group_size=128, symmetric=False)),
    "MXFP4": Scheme(weights=QuantArgs(num_bits=4, type="mxfp", strategy="group", group_size=32)),
    "NVFP4": Scheme(weights=QuantArgs(num_bits=4, type="nvfp", strategy="group", group_size=16)),
    "KV_INT8": Scheme(kv_cache=_int(8, "channel")),
    "KV_FP8": Scheme(kv_cache=_fp8("tensor")),
}


class UnknownSchemeError(ValueError):
    pass


def suggest(name: str, known: list[str]) -> str:
    """' Did you mean X?' for the closest known name, or '' when nothing is close."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    if not close:
        close = difflib.get_close_matches(name.upper(), [k.upper() for k in known], n=1, cutoff=0.5)
        close = [k for k in known if k.upper() in close]
    return f" Did you mean {close[0]!r}?" if close else ""


def preset(name: str) -> Scheme:
    if name not in PRESETS:
        raise UnknownSchemeError(
            f"unknown scheme {name!r}.{suggest(name, list(PRESETS))} Known presets: {', '.join(PRESETS)}"
        )
    return PRESETS[name]


def resolve(spec: str | dict | Scheme) -> Scheme:
    """A Scheme from a preset name, 'A+B' (a weight preset plus a KV-cache preset), a dict or a Scheme."""
    if isinstance(spec, Scheme):
        return spec
    if isinstance(spec, dict):
        return Scheme(**spec)
    parts = [preset(p.strip()) for p in spec.split("+")]
    merged: dict = {}
    for part, name in zip(parts, spec.split("+"), strict=True):
        for field in ("weights", "input_activations", "kv_cache"):
            value = getattr(part, field)
            if value is not None:
                if field in merged:
                    raise UnknownSchemeError(f"scheme {spec!r}: {name.strip()!r} sets {field} a second time")
                merged[field] = value
    return Scheme(**merged)


LayerOverride.model_rebuild()
Scheme.model_rebuild()
