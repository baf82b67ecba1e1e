"""`QuantArgs`: how one tensor (weights, input activations or the KV cache) is quantized.

    >>> QuantArgs(num_bits=4, type="int", strategy="group", group_size=128)
    >>> QuantArgs(num_bits=8, type="float", strategy="token", dynamic=True)      # FP8 E4M3 per token

Immutable, unknown fields rejected, illegal combinations rejected with the legal alternatives in the message.
"""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict, model_validator


class QuantType(str, Enum):
    INT = "int"
    FLOAT = "float"  # FP8 E4M3
    MXFP = "mxfp"  # OCP MX: E2M1 values, E8M0 scale per 32
    NVFP = "nvfp"  # E2M1 values, E4M3 scale per 16, FP32 global scale


class Strategy(str, Enum):
    TENSOR = "tensor"
    CHANNEL = "channel"
    GROUP = "group"
    BLOCK = "block"
    TOKEN = "token"


class Observer(str, Enum):
    MINMAX = "minmax"  # absmax for symmetric, min/max for asymmetric
    MSE = "mse"  # search the clipping ratio that minimises the squared error


class QuantArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)

    num_bits: int = 8
    type: QuantType = QuantType.INT
    symmetric: bool = True
    strategy: Strategy = Strategy.TENSOR
    group_size: int | None = None
    block_structure: tuple[int, int] | None = None
    dynamic: bool = False
    observer: Observer = Observer.MINMAX

    @model_validator(mode="after")
    def _legal(self) -> QuantArgs:
        t, s = self.type, self.strategy
        if t == QuantType.INT and not 2 <= self.num_bits <= 8:
            raise ValueError(f"type 'int' takes num_bits from 2 to 8, not {self.num_bits}")
        if t == QuantType.FLOAT and self.num_bits != 8:
            raise ValueError(f"type 'float' is FP8 E4M3: num_bits must be 8, not {self.num_bits}")
        if t in (QuantType.MXFP, QuantType.NVFP):
            size = 32 if t == QuantType.MXFP else 16
            if self.num_bits != 4 or s != Strategy.GROUP or self.group_size != size or not self.symmetric:
                raise ValueError(
                    f"type '{t.value}' is FP4 E2M1 with one scale per {size} values: write num_bits: 4, "
                    f"strategy: group, group_size: {size}, symmetric: true"
                )
        if not self.symmetric and t != QuantType.INT:
            raise ValueError(f"asymmetric quantization needs type 'int'; type '{t.value}' is symmetric only")
        if s == Strategy.GROUP and (self.group_size is None or self.group_size <= 0):
            raise ValueError("strategy 'group' needs a positive group_size (for example 128)")
        if s != Strategy.GROUP and self.group_size is not None:
            raise ValueError(f"group_size only goes with strategy 'group', not '{s.value}'")
        if s == Strategy.BLOCK and self.block_structure is None:
            raise ValueError("strategy 'block' needs block_structure, for example [128, 128]")
        if s != Strategy.BLOCK and self.block_structure is not None:
            raise ValueError(f"block_structure only goes with strategy 'block', not '{s.value}'")
        if s == Strategy.TOKEN and not self.dynamic:
            raise ValueError("strategy 'token' is computed per input at run time: set dynamic: true")
        return self

    def describe(self) -> str:
        """A short human label, e.g. 'int4 g128 asym' or 'fp8 token dyn'."""
        names = {QuantType.INT: f"int{self.num_bits}", QuantType.FLOAT: "fp8"}
        label = names.get(self.type, self.type.value + "4")
        if self.strategy == Strategy.GROUP:
            label += f" g{self.group_size}"
        elif self.strategy == Strategy.BLOCK:
            label += f" block{self.block_structure[0]}x{self.block_structure[1]}"
        else:
            label += f" {self.strategy.value}"
        if not self.symmetric:
            label += " asym"
        if self.dynamic:
            label += " dyn"
        return label
