"""The noise floor: how much a model differs from itself, to read a variant's differences against.

- The baseline at another batch size: academic tasks' answer flips, and the fidelity panel of the baseline
  against itself (numerics of other batch shapes alone).
- A variant on the reference backend (say Triton against the torch reference): its fidelity panel.
"""

from __future__ import annotations

import copy

from evalsuite import recovery
from evalsuite.lm import EvalLM
from evalsuite.suites import fidelity
from evalsuite.suites.base import ModelContext, Suite, SuiteRun


def _of(suites: list[Suite], name: str) -> Suite | None:
    return next((s for s in suites if s.name == name), None)


def baseline(ctx: ModelContext, suites: list[Suite], base: dict[str, SuiteRun]) -> dict:
    """The baseline against itself at another batch size: self-flips per academic task and self-KLD."""
    config, lm = ctx.config, ctx.lm
    other_bs = config.run.noise_floor_batch_size or max(1, config.run.batch_size // 4)
    key = ctx.rekey(other_bs)
    twin = EvalLM(
        lm.model, lm.tokenizer, other_bs, store=ctx.store, model_key=key, label=f"baseline@{other_bs}", shard=lm.shard
    )
    flips = []
    academic = _of(suites, "academic")
    if academic is not None:
        again = academic.evaluate(ModelContext(ctx.name, twin, key, ctx.store, config, main=ctx.main))
        no_bootstrap = recovery.resamples(config.run.seed, "baseline", 0)  # flips only
        for name, result in again.tasks.items():
            _, flip = recovery.task_recovery("academic", result, base["academic"].tasks[name], "baseline", no_bootstrap)
            if flip:
                flips.append(flip)
    panel = _of(suites, "fidelity")
    tokens = {
        name: fidelity.compare(lm, twin, texts, config.run.batch_size, other_bs)
        for name, texts in (panel.sets.items() if panel is not None and ctx.main else [])
    }
    return {
        "batch_size": config.run.batch_size,
        "other_batch_size": other_bs,
        "model_key": key,
        "flips": flips,
        "tokens": tokens,
    }


def backend(model, tokenizer, backend: str, suites: list[Suite], config) -> dict | None:
    """A variant against itself on the reference backend (Triton vs torch reference), unless it runs on it."""
    from evalsuite.quant_schemes.backends import BACKENDS, get_backend
    from evalsuite.quant_schemes.linear import QuantLinear

    panel = _of(suites, "fidelity")
    reference = next((b for b in BACKENDS.values() if b.reference), None)
    if get_backend(backend).reference or reference is None or panel is None:
        return None
    twin = copy.deepcopy(model)
    for module in twin.modules():
        if isinstance(module, QuantLinear):
            module.use_backend(reference)
    a, b = EvalLM(model, tokenizer, config.run.batch_size), EvalLM(twin, tokenizer, config.run.batch_size)
    tokens = {name: fidelity.compare(a, b, texts, panel.spec.batch_size) for name, texts in panel.sets.items()}
    del twin
    return {"backends": [backend, reference.name], "tokens": tokens}
