"""evalsuite: how much accuracy does a quantized LLM keep?

Loads a baseline model and quantized variants of it, runs them through the same benchmarks, and reports
recovery with confidence intervals. Importing this package is cheap: torch, Triton and lm-eval load lazily.

    import evalsuite
    results = evalsuite.evaluate("suite.yaml")
    results.to_frame()
    evalsuite.gate(results, 99).exit_code
"""

import os
import sys

__version__ = "0.1.0"
__all__ = ["evaluate", "gate", "load", "Results"]

# pyproject.toml's package-dir: subpackages whose sources are top-level folders of the repository
_TOP_LEVEL_FOLDERS = {f"evalsuite.{name}": name for name in ("kernels", "quant_schemes", "tasks", "reports")}


class _CheckoutFolders:
    """Finds the subpackages above in the source checkout this package was imported from, as setuptools maps
    them. Needed where Python starts in a checkout's root with evalsuite installed from a wheel: the checkout's
    `evalsuite/` comes first on the path and shadows the installed package, and without this its
    `evalsuite.kernels` would not exist. First on `sys.meta_path`, so that an editable install of another
    checkout cannot hand this one's `evalsuite` that checkout's subpackages."""

    def __init__(self, root: str):
        self.root = root

    def find_spec(self, fullname: str, path=None, target=None):
        folder = _TOP_LEVEL_FOLDERS.get(fullname)
        if folder is None:
            return None
        from importlib.util import spec_from_file_location

        location = os.path.join(self.root, folder)
        init = os.path.join(location, "__init__.py")
        return spec_from_file_location(fullname, init, submodule_search_locations=[location])


def _add_checkout_finder() -> None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    in_checkout = os.path.isfile(os.path.join(root, "pyproject.toml")) and all(
        os.path.isfile(os.path.join(root, folder, "__init__.py")) for folder in _TOP_LEVEL_FOLDERS.values()
    )
    if in_checkout and not any(isinstance(f, _CheckoutFolders) for f in sys.meta_path):
        sys.meta_path.insert(0, _CheckoutFolders(root))


_add_checkout_finder()


def __getattr__(name: str):
    if name in __all__:
        from evalsuite import api

        return getattr(api, name)
    raise AttributeError(f"module 'evalsuite' has no attribute {name!r}")
