"""`evalsuite export`: quantize the baseline as a suite's variant says and write it as a compressed-tensors
checkpoint that vLLM, transformers and evalsuite itself (as a checkpoint variant) load.

    evalsuite export suite.yaml --variant W4A16-gptq --out exported/
"""

from __future__ import annotations

from pathlib import Path

from evalsuite import models
from evalsuite.config import SuiteConfig
from evalsuite.errors import UserError


class ExportVariantError(UserError, ValueError):
    pass


def export_variant(config: SuiteConfig, variant: str, out_dir: str | Path) -> Path:
    from evalsuite.quant_schemes.export import ExportError, export_compressed_tensors
    from evalsuite.variants import quantize_variant

    spec = next((v for v in config.variants if v.name == variant), None)
    if spec is None:
        names = ", ".join(v.name for v in config.variants)
        raise ExportVariantError(f"suite {config.name!r} has no variant {variant!r}; it has: {names}")
    if spec.path is not None:
        raise ExportVariantError(
            f"variant {variant!r} reads a checkpoint ({spec.path}); export writes variants quantized from the baseline"
        )
    source = models.resolve_model(config.model.path)
    loaded = models.load(source, "cpu", "float32")
    report, _ = quantize_variant(spec, loaded, config, "torch-ref", {})
    try:
        return export_compressed_tensors(
            loaded.model,
            report,
            source.path,
            out_dir,
            dtype=models.DTYPES.get(source.checkpoint_dtype, models.DTYPES["bfloat16"]),
        )
    except ExportError as err:
        raise ExportVariantError(f"variant {variant!r}: {err}") from None
