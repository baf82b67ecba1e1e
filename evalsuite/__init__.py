"""evalsuite: how much accuracy does a quantized LLM keep?

Loads a baseline model and quantized variants of it, runs them through the same benchmarks, and reports
recovery with confidence intervals. Importing this package is cheap: torch, Triton and lm-eval load lazily.
"""

__version__ = "0.1.0"
