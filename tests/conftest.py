import os

import pytest
import torch

from evalsuite import models


def pytest_configure(config):
    """Under pytest-xdist, each worker's torch gets an equal share of the cores: with torch's default (every
    core in every worker) a 2-core machine running two workers oversubscribes its CPUs."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


@pytest.fixture(scope="session")
def tiny():
    """The embedded model, loaded once on CPU in float32."""
    return models.load(models.resolve_model("embedded:tiny"), "cpu", "float32")
