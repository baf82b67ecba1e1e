"""Kernel backends by name: how a layer turns a kernel reference into the function it calls. The name is the
user-facing value (suite files' `run.backend`, results.json, `QuantLinear(..., backend="triton")`); strings
are resolved to backend objects here, at the boundary.

    gemm = get_backend("torch-ref").resolve(Kernel("evalsuite.kernels.int8_gemm", "int8_gemm"))  # int8_gemm_ref

A third backend is any object with `name`, `reference`, `resolve(kernel)` and `check_device(device_type)`,
added with `register_backend`; a suite file then selects it by name (`run.backend`). Unless it has
`records_paths = True` (its launchers call `evalsuite.kernels.paths.record`), each layer records its calls
under the backend's name.
Importing this module imports no torch or Triton; `resolve` imports the kernel's module.
"""

from __future__ import annotations

import importlib
import os
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

    def check_device(self, device_type: str) -> None:
        """Raise KernelUnavailableError, saying what would fix it, if the kernels cannot run on this device."""


@dataclass(frozen=True)
class Backend:
    """Runs the attribute `entry + suffix` of the kernel's module: "triton" the launcher, "torch-ref" the
    reference `<entry>_ref` beside it."""

    name: str
    suffix: str = ""
    reference: bool = False
    gpu: bool = False  # its kernels need a CUDA device...
    interpreter_env: str | None = None  # ...unless this environment variable is 1 (an interpreter on the CPU)
    records_paths: bool = False  # its launchers record the path each call took (evalsuite.kernels.paths)

    def check_device(self, device_type: str) -> None:
        if not self.gpu or device_type == "cuda":
            return
        if self.interpreter_env and os.environ.get(self.interpreter_env) == "1":
            return
        interpret = f" (or {self.interpreter_env}=1 to interpret its kernels on the CPU)" * bool(self.interpreter_env)
        raise KernelUnavailableError(f"kernel backend {self.name!r} needs a CUDA device{interpret}")

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


register_backend(Backend("triton", gpu=True, interpreter_env="TRITON_INTERPRET", records_paths=True))
TORCH_REF = register_backend(Backend("torch-ref", suffix="_ref", reference=True))


def get_backend(backend: str | KernelBackend) -> KernelBackend:
    """The registered backend of that name (a backend object is returned as it is)."""
    if not isinstance(backend, str):
        return backend
    if backend not in BACKENDS:
        raise ValueError(f"unknown kernel backend {backend!r}; use one of {', '.join(BACKENDS)}")
    return BACKENDS[backend]


def pick_backend(name: str, device_type: str) -> KernelBackend:
    """The backend a run uses: "auto" is Triton on a CUDA device and the torch reference elsewhere; a named
    one must be registered and able to run on the device."""
    if name == "auto":
        return get_backend("triton" if device_type == "cuda" else TORCH_REF.name)
    backend = get_backend(name)
    backend.check_device(device_type)
    return backend
