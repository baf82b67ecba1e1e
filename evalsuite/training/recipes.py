"""Precision recipes for training: what the linear layers' GEMMs quantize, forward and backward, and what the
optimizer stores. Validated, immutable values; presets by canonical name.

    recipe = get_recipe("fp8-smooth")     # Recipe(gemm='fp8', scaling='token', smooth_swiglu=True, ...)
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from evalsuite.errors import UserError


class Recipe(BaseModel):
    """gemm: 'bf16' (operands rounded to bfloat16), 'fp8' (E4M3 forward operands, E5M2 output gradients,
    dynamic scales per token and weight row, or per tensor), 'mxfp4-quartet' (forward: both operands rotated by
    a block Hadamard of 32 and quantized to MXFP4 with an RMS-clipped scale, round to nearest, clipped
    elements pass no gradient; backward: both operands of each gradient GEMM rotated along its inner dimension
    and quantized to MXFP4 with seeded stochastic rounding). smooth_swiglu: divide the SwiGLU product by a
    per-channel power-of-two scale before down_proj's quantization (the scale multiplies down_proj's columns).
    fp8_moments: Adam's first moment stored in E4M3, its second in E5M2, per-tensor scales."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gemm: Literal["bf16", "fp8", "mxfp4-quartet"]
    scaling: Literal["token", "tensor"] | None = None
    smooth_swiglu: bool = False
    fp8_moments: bool = False

    @model_validator(mode="after")
    def _combination(self) -> Recipe:
        if self.gemm == "fp8" and self.scaling is None:
            raise ValueError("an fp8 recipe needs scaling: 'token' (rowwise) or 'tensor'")
        if self.gemm != "fp8" and self.scaling is not None:
            raise ValueError(f"scaling applies to fp8 GEMMs only; leave it out for gemm {self.gemm!r}")
        if self.smooth_swiglu and self.gemm == "bf16":
            raise ValueError("smooth_swiglu guards a low-precision down_proj input; bf16 has none to guard")
        return self

    def describe(self) -> str:
        parts = [self.gemm + (f" ({self.scaling} scales)" if self.scaling else "")]
        if self.smooth_swiglu:
            parts.append("Smooth-SwiGLU")
        if self.fp8_moments:
            parts.append("FP8 Adam moments")
        return " + ".join(parts)


PRESETS: dict[str, Recipe] = {
    "bf16": Recipe(gemm="bf16"),
    "fp8": Recipe(gemm="fp8", scaling="token"),
    "fp8-tensor": Recipe(gemm="fp8", scaling="tensor"),
    "fp8-smooth": Recipe(gemm="fp8", scaling="token", smooth_swiglu=True),
    "fp8-tensor-smooth": Recipe(gemm="fp8", scaling="tensor", smooth_swiglu=True),
    "fp8-smooth-adam8": Recipe(gemm="fp8", scaling="token", smooth_swiglu=True, fp8_moments=True),
    "mxfp4-quartet": Recipe(gemm="mxfp4-quartet"),
}


class UnknownRecipeError(UserError, ValueError):
    pass


def get_recipe(name: str) -> Recipe:
    if name not in PRESETS:
        raise UnknownRecipeError(f"unknown training recipe {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]
