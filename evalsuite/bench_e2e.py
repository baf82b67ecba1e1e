"""`evalsuite bench e2e`: end-to-end speed and memory of quantized variants on the GPU, at Llama-3.1-8B
shapes with seeded random weights (real weights cannot be downloaded there; speed does not depend on them).

For each variant (bf16 and those quantized through our kernels): prefill tokens/s at batch 1 and 32, decode
tokens/s at batch 1 and 32 (decode steps replayed from a CUDA graph over a static KV cache), weight memory
and peak memory. Prints a table and writes bench-e2e.json and bench-e2e.md, ratios against bf16 measured in
the same process.

    evalsuite bench e2e --out bench/            # on a GPU machine
    evalsuite bench e2e --shape tiny --device cpu --steps 4     # a smoke run anywhere
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from pathlib import Path

import torch

from evalsuite.quant_schemes.backends import pick_backend

SHAPES = {
    "llama-3.1-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        max_position_embeddings=8192,
        rope_theta=500000.0,
    ),
    "tiny": dict(
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=1024,
        max_position_embeddings=2048,
    ),
}
DEFAULT_VARIANTS = ("bf16", "W8A8_INT8", "W8A8_FP8", "W4A16", "NVFP4")


def build_model(shape: str, layers: int | None, device: torch.device, dtype: torch.dtype, seed: int):
    """A Llama-architecture model of the named shape with seeded random weights (std 0.02, as at init)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**{**SHAPES[shape], **({"num_hidden_layers": layers} if layers else {})})
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    return model.eval()


def _time(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of fn() over repeats, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def prefill_rate(model, batch: int, length: int, vocab: int, device, repeats: int) -> float:
    ids = torch.randint(0, vocab, (batch, length), device=device)
    run = lambda: model(input_ids=ids, logits_to_keep=1)  # noqa: E731
    if device.type == "cuda":  # one CUDA graph for the whole forward: launch overhead out of the measurement
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            run()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            run()
        run = graph.replay
    return batch * length / _time(run, device, repeats)


@torch.no_grad()
def decode_rate(model, batch: int, context: int, steps: int, vocab: int, device, repeats: int) -> float:
    from evalsuite.graphs import StaticDecoder

    decoder = StaticDecoder(model, batch, context + steps * (repeats + 2) + 1, graphs=device.type == "cuda")
    contexts = torch.randint(0, vocab, (batch, context)).tolist()
    decoder.prefill(contexts)
    next_ids = torch.randint(0, vocab, (batch,), device=device)

    def run():
        for _ in range(steps):
            decoder.step(next_ids)

    return batch * steps / _time(run, device, repeats)


SPEED_PREFILL, SPEED_CONTEXT, SPEED_STEPS = 256, 64, 16


def measure_speed(model, device: torch.device) -> dict:
    """Prefill and decode tokens/s at batch 1 on random tokens (decode as evaluation decodes: CUDA graphs on
    a GPU), with the same settings for every variant of a run (`run.measure_speed`)."""
    vocab = model.config.vocab_size
    return {
        "prefill_tok_s": prefill_rate(model, 1, SPEED_PREFILL, vocab, device, repeats=3),
        "decode_tok_s": decode_rate(model, 1, SPEED_CONTEXT, SPEED_STEPS, vocab, device, repeats=3),
        "settings": f"batch 1, prefill {SPEED_PREFILL} tokens, decode {SPEED_STEPS} steps after {SPEED_CONTEXT}",
    }


def run_variant(name: str, args, device, dtype) -> dict:
    """Build the seeded model afresh (so no other copy is resident), quantize it, and measure."""
    from evalsuite.models import memory_bytes
    from evalsuite.quant_schemes.apply import quantize

    model = build_model(args.shape, args.layers, device, dtype, args.seed)
    kernels = [] if name == "bf16" else quantize(model, name, backend=args.backend).kernels
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    vocab = model.config.vocab_size
    row = {"variant": name, "kernels": kernels, "weight_bytes": memory_bytes(model)}
    for b in args.batches:
        row[f"prefill_tok_s_b{b}"] = prefill_rate(model, b, args.prefill_len, vocab, device, args.repeats)
        row[f"decode_tok_s_b{b}"] = decode_rate(model, b, args.context, args.steps, vocab, device, args.repeats)
    if device.type == "cuda":
        row["peak_bytes"] = torch.cuda.max_memory_allocated()
    del model
    gc.collect()
    return row


def render(rows: list[dict], batches: list[int], meta: dict) -> str:
    base = rows[0]
    cols = [f"prefill_tok_s_b{b}" for b in batches] + [f"decode_tok_s_b{b}" for b in batches]
    header = ["variant"] + [c.replace("_tok_s_b", " tok/s, batch ") for c in cols] + ["weights", "peak memory"]
    lines = [
        f"GPU: {meta['device']}, {meta['date']}, shape {meta['shape']}; ratios against bf16 in brackets",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for r in rows:
        cells = [r["variant"]] + [f"{r[c]:,.0f} ({r[c] / base[c]:.2f}x)" for c in cols]
        cells.append(f"{r['weight_bytes'] / 2**30:.2f} GiB ({base['weight_bytes'] / r['weight_bytes']:.2f}x smaller)")
        cells.append(f"{r['peak_bytes'] / 2**30:.2f} GiB" if "peak_bytes" in r else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="evalsuite bench e2e", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama-3.1-8b")
    parser.add_argument("--layers", type=int, default=None, help="fewer decoder layers than the shape has")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--prefill-len", type=int, default=512)
    parser.add_argument("--context", type=int, default=128, help="tokens in the cache before decoding")
    parser.add_argument("--steps", type=int, default=32, help="decode steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--backend", default="auto", help="auto or a registered kernel backend")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench-e2e"))
    args = parser.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",")]
    device = torch.device(args.device)
    args.backend = pick_backend(args.backend, device.type).name
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    rows = []
    for name in args.variants.split(","):
        rows.append(run_variant(name, args, device, dtype))
        print(json.dumps({k: (round(v) if isinstance(v, float) else v) for k, v in rows[-1].items()}), flush=True)
    meta = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "date": time.strftime("%Y-%m-%d"),
        "shape": args.shape + (f" ({args.layers} layers)" if args.layers else ""),
        "torch": torch.__version__,
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
    }
    table = render(rows, args.batches, meta)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench-e2e.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, default=str) + "\n")
    (args.out / "bench-e2e.md").write_text(table)
    return 0
