import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_source_folder_does_not_shadow_hugging_faces_kernels_package():
    """From the repository root, `kernels/` is on sys.path; transformers' `from kernels import ...` must still
    reach Hugging Face's package, and evalsuite.kernels must still be ours."""
    try:
        importlib.metadata.version("kernels")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("Hugging Face's 'kernels' package is not installed, so nothing can be shadowed")
    probe = (
        "import kernels, evalsuite.kernels as ours\n"
        "from kernels import Device\n"
        "print(kernels.__file__)\n"
        "print(ours.__file__)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    theirs, ours = done.stdout.split()
    assert Path(theirs).parent != ROOT / "kernels"
    assert Path(ours).parent == ROOT / "kernels"
