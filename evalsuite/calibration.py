"""Calibration sets: named text sets turned into token batches with the model's own tokenizer, the input
that calibrated algorithms (GPTQ, AWQ, SmoothQuant), static KV-cache scales and per-layer sensitivity use.

    data = build_calibration(spec, lm)        # CalibrationData(batches, hash, tokens, description)

A set is a built-in calibration set (tasks/calibration/*.jsonl, or `python_reference`), a built-in task's
JSONL, or any JSONL file with a "text" field per line. Texts are joined with the end-of-text token and cut into
`samples` windows of `seq_len` tokens; a set that is empty or too small for that is an error, never a silent
default. Where `chat_template` asks for it (or, left unset, where the tokenizer has a template), each text is
rendered as the assistant's turn of a two-turn chat, as an instruct model sees text when it is served.

`python_reference`, the default for any model but the demo, is the prose of the Python Language Reference and
its library topics as CPython itself ships it (`pydoc_data.topics`, PSF License 2.0; 79 topics, about 465,000
characters, some 110,000 tokens for a Llama-3 tokenizer): general technical English with code, present on
every Python installation, with no download. It is a neutral default, not a domain match: name a set of your
model's own kind of text (`run.calibration: {set: my_texts.jsonl}`) for GPTQ, AWQ and SmoothQuant.
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
    raise CalibrationError(
        f"calibration set {name!r} is neither built in ({builtin}, {PYTHON_REFERENCE}), a built-in task, nor a file"
    )


def _row_text(row: dict) -> str:
    if isinstance(row.get("text"), str):
        return row["text"]
    return " ".join(str(v) for v in row.values() if isinstance(v, (str, int, float)))


PYTHON_REFERENCE = "python_reference"


def python_reference() -> list[str]:
    """The Python Language Reference's topics as CPython ships them (pydoc_data.topics), in topic order."""
    from pydoc_data.topics import topics

    return [topics[name] for name in sorted(topics)]


def load_texts(name: str) -> list[str]:
    if name == PYTHON_REFERENCE:
        return python_reference()
    path = calibration_file(name)
    texts = [_row_text(row) for _, row in read_jsonl(path, CalibrationError)]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise CalibrationError(f"calibration set {name!r} ({path}) is empty")
    return texts


def as_chat(texts: list[str], tokenizer) -> list[str]:
    """Each text as the assistant's answer to a request for it, in the model's chat template."""
    out = []
    for text in texts:
        title = text.strip().splitlines()[0][:80]
        turns = [{"role": "user", "content": f"Explain: {title}"}, {"role": "assistant", "content": text}]
        out.append(tokenizer.apply_chat_template(turns, tokenize=False))
    return out


def build_calibration(spec: CalibrationSpec, lm) -> CalibrationData:
    """Token batches from a calibration set, tokenized and placed on the device as evaluation does."""
    if spec.set is None or spec.samples is None or spec.seq_len is None:
        raise CalibrationError(
            "a calibration spec needs set, samples and seq_len (a suite file fills them from the model's defaults: "
            "evalsuite.config.calibration_defaults)"
        )
    texts = load_texts(spec.set)
    chat = spec.chat_template if spec.chat_template is not None else bool(getattr(lm.tokenizer, "chat_template", None))
    if chat:
        if not getattr(lm.tokenizer, "chat_template", None):
            raise CalibrationError("calibration chat_template: true, but the model's tokenizer has no chat template")
        texts = as_chat(texts, lm.tokenizer)
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
    digest = hashing.digest(spec.model_dump(exclude={"origin", "defaulted"}), stream[:need])
    template = ", chat template" if chat else ""
    description = f"{spec.set}: {spec.samples} x {spec.seq_len} tokens{template}, hash {digest[:8]}; {spec.origin}"
    return CalibrationData(batches, digest, need, description)
