"""Low-precision GEMM, quantize and transform kernels: each module holds a Triton kernel, its launcher and
the pure-torch reference of the same arithmetic (`<name>_ref`). This package imports nothing from the rest
of evalsuite. Importing the package itself is cheap; importing one of its modules imports Triton."""
