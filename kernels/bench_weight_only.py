"""Where the weight-only GEMM should stop using its fused Triton kernel: at each M, the fused kernel against
dequantize-then-cuBLAS (the path `_weight_only.launch` takes from `DEQUANT_GEMM_MIN_M` on) on the same weights,
with a bf16 matmul of the full-precision weight beside them.

    evalsuite bench kernels --only weight_only_large --out DIR                  # GPU
    TRITON_INTERPRET=1 evalsuite bench kernels --only weight_only_large --device cpu --tiny   # a smoke run

Each format (int4 and int8 codes with groups of 128, MXFP4, NVFP4) at each Llama shape and M is timed as a
CUDA-graph replay (`bench.time_gpu`, L2 flushed); on the CPU (the interpreter, tiny shapes) by wall clock,
which checks the code path and not the speed. `fused / dequant` > 1 means dequantize-then-cuBLAS is faster.
The summary gives, per shape and format, the smallest measured M from which dequantize-then-cuBLAS wins at every
larger measured M, beside the constant in use. Writes weight-only-large-<device>.json and .md to --out.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import torch

FORMATS = ("int4", "int8", "mxfp4", "nvfp4")
SHAPES = {"8b-o": (4096, 4096), "8b-gate_up": (28672, 4096), "70b-o": (8192, 8192)}  # name: (N, K)
M_VALUES = (128, 256, 512, 1024, 4096)  # the 256, 1024 and 4096, and one M each side of the threshold
TINY_SHAPES = {"tiny": (48, 96)}
TINY_M = (24, 300)  # one M each side of DEQUANT_GEMM_MIN_M
GROUP_SIZE = 128


def weights(fmt: str, n: int, k: int, device: str) -> dict:
    """Launch arguments of one (N, K) weight in `fmt`, and the bf16 weight it stands for."""
    from . import _weight_only, fp4_gemm, w4a16_gemm

    w = torch.randn(n, k, device=device) / k**0.5  # (N, K)
    group = min(GROUP_SIZE, k)
    if fmt in ("int4", "int8"):
        bits = 4 if fmt == "int4" else 8
        codes = torch.randint(0, 2**bits, (n, k), dtype=torch.uint8, device=device)
        q = w4a16_gemm.pack_int4(codes) if bits == 4 else codes
        scale = torch.rand(n, -(-k // group), device=device) / (2**bits * k**0.5)
        full = w4a16_gemm.dequantize_wna16(q, scale, None, group, k, bits)
        code = _weight_only.FMT_INT4 if bits == 4 else _weight_only.FMT_INT8
        return {"w": q, "scale": scale, "global_scale": None, "group": group, "fmt": code, "full": full}
    if fmt == "mxfp4":
        q, scale = fp4_gemm.mxfp4_quantize_ref(w)
        gs, code = None, _weight_only.FMT_MXFP4
    else:
        q, scale, gs = fp4_gemm.nvfp4_quantize_ref(w)
        code = _weight_only.FMT_NVFP4
    full = fp4_gemm.dequantize_fp4(q, scale, fmt, k, gs)
    args = {"w": q, "scale": scale.view(torch.uint8), "global_scale": gs, "group": fp4_gemm.GROUP[fmt]}
    return args | {"fmt": code, "full": full}


def paths(x: torch.Tensor, wt: dict) -> tuple[Callable, Callable, Callable]:
    """(fused Triton GEMM, dequantize-then-cuBLAS, bf16 matmul) of x (M, K) with one weight."""
    from . import _weight_only

    (m, k), n = x.shape, wt["w"].shape[0]
    fused = _weight_only.fused_config(m, n, k, wt["group"], wt["fmt"])
    full = wt["full"].to(x.dtype)

    def run(cfg):
        return lambda: _weight_only.launch(x, wt["w"], wt["scale"], None, wt["global_scale"], None, wt["group"],
                                           wt["fmt"], cfg)  # fmt: skip

    return run(fused), run(_weight_only.DEQUANT_CONFIG), lambda: x @ full.t()


def time_cpu(fn: Callable, reps: int = 3) -> float:
    """Median wall time of fn in us (the interpreter: a check of the code path, not of speed)."""
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e6)
    return sorted(times)[len(times) // 2]


def measure(shapes: dict, ms: tuple[int, ...], formats: tuple[str, ...], device: str, rep: int, log) -> list[dict]:
    from . import _weight_only
    from .bench import time_gpu

    timer = (lambda fn: time_gpu(fn, rep)) if device == "cuda" else time_cpu
    rows = []
    for shape, (n, k) in shapes.items():
        for fmt in formats:
            wt = weights(fmt, n, k, device)
            for m in ms:
                x = torch.randn(m, k, device=device).to(torch.bfloat16)
                fused, dequant, dense = paths(x, wt)
                err = (fused().float() - dequant().float()).abs().max().item()
                scale = dense().float().abs().max().item() or 1.0
                t_fused, t_dequant, t_dense = timer(fused), timer(dequant), timer(dense)
                chosen = _weight_only.pick_config(m, n, k, wt["group"], wt["fmt"])
                row = {
                    "format": fmt, "shape": shape, "M": m, "N": n, "K": k,
                    "fused_us": round(t_fused, 2), "dequant_cublas_us": round(t_dequant, 2),
                    "bf16_us": round(t_dense, 2),
                    "fused_over_dequant": round(t_fused / t_dequant, 3),
                    "dispatch": "dequant-cublas" if chosen.dequant_gemm else "triton-gemm",
                    "max_rel_diff": err / scale,
                }  # fmt: skip
                rows.append(row)
                log(
                    f"{fmt:6s} {shape:11s} M={m:<5d} fused {t_fused:10.1f} us  dequant+cuBLAS {t_dequant:10.1f} us  "
                    f"bf16 {t_dense:10.1f} us  fused/dequant {row['fused_over_dequant']:.2f}  "
                    f"dispatch {row['dispatch']}  diff {row['max_rel_diff']:.1e}"
                )
            del wt
            if device == "cuda":
                torch.cuda.empty_cache()
    return rows


def crossover(rows: list[dict]) -> list[dict]:
    """Per (shape, format): the smallest measured M from which dequantize-then-cuBLAS is faster at every larger
    measured M (None: the fused kernel wins at the largest M)."""
    out = []
    for key in dict.fromkeys((r["shape"], r["format"]) for r in rows):
        mine = sorted((r for r in rows if (r["shape"], r["format"]) == key), key=lambda r: r["M"])
        wins = None
        for r in reversed(mine):
            if r["fused_over_dequant"] <= 1.0:
                break
            wins = r["M"]
        out.append({"shape": key[0], "format": key[1], "dequant_wins_from_M": wins})
    return out


def markdown(rows: list[dict], summary: list[dict], meta: dict) -> str:
    lines = [f"# Weight-only GEMM at large M on {meta['device']}", "",
             f"torch {meta['torch']}, triton {meta['triton']}; timing: {meta['timing']}; DEQUANT_GEMM_MIN_M = "
             f"{meta['DEQUANT_GEMM_MIN_M']}", "",
             "| format | shape | M | fused Triton (us) | dequant + cuBLAS (us) | bf16 matmul (us) | fused / dequant | "
             "dispatch today | max rel diff |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['format']} | {r['shape']} | {r['M']} | {r['fused_us']} | {r['dequant_cublas_us']} | {r['bf16_us']} "
            f"| {r['fused_over_dequant']} | {r['dispatch']} | {r['max_rel_diff']:.1e} |"
        )
    lines += ["", "## Where dequantize-then-cuBLAS starts to win", "", "| shape | format | from M |", "|---|---|---|"]
    lines += [f"| {s['shape']} | {s['format']} | {s['dequant_wins_from_M'] or 'never'} |" for s in summary]
    return "\n".join(lines) + "\n"


def main(args) -> int:
    """`evalsuite bench kernels --only weight_only_large`: args carry device, tiny, formats, out, rep."""
    from . import _weight_only, bench_study

    who = "bench kernels --only weight_only_large"
    formats = tuple(f for f in args.formats.split(",") if f)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        print(f"{who}: unknown formats {unknown}; choose from {', '.join(FORMATS)}", file=sys.stderr)
        return 2
    device_name = bench_study.start(args, who)
    if device_name is None:
        return 2
    shapes, ms = (TINY_SHAPES, TINY_M) if args.tiny else (SHAPES, M_VALUES)
    rows = measure(shapes, ms, formats, args.device, args.rep, lambda s: print(s, flush=True))
    summary = crossover(rows)
    for s in summary:
        print(f"{s['shape']:11s} {s['format']:6s} dequant+cuBLAS wins from M={s['dequant_wins_from_M'] or 'never'}")
    print(f"DEQUANT_GEMM_MIN_M = {_weight_only.DEQUANT_GEMM_MIN_M}", flush=True)
    if args.out:
        meta = bench_study.meta(args, device_name, DEQUANT_GEMM_MIN_M=_weight_only.DEQUANT_GEMM_MIN_M)
        payload = {"meta": meta, "crossover": summary, "rows": rows}
        bench_study.write(args, "weight-only-large", payload, markdown(rows, summary, meta))
    return 0
