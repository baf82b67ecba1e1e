import pytest

from evalsuite import models


@pytest.fixture(scope="session")
def tiny():
    """The embedded model, loaded once on CPU in float32."""
    return models.load(models.resolve_model("embedded:tiny"), "cpu", "float32")
