"""Calibration sets: named text sets turned into token batches with the model's own tokenizer, the input
that calibrated algorithms (GPTQ, AWQ, SmoothQuant), static KV-cache scales and per-layer sensitivity use.

    data = build_calibration(spec, lm)        # CalibrationData(batches, hash, tokens, description)

A set is a built-in calibration set (tasks/calibration/*.jsonl), a built-in task's JSONL, or any JSONL file
with a "text" field per line. Texts are joined with the end-of-text token and cut into `samples` windows of
`seq_len` tokens; a set that is empty or too small for that is an error, never a silent default.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from evalsuite import hashing
from evalsuite.config import CalibrationSpec
from evalsuite.errors import UserError
from evalsuite.jsonl import read_jsonl
from evalsuite.tasks import ACADEMIC_DIR
from evalsuite.tasks import HERE as TASKS_DIR


class CalibrationError(UserError, ValueError):
    pass


@dataclass
class CalibrationData:
    batches: list[torch.Tensor]  # each (batch, seq_len) token ids
    hash: str
    tokens: int
    description: str


def calibration_file(name: str) -> Path:
    for candidate in (TASKS_DIR / "calibration" / f"{name}.jsonl", ACADEMIC_DIR / f"{name}.jsonl", Path(name)):
        if candidate.is_file():
            return candidate
    builtin = ", ".join(p.stem for p in sorted((TASKS_DIR / "calibration").glob("*.jsonl")))
    raise CalibrationError(f"calibration set {name!r} is neither built in ({builtin}), a built-in task, nor a file")


def _row_text(row: dict) -> str:
    if isinstance(row.get("text"), str):
        return row["text"]
    return " ".join(str(v) for v in row.values() if isinstance(v, (str, int, float)))


def load_texts(name: str) -> list[str]:
    path = calibration_file(name)
    texts = [_row_text(row) for _, row in read_jsonl(path, CalibrationError)]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise CalibrationError(f"calibration set {name!r} ({path}) is empty")
    return texts


def build_calibration(spec: CalibrationSpec, lm) -> CalibrationData:
    """Token batches from a calibration set, tokenized and placed on the device as evaluation does."""
    texts = load_texts(spec.set)
    stream: list[int] = []
    for text in texts:
        stream += lm.tok_encode(text, add_special_tokens=False) + [lm.eot_token_id]
    need = spec.samples * spec.seq_len
    if len(stream) < need:
        raise CalibrationError(
            f"calibration set {spec.set!r} has {len(stream)} tokens; samples x seq_len = {spec.samples} x "
            f"{spec.seq_len} needs {need}: lower them or give more text"
        )
    windows = torch.tensor(stream[:need], device=lm.device).reshape(spec.samples, spec.seq_len)
    batches = list(windows.split(spec.batch_size))
    digest = hashing.digest(spec.model_dump(), stream[:need])
    description = f"{spec.set}: {spec.samples} x {spec.seq_len} tokens"
    return CalibrationData(batches, digest, need, description)
