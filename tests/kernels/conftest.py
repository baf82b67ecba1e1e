"""Kernel tests run on CPU through Triton's interpreter when no CUDA device is present. TRITON_INTERPRET must be
set before a kernel is decorated with @triton.jit, so kernel modules imported earlier (tests/conftest.py
imports the package) are re-imported here, helpers first so that the launchers bind the re-made kernels."""

from __future__ import annotations

import importlib
import os
import sys

import pytest
import torch

if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
    os.environ["TRITON_INTERPRET"] = "1"
    loaded = [name for name in sys.modules if name.startswith("evalsuite.kernels.")]
    for name in sorted(loaded, key=lambda n: (not n.rsplit(".", 1)[-1].startswith("_"), n)):
        importlib.reload(sys.modules[name])


@pytest.fixture(autouse=True)
def _seed():
    from tests.utils import seed_everything

    seed_everything(0)
