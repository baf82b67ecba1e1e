"""The decode step's attention: our kernel (decode_attention.py, which reads the filled slots) against its
reference compiled by Inductor over the whole cache allocated for the generation (what the graph decoder ran
before: the same operations as its `attend`), at Llama-3.1-8B heads (32 query heads over 8 key/value heads of
128), bf16; the kernel as the graph decoder's step calls it, writing the new key and value (`new_kv`), also
rotating q and the key (`rope`) and also normalizing them first (`qk_norm`, Qwen3), side by side, so what each
costs is measured in one run; and the kernel at each number of splits and keys per step, to set `pick_launch`
from data.

    evalsuite bench kernels --only decode_attention --out DIR                        # GPU
    TRITON_INTERPRET=1 evalsuite bench kernels --only decode_attention --device cpu --tiny   # a smoke run

Every call is timed as a CUDA-graph replay (`bench.time_gpu`, L2 flushed); on the CPU (the interpreter) by
wall clock, which checks the code path and not the speed. Writes decode-attention-<device>.json and .md.
"""

from __future__ import annotations

import time
from functools import partial

import torch

HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128
CASES = ((1, 160, 160), (1, 1200, 1500), (1, 4096, 4096), (4, 1200, 1500), (32, 700, 1024))  # (B, filled, cache)
TINY_CASES = ((1, 40, 70),)
SPLITS = (1, 2, 4, 8, 16, 32)
BLOCKS_L = (32, 64, 128)


def _inputs(batch: int, filled: int, cache: int, device: str, heads=HEADS, kv_heads=KV_HEADS, d=HEAD_DIM):
    q = torch.randn(batch, heads, 1, d, device=device, dtype=torch.bfloat16)
    kv = torch.randn(2, batch, kv_heads, cache, d, device=device, dtype=torch.bfloat16)
    slots = torch.arange(cache, device=device)
    mask = (slots < filled).expand(batch, 1, cache).contiguous()
    last = torch.tensor([filled - 1], device=device)
    return q, kv, mask, last


def _timer(device: str, rep: int):
    if device == "cuda":
        from .bench import time_gpu

        return lambda fn: time_gpu(fn, rep)

    def wall(fn) -> float:
        fn()
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e6

    return wall


def _case(batch: int, filled: int, cache: int, device: str, timer, compiled) -> dict:
    from ._launch import num_sms
    from .decode_attention import decode_attention, decode_attention_ref, pick_launch

    q, kv, mask, last = _inputs(batch, filled, cache, device, *((4, 2, 16) if device != "cuda" else ()))
    scale = q.shape[-1] ** -0.5
    splits, block_l = pick_launch(batch * kv.shape[2], cache, num_sms(q.device), q.shape[-1], q.element_size())
    row = {"batch": batch, "filled": filled, "cache": cache, "block_l": block_l, "default_splits": splits,
           "torch_compiled_us": round(timer(partial(compiled, q, kv, mask, scale)), 2),
           "kernel_us": round(timer(partial(decode_attention, q, kv, mask, scale, last)), 2)}  # fmt: skip
    b, kv_heads, d = batch, kv.shape[2], q.shape[-1]
    new_kv = torch.randn(b, 2, kv_heads, d, device=q.device, dtype=q.dtype)
    angles = torch.rand(b, d // 2, device=q.device) * 20
    angles = torch.cat((angles, angles), dim=-1)
    rope = (angles.cos().to(q.dtype), angles.sin().to(q.dtype))
    norm = (torch.ones(d, device=q.device, dtype=q.dtype), torch.ones(d, device=q.device, dtype=q.dtype), 1e-6)
    step = partial(decode_attention, q, kv.clone(), mask, scale, last, new_kv=new_kv)  # writes its own cache
    row["write_us"] = round(timer(step), 2)
    row["write_rope_us"] = round(timer(partial(step, rope=rope)), 2)
    row["write_rope_norm_us"] = round(timer(partial(step, rope=rope, qk_norm=norm)), 2)
    got = decode_attention(q, kv, mask, scale, last)
    row["max_abs_diff"] = float((got.float() - decode_attention_ref(q, kv, mask, scale).float()).abs().max())
    sweep = {}
    for block_l in BLOCKS_L:
        for splits in SPLITS:
            if splits <= -(-cache // block_l):
                fn = partial(decode_attention, q, kv, mask, scale, last, splits=splits, block_l=block_l)
                sweep[f"{block_l}x{splits}"] = round(timer(fn), 2)
    best = min(sweep, key=sweep.get)
    row.update(sweep_us=sweep, best=best, best_us=sweep[best])
    row["speedup"] = round(row["torch_compiled_us"] / row["kernel_us"], 2)
    return row


def measure(cases, device: str, rep: int, log) -> list[dict]:
    from .decode_attention import decode_attention_ref

    timer = _timer(device, rep)
    compiled = torch.compile(decode_attention_ref, fullgraph=True) if device == "cuda" else decode_attention_ref
    rows = []
    for batch, filled, cache in cases:
        row = _case(batch, filled, cache, device, timer, compiled)
        log(f"B={batch:<3d} filled={filled:<5d} cache={cache:<5d} torch {row['torch_compiled_us']:8.1f} us  kernel "
            f"{row['kernel_us']:7.1f} us ({row['speedup']}x, {row['block_l']}x{row['default_splits']}); writing "
            f"{row['write_us']:.1f}, +RoPE {row['write_rope_us']:.1f}, +q/k norms {row['write_rope_norm_us']:.1f} us  "
            f"best {row['best']} {row['best_us']:.1f} us  max diff {row['max_abs_diff']:.1e}")  # fmt: skip
        rows.append(row)
    return rows


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"# Decode attention, {meta['device']}", "",
             f"torch {meta['torch']}, triton {meta['triton']}; {meta['timing']}; heads {HEADS}/{KV_HEADS} of "
             f"{HEAD_DIM}, bf16. `torch` is the reference compiled by Inductor over the whole cache; the kernel reads "
             "the filled slots. `default` and `best` are keys per step x splits. `writing`: the kernel as the step "
             "calls it, writing the new key and value; `+RoPE` also rotating q and the key; `+norms` also "
             "normalizing them first (Qwen3).", "",
             "| batch | filled | cache | torch compiled (us) | kernel (us) | speedup | writing (us) | +RoPE (us) "
             "| +norms (us) | default | best | best (us) | max abs diff |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['batch']} | {r['filled']} | {r['cache']} | {r['torch_compiled_us']} | {r['kernel_us']} | "
            f"{r['speedup']}x | {r['write_us']} | {r['write_rope_us']} | {r['write_rope_norm_us']} | "
            f"{r['block_l']}x{r['default_splits']} | {r['best']} | {r['best_us']} | "
            f"{r['max_abs_diff']:.1e} |"
        )
    return "\n".join(lines) + "\n"


def main(args) -> int:
    """`evalsuite bench kernels --only decode_attention`: args carry device, tiny, out, rep."""
    from . import bench_study

    device_name = bench_study.start(args, "bench kernels --only decode_attention")
    if device_name is None:
        return 2
    rows = measure(TINY_CASES if args.tiny else CASES, args.device, args.rep, lambda s: print(s, flush=True))
    if args.out:
        meta = bench_study.meta(args, device_name)
        bench_study.write(args, "decode-attention", {"meta": meta, "rows": rows}, markdown(rows, meta))
    return 0
