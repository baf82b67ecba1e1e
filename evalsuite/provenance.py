"""Where a result came from: versions, git commit, device, dtype, seeds, batch size, chat template, command."""

from __future__ import annotations

import datetime
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

from evalsuite.hashing import text_digest

PACKAGES = ("evalsuite", "torch", "triton", "transformers", "lm_eval", "accelerate", "numpy")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name.replace("_", "-"))
    except metadata.PackageNotFoundError:
        return None


def git_sha() -> str | None:
    """The commit of the evalsuite checkout this code runs from, with '+dirty' for uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        return None  # installed from a wheel: no checkout, whatever repository the environment sits in
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def chat_template_hash(tokenizer) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return None
    return text_digest(str(template))


def collect(device: torch.device, dtype: torch.dtype, tokenizer, run: dict, command: list[str] | None) -> dict:
    return {
        "versions": {name: _version(name) for name in PACKAGES},
        "python": platform.python_version(),
        "git_sha": git_sha(),
        "device": device_name(device),
        "dtype": str(dtype).removeprefix("torch."),
        "chat_template_hash": chat_template_hash(tokenizer),
        "special_token_ids": {
            name: getattr(tokenizer, f"{name}_token_id", None) for name in ("bos", "eos", "pad", "unk")
        },
        "command": command if command is not None else sys.argv,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **run,
    }
