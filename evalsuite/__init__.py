"""evalsuite: how much accuracy does a quantized LLM keep?

Loads a baseline model and quantized variants of it, runs them through the same benchmarks, and reports
recovery with confidence intervals. Importing this package is cheap: torch, Triton and lm-eval load lazily.

    import evalsuite
    results = evalsuite.evaluate("suite.yaml")
    results.to_frame()
    evalsuite.gate(results, 99).exit_code
"""

__version__ = "0.1.0"
__all__ = ["evaluate", "gate", "load", "Results"]


def __getattr__(name: str):
    if name in __all__:
        from evalsuite import api

        return getattr(api, name)
    raise AttributeError(f"module 'evalsuite' has no attribute {name!r}")
