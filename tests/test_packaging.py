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


# Runs first in the subprocess: makes Hugging Face's `kernels` package invisible, as on a machine without it
# (the GPU image of issue 13: transformers 5.17, no such package). Only the lookup that skips the repository
# root is refused, so the source folder itself is still found there.
HIDE_HF_KERNELS = """
import importlib.machinery, os
_find = importlib.machinery.PathFinder.find_spec
_root = {root!r}

def _hidden(name, path=None, target=None):
    if name == "kernels" and path is not None and _root not in [os.path.abspath(p or os.curdir) for p in path]:
        return None
    return _find(name, path, target)

importlib.machinery.PathFinder.find_spec = _hidden

import importlib.metadata
_version = importlib.metadata.version

def _no_kernels_metadata(name):
    if name == "kernels":
        raise importlib.metadata.PackageNotFoundError(name)
    return _version(name)

importlib.metadata.version = _no_kernels_metadata
"""


def test_without_hugging_faces_kernels_the_source_folder_breaks_no_import():
    """From the repository root with no Hugging Face `kernels` package: `import kernels` gives an empty
    package without a version, transformers reads "kernels not available" and builds a model, and
    evalsuite.kernels still holds our kernels."""
    probe = HIDE_HF_KERNELS.format(root=str(ROOT)) + (
        "import kernels\n"
        "assert not hasattr(kernels, '__version__'), kernels.__version__\n"
        "from transformers import LlamaConfig, AutoModelForCausalLM\n"
        "from transformers.utils import import_utils\n"
        "assert not import_utils.is_kernels_available()\n"
        "cfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,\n"
        "                  num_attention_heads=2, num_key_value_heads=2)\n"
        "AutoModelForCausalLM.from_config(cfg)\n"
        "import evalsuite.kernels.act_quant as aq\n"
        "print(aq.__file__)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert Path(done.stdout.split()[-1]).parent == ROOT / "kernels"


def test_outside_the_repository_kernels_is_never_ours(tmp_path):
    """Run from elsewhere, `kernels` is Hugging Face's package or nothing; evalsuite.kernels is ours."""
    probe = (
        "import importlib.util, evalsuite.kernels as ours\n"
        "spec = importlib.util.find_spec('kernels')\n"
        "print(spec.origin if spec else 'absent')\n"
        "print(ours.__file__)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    theirs, ours = done.stdout.split()
    assert theirs == "absent" or Path(theirs).parent != ROOT / "kernels"
    assert Path(ours).parent == ROOT / "kernels"
