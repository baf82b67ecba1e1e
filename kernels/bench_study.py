"""What the `bench kernels --only STUDY` modules share: the device check and header line before a study, and
its JSON and Markdown written under --out, named for the study and the device."""

from __future__ import annotations

import json
import os
import sys

import torch


def start(args, who: str) -> str | None:
    """The device's name, after printing it with the versions; None (and why, on stderr) if the study cannot
    run there: CUDA missing, or the CPU without Triton's interpreter."""
    from ._launch import interpreting

    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"{who}: needs a CUDA device (or --device cpu with TRITON_INTERPRET=1)", file=sys.stderr)
        return None
    if args.device == "cpu" and not interpreting():
        print(f"{who} --device cpu: set TRITON_INTERPRET=1 to run the kernels on the CPU", file=sys.stderr)
        return None
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU (Triton interpreter)"
    print(f"device: {name}, torch {torch.__version__}, triton {__import__('triton').__version__}", flush=True)
    return name


def meta(args, device_name: str, **extra) -> dict:
    timing = "CUDA-graph replay, median of do_bench (L2 flushed)" if args.device == "cuda" else "CPU wall clock"
    return {"device": device_name, "torch": torch.__version__, "triton": __import__("triton").__version__,
            "timing": timing, "rep_ms": args.rep, **extra}  # fmt: skip


def write(args, study: str, payload: dict, markdown: str) -> None:
    """<out>/<study>-<device>.json (payload) and .md (markdown)."""
    from .bench import _device_slug

    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"{study}-{'cpu' if args.device == 'cpu' else _device_slug()}")
    with open(stem + ".json", "w") as f:
        json.dump(payload, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(markdown)
    print(f"wrote {stem}.json and .md", flush=True)
