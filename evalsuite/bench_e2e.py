"""`evalsuite bench e2e`: end-to-end speed and memory of quantized variants on the GPU, at Llama-3.1-8B
shapes with seeded random weights (real weights cannot be downloaded there; speed does not depend on them).

For each variant (bf16 and those quantized through our kernels): prefill tokens/s at each batch size, and
decode tokens/s with each decoder side by side:
  hf     the HF forward over a static cache, each step replayed from a CUDA graph (graphs.StaticDecoder, the
         reference path);
  graph  our own step, its non-GEMM work compiled, the whole step one CUDA graph (decode_graph.GraphDecoder,
         what the harness generates with);
  graph-layer-ops, graph-no-layer-ops
         the same step with the weight-only layers' own RMSNorms and residual adds (decode_graph.LayerOps)
         forced on or off, whatever decode_graph.LAYER_OPS says;
  eager  the same step run eagerly, neither compiled nor captured (the launch and Python overhead it removes).
Each decode figure also shows its share of the weights' roofline (weight bytes x steps/s over the copy
bandwidth measured at the start) and its ratio against bf16 measured in the same process. Prints the tables
and writes bench-e2e.json and bench-e2e.md after every variant (a run cut short keeps what it measured).

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

from evalsuite import kernel_profile
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


DECODERS = ("hf", "graph", "graph-layer-ops", "graph-no-layer-ops", "eager")


def make_decoder(kind: str, model, batch: int, max_len: int):
    """A decoder of the named kind ("auto": the one the harness picks) and the line that says what it ran."""
    from evalsuite.decode_graph import GraphDecoder, pick_decoder
    from evalsuite.graphs import StaticDecoder

    device = next(model.parameters()).device
    if kind == "auto":
        return pick_decoder(model, batch, max_len)
    if kind == "hf":
        graphs = device.type == "cuda"
        path = "HF forward over a static cache" + (", each step a CUDA graph" if graphs else ", eager")
        return StaticDecoder(model, batch, max_len, graphs=graphs), path
    if kind == "graph":
        decoder = GraphDecoder(model, batch, max_len)
    elif kind in ("graph-layer-ops", "graph-no-layer-ops"):  # the step with its LayerOps forced on or off
        decoder = GraphDecoder(model, batch, max_len, layer_ops=kind == "graph-layer-ops")
    else:
        decoder = GraphDecoder(model, batch, max_len, graphs=False, fuse=None)
    return decoder, decoder.describe()


@torch.no_grad()
def decode_rate(
    model, batch: int, context: int, steps: int, vocab: int, device, repeats: int, kind: str = "auto", profile: int = 0
):
    """Decode tokens/s over a cache holding `context` random tokens, what decoded them, and with `profile` > 0
    (CUDA only) `kernel_profile.profile` of that many further steps, else None."""
    extra = profile + 1 if profile else 0
    decoder, path = make_decoder(kind, model, batch, context + steps * (repeats + 1) + extra + 1)
    contexts = torch.randint(0, vocab, (batch, context)).tolist()
    decoder.prefill(contexts)
    next_ids = torch.randint(0, vocab, (batch,), device=device)

    def run():
        for _ in range(steps):
            decoder.step(next_ids)

    seconds = _time(run, device, repeats)
    prof = None
    if profile and device.type == "cuda":
        prof = kernel_profile.profile(lambda: decoder.step(next_ids), profile, wall_s=seconds / steps)
        del prof["result"]
    return batch * steps / seconds, path, prof


def copy_bandwidth(device: torch.device) -> float:
    """Bytes/s of device-to-device copies of 1 GiB (64 MiB on CPU), counting bytes read plus bytes written;
    ten copies per timing, so that the synchronization around it weighs little."""
    src = torch.ones(2**28 if device.type == "cuda" else 2**24, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)

    def copies():
        for _ in range(10):
            dst.copy_(src)

    return 10 * 2 * src.numel() * 4 / _time(copies, device, repeats=5)


SPEED_PREFILL, SPEED_CONTEXT, SPEED_STEPS = 256, 64, 16


def measure_speed(model, device: torch.device) -> dict:
    """Prefill and decode tokens/s at batch 1 on random tokens (decode with the decoder evaluation uses), with
    the same settings for every variant of a run (`run.measure_speed`)."""
    vocab = model.config.vocab_size
    return {
        "prefill_tok_s": prefill_rate(model, 1, SPEED_PREFILL, vocab, device, repeats=3),
        "decode_tok_s": decode_rate(model, 1, SPEED_CONTEXT, SPEED_STEPS, vocab, device, repeats=3)[0],
        "settings": f"batch 1, prefill {SPEED_PREFILL} tokens, decode {SPEED_STEPS} steps after {SPEED_CONTEXT}",
    }


def run_variant(name: str, args, device, dtype) -> dict:
    """Build the seeded model afresh (so no other copy is resident), quantize it, and measure."""
    from evalsuite.models import memory_bytes
    from evalsuite.quant_schemes.apply import quantize

    started = time.perf_counter()
    model = build_model(args.shape, args.layers, device, dtype, args.seed)
    kernels = [] if name == "bf16" else quantize(model, name, backend=args.backend).kernels
    order = {}
    if args.decode_order and name != "bf16":
        from evalsuite.quant_schemes.linear import use_decode_order

        order = {"decode_order": args.decode_order, "decode_order_layers": use_decode_order(model, dtype)}
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    vocab = model.config.vocab_size
    row = {"variant": name, "kernels": kernels, "weight_bytes": memory_bytes(model), "decoders": {}, **order}
    for b in args.batches:
        if not args.no_prefill:
            row[f"prefill_tok_s_b{b}"] = prefill_rate(model, b, args.prefill_len, vocab, device, args.repeats)
        for kind in args.decoders:
            try:
                rate, path, prof = decode_rate(
                    model, b, args.context, args.steps, vocab, device, args.repeats, kind, args.profile
                )
            except Exception as e:  # noqa: BLE001 - recorded in the row and the table; the other decoders still run
                row[f"decode_error_b{b}_{kind}"] = f"{type(e).__name__}: {str(e).strip()[:500]}"
                print(f"{name}, batch {b}, {kind} decoder FAILED: {row[f'decode_error_b{b}_{kind}']}", flush=True)
                continue
            finally:  # the decoder's cache and graph pool go before the next one's
                if device.type == "cuda":
                    gc.collect()
                    torch.cuda.empty_cache()
            row[f"decode_tok_s_b{b}_{kind}"] = rate
            if prof is not None:
                row[f"profile_b{b}_{kind}"] = prof
            row[f"roofline_b{b}_{kind}"] = row["weight_bytes"] * rate / b / args.copy_bytes_s
            row["decoders"][kind] = path
    if device.type == "cuda":
        row["peak_bytes"] = torch.cuda.max_memory_allocated()
    row["seconds"] = round(time.perf_counter() - started, 1)
    del model
    gc.collect()
    return row


def _ratio(row: dict, base: dict | None, key: str) -> str:
    return f" ({row[key] / base[key]:.2f}x)" if base and key in base else ""


def render(rows: list[dict], args, meta: dict) -> str:
    """The decode table (decoders side by side: tok/s with the ratio against bf16, the share of the weights'
    roofline, graph over hf), then prefill and memory."""
    base = next((r for r in rows if r["variant"] == "bf16"), None)
    lines = [
        f"GPU: {meta['device']}, {meta['date']}, shape {meta['shape']}, torch {meta['torch']}; copy bandwidth "
        f"{meta['copy_gb_s']:,.0f} GB/s; ratios against bf16 in brackets; roofline: weight bytes x steps/s over "
        "the copy bandwidth",
        "",
    ]
    for b in args.batches:
        header = ["variant", "weights"]
        for kind in args.decoders:
            header += [f"{kind} tok/s, batch {b}", f"{kind} roofline"]
        if {"hf", "graph"} <= set(args.decoders):
            header.append("graph / hf")
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r in rows:
            label = r["variant"]
            if "decode_order" in r:
                label += f" ({r['decode_order']} order, {r['decode_order_layers']} layers)"
            cells = [label, f"{r['weight_bytes'] / 2**30:.2f} GiB"]
            for kind in args.decoders:
                key = f"decode_tok_s_b{b}_{kind}"
                failed = key not in r
                cells += (
                    ["failed", ""]
                    if failed
                    else [f"{r[key]:,.0f}{_ratio(r, base, key)}", f"{r[f'roofline_b{b}_{kind}']:.0%}"]
                )
            if {"hf", "graph"} <= set(args.decoders):
                graph, hf = r.get(f"decode_tok_s_b{b}_graph"), r.get(f"decode_tok_s_b{b}_hf")
                cells.append(f"{graph / hf:.2f}x" if graph and hf else "")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("Decoders: " + "; ".join(f"{k}: {p}" for k, p in rows[0]["decoders"].items()))
    lines += [
        f"- {r['variant']} {k[len('decode_error_') :]}: {v}"
        for r in rows
        for k, v in r.items()
        if k.startswith("decode_error_")
    ]
    lines.append("")
    header = ["variant"] + ([] if args.no_prefill else [f"prefill tok/s, batch {b}" for b in args.batches])
    lines += ["| " + " | ".join(header + ["weights", "peak memory"]) + " |", "|" + "---|" * (len(header) + 2)]
    for r in rows:
        cells = [r["variant"]]
        if not args.no_prefill:
            cells += [f"{r[k]:,.0f}{_ratio(r, base, k)}" for k in (f"prefill_tok_s_b{b}" for b in args.batches)]
        smaller = f" ({base['weight_bytes'] / r['weight_bytes']:.2f}x smaller)" if base else ""
        cells.append(f"{r['weight_bytes'] / 2**30:.2f} GiB{smaller}")
        cells.append(f"{r['peak_bytes'] / 2**30:.2f} GiB" if "peak_bytes" in r else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_profiles(rows: list[dict], args) -> str:
    """Each profiled decoder's kernel table (`kernel_profile.render`), one section per variant and batch."""
    parts = [
        kernel_profile.render(r[f"profile_b{b}_{kind}"], f"{r['variant']}, batch {b}, {kind} decoder, one step")
        for r in rows
        for b in args.batches
        for kind in args.decoders
        if f"profile_b{b}_{kind}" in r
    ]
    return "\n".join(parts)


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
    parser.add_argument("--decoders", default="hf,graph", help=f"comma-separated, of {', '.join(DECODERS)}")
    parser.add_argument("--no-prefill", action="store_true", help="measure decode only")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--backend", default="auto", help="auto or a registered kernel backend")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="STEPS",
        help="also profile this many decode steps of each decoder (CUDA only): kernel time by kind, the longest "
        "kernels and the GPU's idle share, written to bench-e2e-profile.md",
    )
    parser.add_argument(
        "--decode-order",
        choices=["mma128"],
        default=None,
        help="store each quantized variant's 4-bit integer codes in this kernel's K order where that kernel runs "
        "(mma128: the tensor-core decode GEMV, `quant_schemes.linear.use_decode_order`); the table says how many "
        "layers took it",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-e2e"))
    args = parser.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",")]
    args.decoders = args.decoders.split(",")
    if unknown := sorted(set(args.decoders) - set(DECODERS)):
        parser.error(f"--decoders: unknown {', '.join(unknown)}; known: {', '.join(DECODERS)}")
    device = torch.device(args.device)
    args.backend = pick_backend(args.backend, device.type).name
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    args.copy_bytes_s = copy_bandwidth(device)
    meta = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "date": time.strftime("%Y-%m-%d"),
        "shape": args.shape + (f" ({args.layers} layers)" if args.layers else ""),
        "torch": torch.__version__,
        "copy_gb_s": args.copy_bytes_s / 1e9,
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
    }
    print(f"copy bandwidth {meta['copy_gb_s']:,.0f} GB/s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.variants.split(","):
        rows.append(run_variant(name, args, device, dtype))
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in rows[-1].items()}), flush=True)
        table = render(rows, args, meta)
        (args.out / "bench-e2e.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, default=str) + "\n")
        (args.out / "bench-e2e.md").write_text(table)
        if args.profile:
            (args.out / "bench-e2e-profile.md").write_text(render_profiles(rows, args))
    print(table)
    return 0
