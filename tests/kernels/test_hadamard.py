import pytest
import torch

from evalsuite.kernels.hadamard import hadamard, hadamard_ref
from tests.kernels.common import DEVICE, GPU
from tests.utils import assert_close

SIZES = [1, 2, 8, 64, 1024] + [pytest.param(n, marks=GPU) for n in (4096, 16384)]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_matches_reference_bit_for_bit(n, dtype):
    """Same butterflies in the same order in fp32, the same division: identical to the CPU reference."""
    x = torch.randn(3, n).to(dtype)
    y = hadamard(x.to(DEVICE))
    assert_close(y.cpu(), hadamard_ref(x), what=f"hadamard n={n}")


def test_orthogonal_and_leading_dims():
    x = torch.randn(2, 5, 256, device=DEVICE)
    y = hadamard(x)
    assert y.shape == x.shape
    assert_close(hadamard(y), x, atol=1e-5, rtol=1e-5, what="H @ H = I")
