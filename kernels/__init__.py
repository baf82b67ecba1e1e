"""Low-precision GEMM, quantize and transform kernels: each module holds a Triton kernel, its launcher and
the pure-torch reference of the same arithmetic (`<name>_ref`). This package imports nothing from the rest
of evalsuite, and importing it does not import Triton until a kernel is launched."""
