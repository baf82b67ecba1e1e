"""Low-precision GEMM, quantize and transform kernels: each module holds a Triton kernel, its launcher and
the pure-torch reference of the same arithmetic (`<name>_ref`). This package imports nothing from the rest
of evalsuite. Importing the package itself is cheap; importing one of its modules imports Triton."""

if __name__ == "kernels":
    # Installed, this folder is `evalsuite.kernels`. Only when Python runs from the repository root
    # (`python -m pytest`, `python -m evalsuite`) is it also reachable as a top-level `kernels`, the name of
    # Hugging Face's package, which transformers imports. Hand that import to the real package.
    import importlib.machinery
    import importlib.util
    import os
    import sys

    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    _path = [p for p in sys.path if os.path.abspath(p or os.curdir) != _root]
    _spec = importlib.machinery.PathFinder.find_spec("kernels", _path)
    if _spec is None:
        raise ImportError(
            f"'kernels' resolved to evalsuite's source folder {_root}/kernels, which is evalsuite.kernels; "
            "Hugging Face's 'kernels' package is not installed (pip install kernels)",
            name="kernels",
        )
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["kernels"] = _module
    _spec.loader.exec_module(_module)
