"""Argument checks shared by the launchers: each error names the launcher, the argument and what it expects."""

from __future__ import annotations

import functools
import os

import torch


def interpreting() -> bool:
    """True when Triton runs kernels through its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def nvidia_ptx(device: torch.device) -> bool:
    """True where a kernel may use inline PTX: an NVIDIA GPU (not ROCm, not the interpreter, which runs none)."""
    return not interpreting() and device.type == "cuda" and torch.version.hip is None


def hardware_fp8(device: torch.device) -> bool:
    """True on a GPU with FP8 conversion instructions (NVIDIA sm_89 and later); never under the interpreter,
    whose float8 cast is not faithful (shared/FACTS.md)."""
    return _nvidia_at_least(device, (8, 9))


def fp8_widening(device: torch.device) -> bool:
    """True where a kernel may widen float8_e4m3fn bytes with Triton's cast (`.to(tl.float8e4nv, bitcast=True)
    .to(tl.float32)`): on an FP8-capable GPU (`hardware_fp8`) the conversion instructions, and under the
    interpreter, whose widening is exact for every code but the two NaNs (0x7F and 0xFF come back as +-480,
    as `_bits.e4m3_value` decodes them; a GPU gives NaN). Unlike its narrowing (shared/FACTS.md)."""
    return interpreting() or hardware_fp8(device)


def programmatic_launch(device: torch.device) -> bool:
    """True where a kernel may be launched as a programmatic dependent launch and use `griddepcontrol`: NVIDIA
    sm_90 and later."""
    return _nvidia_at_least(device, (9, 0))


def _nvidia_at_least(device: torch.device, capability: tuple[int, int]) -> bool:
    if not nvidia_ptx(device):
        return False
    return _capability(device.index if device.index is not None else torch.cuda.current_device()) >= capability


@functools.cache
def _capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def num_sms(device: torch.device) -> int:
    """The GPU's SM count, which the launchers size their grids by; 4 off CUDA (the interpreter), so that the
    CPU tests still split work over several programs."""
    if device.type != "cuda":
        return 4
    return torch.cuda.get_device_properties(device).multi_processor_count


def check_device(device: torch.device, who: str) -> None:
    if device.type == "cuda":
        return
    if device.type == "cpu" and interpreting():
        return
    raise ValueError(
        f"{who}: tensors are on {device}; the Triton kernel needs a CUDA device (or TRITON_INTERPRET=1 on CPU). "
        f"The pure-torch reference {who}_ref runs anywhere."
    )


def check_tensor(
    t: object,
    name: str,
    who: str,
    dtypes: tuple[torch.dtype, ...],
    shape: tuple[int | None, ...] | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Check `t` is a tensor of one of `dtypes`, of `shape` (None matches any size) and on `device`."""
    names = " or ".join(str(d).replace("torch.", "") for d in dtypes)
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{who}: {name} must be a {names} tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        raise ValueError(f"{who}: {name} must be {names}, got {str(t.dtype).replace('torch.', '')}")
    if shape is not None:
        ok = t.dim() == len(shape) and all(e is None or e == s for e, s in zip(shape, t.shape, strict=True))
        if not ok:
            want = "(" + ", ".join("*" if e is None else str(e) for e in shape) + ")"
            raise ValueError(f"{who}: {name} must have shape {want}, got {tuple(t.shape)}")
    if device is not None and t.device != device:
        raise ValueError(f"{who}: {name} is on {t.device}, the other operands are on {device}")
    return t


def out_dtype_check(out_dtype: torch.dtype, who: str) -> None:
    if out_dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise ValueError(f"{who}: out_dtype must be torch.bfloat16, torch.float16 or torch.float32, got {out_dtype}")
