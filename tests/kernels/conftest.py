"""Kernel tests run on CPU through Triton's interpreter when no CUDA device is present. TRITON_INTERPRET must be
set before any kernel module is decorated, so a kernel module imported earlier (say by a quant_schemes test)
is re-imported here."""

from __future__ import annotations

import importlib
import os
import sys

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
    for name in [n for n in sys.modules if n.startswith("evalsuite.kernels.")]:
        importlib.reload(sys.modules[name])

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ON_GPU = DEVICE == "cuda"

gpu = pytest.mark.skipif(not ON_GPU, reason="needs a CUDA device: larger shapes are too slow for the interpreter")


@pytest.fixture(autouse=True)
def _seed():
    from tests.utils import seed_everything

    seed_everything(0)
