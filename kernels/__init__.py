"""Low-precision GEMM, quantize and transform kernels: each module holds a Triton kernel, its launcher and
the pure-torch reference of the same arithmetic (`<name>_ref`). This package imports nothing from the rest
of evalsuite. Importing the package itself is cheap; importing one of its modules imports Triton."""

if __name__ == "kernels":
    # Installed, this folder is `evalsuite.kernels`. Only when Python runs from the repository root
    # (`python -m pytest`, `python -m evalsuite`) is it also reachable as a top-level `kernels`, the name of
    # Hugging Face's package, which transformers probes for (some versions by importing it). If that package
    # is installed, hand the import to it. If not, stay an empty package without a version: transformers then
    # reads "not available", as on a machine without the repository, and no import can fail because of us.
    import importlib.machinery
    import importlib.util
    import os
    import sys

    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    _path = [p for p in sys.path if os.path.abspath(p or os.curdir) != _root]
    _spec = importlib.machinery.PathFinder.find_spec("kernels", _path)
    if _spec is None:
        __path__ = []  # nothing can be imported from here under this name
    else:
        _module = importlib.util.module_from_spec(_spec)
        sys.modules["kernels"] = _module
        _spec.loader.exec_module(_module)
