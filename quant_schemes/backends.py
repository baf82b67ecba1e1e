"""Kernel backends by name: how a layer turns a kernel reference into the function it calls. The name is the
user-facing value (suite files' `run.backend`, results.json, `QuantLinear(..., backend="triton")`); strings
are resolved to backend objects here, at the boundary.

    gemm = get_backend("torch-ref").resolve(Kernel("evalsuite.kernels.int8_gemm", "int8_gemm"))  # int8_gemm_ref

A third backend is any object with `name`, `reference` and `resolve(kernel)`, added with `register_backend`.
Importing this module imports no torch or Triton; `resolve` imports the kernel's module.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import NamedTuple, Protocol


class KernelUnavailableError(RuntimeError):
    pass


class Kernel(NamedTuple):
    module: str  # importable module path, e.g. "evalsuite.kernels.int8_gemm"
    entry: str  # the launcher's name; each backend maps it to the function it runs


class KernelBackend(Protocol):
    name: str
    reference: bool  # the pure-torch definition: fp32 accumulation whatever mode a kernel is asked for

    def resolve(self, kernel: Kernel): ...


@dataclass(frozen=True)
class Backend:
    """Runs the attribute `entry + suffix` of the kernel's module: "triton" the launcher, "torch-ref" the
    reference `<entry>_ref` beside it."""

    name: str
    suffix: str = ""
    reference: bool = False

    def resolve(self, kernel: Kernel):
        attr = kernel.entry + self.suffix
        fn = getattr(importlib.import_module(kernel.module), attr, None)
        if fn is None:
            raise KernelUnavailableError(f"{kernel.module} has no {attr}: backend {self.name!r} cannot run it")
        return fn


BACKENDS: dict[str, KernelBackend] = {}


def register_backend(backend: KernelBackend) -> KernelBackend:
    if backend.name in BACKENDS:
        raise ValueError(f"kernel backend {backend.name!r} is already registered; give the new one another name")
    BACKENDS[backend.name] = backend
    return backend


register_backend(Backend("triton"))
TORCH_REF = register_backend(Backend("torch-ref", suffix="_ref", reference=True))


def get_backend(backend: str | KernelBackend) -> KernelBackend:
    """The registered backend of that name (a backend object is returned as it is)."""
    if not isinstance(backend, str):
        return backend
    if backend not in BACKENDS:
        raise ValueError(f"unknown kernel backend {backend!r}; use one of {', '.join(BACKENDS)}")
    return BACKENDS[backend]
