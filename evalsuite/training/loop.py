"""Train (or continue training) a causal LM with a precision recipe on the embedded model's generated text, and
save a Hugging Face checkpoint that a suite file can name as a baseline or a variant.

    settings = TrainSettings(recipe="fp8-smooth", steps=40, base="embedded:tiny")
    result = train(settings, out=Path("runs/fp8-smooth"))     # result.losses, result.stats (per step)

Same settings, same torch version and thread count: the same bytes. The data are the documents of
`evalsuite.reference.corpus` (the evaluation items held out), tokenized with the base model's tokenizer (from
scratch: the embedded model's), packed into rows of seq_len + 1 tokens; every recipe with the same seed sees
the same rows in the same order and starts from the same weights.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evalsuite.errors import UserError

from .recipes import get_recipe

log = logging.getLogger("evalsuite")
SR_SEED_OFFSET = 0x5EED  # the stochastic-rounding stream is seeded apart from the weights' and the data's


class TrainSettings(BaseModel):
    """One training run; `evalsuite train` maps its flags 1:1 to these fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    recipe: str
    steps: int = Field(gt=0)
    base: str | None = None  # a model to continue (a directory or embedded:tiny); None: from scratch
    batch: int = Field(8, gt=0)
    seq_len: int = Field(128, gt=1)
    seed: int = 0
    lr: float = Field(1e-3, gt=0)
    schedule: Literal["cosine", "constant"] = "cosine"  # cosine: linear warmup, then down to 5% of lr
    warmup: int = Field(10, ge=0)
    weight_decay: float = Field(0.05, ge=0)
    clip: float | None = Field(1.0, gt=0)  # None: no gradient clipping
    hidden: int = Field(256, gt=0)  # the sizes of a model trained from scratch (Llama architecture)
    layers: int = Field(4, gt=0)
    intermediate: int = Field(768, gt=0)
    heads: int = Field(4, gt=0)
    device: str = "cpu"  # cpu, cuda or cuda:N
    backend: str | None = (
        None  # torch-ref (emulated GEMMs) or triton (our kernels); None: triton on CUDA, else torch-ref
    )
    threads: int = Field(2, gt=0)
    stats: bool = True  # record the SwiGLU statistics every step (three GPU synchronizations per layer)
    save_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"

    @field_validator("recipe")
    @classmethod
    def _recipe_known(cls, value):
        get_recipe(value)
        return value

    @field_validator("device")
    @classmethod
    def _device_known(cls, value):
        if value != "cpu" and not (value == "cuda" or (value.startswith("cuda:") and value[5:].isdigit())):
            raise ValueError(f"device must be cpu, cuda or cuda:N, got {value!r}")
        if value != "cpu" and not torch.cuda.is_available():
            raise ValueError(f"device {value!r}: torch sees no CUDA device here; use cpu")
        return value

    @model_validator(mode="after")
    def _backend_fits_device(self):
        from evalsuite.kernels._launch import interpreting

        if self.backend is None:
            object.__setattr__(self, "backend", "torch-ref" if self.device == "cpu" else "triton")
        if self.backend not in ("torch-ref", "triton"):
            raise ValueError(f"backend must be 'torch-ref' or 'triton', got {self.backend!r}")
        if self.backend == "triton" and self.device == "cpu" and not interpreting():
            raise ValueError("backend 'triton' on device cpu needs TRITON_INTERPRET=1 (or device cuda)")
        return self


class TrainSettingsError(UserError, ValueError):
    pass


def parse_settings(fields: dict) -> TrainSettings:
    """TrainSettings from user input; a bad field raises one error naming each field and what is wrong."""
    try:
        return TrainSettings(**fields)
    except ValidationError as err:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg'].removeprefix('Value error, ')}"
            for e in err.errors()
        )
        raise TrainSettingsError(f"training settings: {details}") from None


@dataclass
class TrainResult:
    losses: list[float]
    stats: list[dict] = field(default_factory=list)  # per step: SwiGLU statistics per layer
    model: torch.nn.Module | None = None
    optimizer: torch.optim.Optimizer | None = None
    seconds: float = 0.0
    linears: list[str] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)  # wall time of each step (synchronized on CUDA)


class TrainingCutShort(TimeoutError):
    """The deadline passed before the last step; `steps_done` steps ran."""

    def __init__(self, steps_done: int, steps: int):
        super().__init__(f"training stopped at the deadline after {steps_done} of {steps} steps")
        self.steps_done = steps_done


def _tokenizer(settings: TrainSettings):
    from evalsuite import models

    return models.load_tokenizer(models.resolve_model(settings.base or "embedded:tiny"))


def training_rows(tokenizer, n_rows: int, seq_len: int, seed: int) -> torch.Tensor:
    """(n_rows, seq_len + 1) token ids: generated documents, EOS-separated, each row starting at a document."""
    from evalsuite.reference import corpus

    eos = tokenizer.eos_token_id
    docs = corpus.training_documents(seed, corpus.build_eval_sets().held_out())
    rows, row = [], []
    for doc in docs:
        parts = doc if isinstance(doc, tuple) else (doc,)
        row.extend(sum((tokenizer.encode(p, add_special_tokens=False) for p in parts), []) + [eos])
        if len(row) >= seq_len + 1:
            rows.append(row[: seq_len + 1])
            row = []
            if len(rows) == n_rows:
                break
    return torch.tensor(rows, dtype=torch.long)


def _model(settings: TrainSettings, vocab_size: int):
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    from evalsuite import models
    from evalsuite.reference.train import model_config

    if settings.base is not None:
        source = models.resolve_model(settings.base)
        return AutoModelForCausalLM.from_pretrained(source.path, dtype=torch.float32, **models.PLAIN_MODULES)
    if settings.hidden % settings.heads:
        raise ValueError(f"hidden ({settings.hidden}) must be a multiple of heads ({settings.heads})")
    config = model_config(vocab_size)
    config.hidden_size, config.intermediate_size = settings.hidden, settings.intermediate
    config.num_hidden_layers, config.num_attention_heads = settings.layers, settings.heads
    config.num_key_value_heads = settings.heads
    config.max_position_embeddings = max(config.max_position_embeddings, settings.seq_len)
    return LlamaForCausalLM(config)


def _optimizer(model, settings: TrainSettings, recipe, ops):
    from .fp8_adam import FP8AdamW

    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if recipe.fp8_moments:
        return FP8AdamW(groups, lr=settings.lr, betas=(0.9, 0.98), ops=ops)
    return torch.optim.AdamW(groups, lr=settings.lr, betas=(0.9, 0.98))


def train(
    settings: TrainSettings,
    out: Path | None = None,
    log_every: int = 0,
    data: torch.Tensor | None = None,
    deadline: float | None = None,
) -> TrainResult:
    """`data`: (steps x batch, seq_len + 1) token rows already made (default: generated here); `deadline`: a
    time.time() after which a step is not started (raises TrainingCutShort)."""
    from evalsuite.reference.train import lr_at

    from .linear import QuantOps, apply_recipe, restore_linears
    from .swiglu import wrap_mlps

    recipe = get_recipe(settings.recipe)
    ops = QuantOps(settings.backend)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(settings.threads)
    # CUDA runs are seeded but not bit-reproducible (cuBLAS and the embedding backward sum in varying order)
    torch.use_deterministic_algorithms(settings.device == "cpu")
    try:
        tokenizer = _tokenizer(settings)
        need = settings.steps * settings.batch
        if data is None:
            data = training_rows(tokenizer, need, settings.seq_len, settings.seed)
        if len(data) < need or data.shape[1] != settings.seq_len + 1:
            raise ValueError(
                f"the training data hold {tuple(data.shape)} token rows; {need} rows of {settings.seq_len + 1} needed"
            )
        data = data.to(settings.device)
        torch.manual_seed(settings.seed)
        model = _model(settings, len(tokenizer)).float().to(settings.device)
        generator = torch.Generator(device=settings.device).manual_seed(settings.seed + SR_SEED_OFFSET)
        linears = apply_recipe(model, recipe, ops, generator)
        monitors = wrap_mlps(model, smooth=recipe.smooth_swiglu, record=settings.stats)
        opt = _optimizer(model, settings, recipe, ops)
        result = TrainResult(losses=[], model=model, optimizer=opt, linears=linears)
        start = time.time()
        model.train()
        for step in range(settings.steps):
            if deadline is not None and time.time() > deadline:
                raise TrainingCutShort(step, settings.steps)
            step_start = time.time()
            for group in opt.param_groups:
                group["lr"] = settings.lr
                if settings.schedule == "cosine":
                    group["lr"] = lr_at(step, settings.steps, settings.lr, max(1, settings.warmup))
            rows = data[step * settings.batch : (step + 1) * settings.batch]  # (B, T + 1)
            logits = model(input_ids=rows[:, :-1]).logits  # (B, T, V)
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), rows[:, 1:].flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if settings.clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip)
            opt.step()
            result.losses.append(loss.item())  # synchronizes a CUDA device
            result.step_seconds.append(time.time() - step_start)
            if settings.stats:
                result.stats.append(
                    {
                        "step": step,
                        "loss": loss.item(),
                        "product_amax": [m.product_amax for m in monitors],
                        "down_input_amax": [m.down_input_amax for m in monitors],
                        "down_input_ratio": [m.down_input_ratio for m in monitors],
                    }
                )
            if log_every and (step % log_every == 0 or step == settings.steps - 1):
                log.info("%s step %d/%d loss %.4f", settings.recipe, step, settings.steps, loss.item())
        result.seconds = round(time.time() - start, 2)
        model.eval()
        restore_linears(model)
        if out is not None:
            save(result, settings, tokenizer, Path(out))
        return result
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def save(result: TrainResult, settings: TrainSettings, tokenizer, out: Path) -> None:
    """The checkpoint (Smooth-SwiGLU scales folded in), its tokenizer, and training.json."""
    from evalsuite.models import DTYPES

    from .swiglu import unwrap_mlps

    model = result.model
    unwrap_mlps(model)
    out.mkdir(parents=True, exist_ok=True)
    model = model.to(DTYPES[settings.save_dtype])
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    n = min(10, len(result.losses))
    summary = {
        "recipe": settings.recipe,
        "recipe_fields": get_recipe(settings.recipe).model_dump(),
        "description": get_recipe(settings.recipe).describe(),
        "settings": settings.model_dump(),
        "tokens": settings.steps * settings.batch * settings.seq_len,
        "final_loss": sum(result.losses[-n:]) / n,
        "losses": result.losses,
        "product_amax": [s["product_amax"] for s in result.stats],
        "low_precision_linears": len(result.linears),
        "backend": settings.backend,
        "gemms": "our Triton kernels" if settings.backend == "triton" else "emulated (fp32 matmul of quantized values)",
        "seconds": result.seconds,
        "torch": torch.__version__,
    }
    (out / "training.json").write_text(json.dumps(summary, indent=1) + "\n")
