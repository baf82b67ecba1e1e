"""Tile-config sweep behind `bench kernels --tune`: times candidate configs of each GEMM at the target shapes,
so the shape heuristics in _scaled_gemm.pick_config and _weight_only.pick_config can be set from data."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable

import torch

from ._weight_only import FMT_INT4, FMT_MXFP4, FMT_NVFP4, WeightOnlyConfig, gemv_split_k

W = WeightOnlyConfig
# The decode GEMV (M = 1): rows per program x columns per step x warps, K split by the heuristic (split_k 0:
# about four programs per SM for int4, three for FP4), by a fixed count, or not at all; W loaded one tile
# ahead (the default) or not. num_stages does not matter here: Triton pipelines only loads that feed a tl.dot.
GEMV = (
    [
        W(bn, 1, bk, 0, warps, 2, gemv=True)
        for bn, bk, warps in (
            (128, 256, 4),
            (64, 256, 4),
            (64, 512, 4),
            (32, 256, 1),
            (32, 512, 2),
            (128, 512, 8),
            (256, 256, 8),
            (64, 256, 2),
            (16, 512, 4),
            (128, 128, 4),
            (256, 128, 4),
            (64, 128, 4),
            (128, 128, 8),
            (32, 256, 4),
        )
    ]
    + [
        W(128, 1, 256, 1, 4, 2, gemv=True),
        W(128, 1, 256, 0, 4, 2, gemv=True, prefetch=False),
        W(64, 1, 512, 0, 4, 2, gemv=True, prefetch=False),
        W(64, 1, 256, 0, 2, 2, gemv=True, prefetch=False),
    ]
    + [W(64, 1, 256, split, 4, 2, gemv=True) for split in (2, 3, 4, 6, 8, 12, 16)]
)
TC_DECODE = [W(64, 16, 128, 0, 4, 4)]  # the tensor-core decode tile the heuristic picks at M = 16


def _cases() -> list[tuple]:
    cases = []
    for fmt in (FMT_INT4, FMT_MXFP4, FMT_NVFP4):
        shapes = ((8192, 8192),)
        if fmt == FMT_INT4:  # and Llama-3.1-8B's own: q/o, k/v, gate/up, down
            shapes += ((28672, 4096), (4096, 4096), (1024, 4096), (14336, 4096), (4096, 14336))
        for n, k in shapes:
            cases += [(f"wo{fmt}", 1, n, k, c) for c in GEMV]
    cases += [(f"wo{FMT_INT4}", 16, 8192, 8192, c) for c in TC_DECODE]
    return cases


def _split(cfg: WeightOnlyConfig, kind: str, m: int, n: int, k: int) -> WeightOnlyConfig:
    """split_k 0: the launcher's heuristic for the config's kind (GEMV or tensor-core tile)."""
    if cfg.split_k:
        return cfg
    if cfg.gemv:
        split = gemv_split_k(n, k, cfg.block_n, cfg.block_k, 4 if kind == f"wo{FMT_INT4}" else 3)
    else:
        tiles = -(-n // cfg.block_n) * -(-m // cfg.block_m)
        split = max(1, min(-(-k // cfg.block_k), (4 if m <= 16 else 2) * 132 // tiles))
    return WeightOnlyConfig(**{**cfg.__dict__, "split_k": split})


def _fn(case, cache: dict) -> Callable:
    from . import _weight_only, fp4_gemm, w4a16_gemm

    kind, m, n, k, cfg = case
    key = (kind, n, k)
    if key not in cache:
        cache.clear()
        torch.cuda.empty_cache()
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) / k**0.5
        if kind == f"wo{FMT_INT4}":
            codes = torch.randint(0, 16, (n, k), dtype=torch.uint8, device="cuda")
            cache[key] = (w4a16_gemm.pack_int4(codes), torch.rand(n, k // 128, device="cuda") / 100, None)
        elif kind == f"wo{FMT_MXFP4}":
            cache[key] = (*fp4_gemm.mxfp4_quantize(w), None)
        else:
            p, s, g = fp4_gemm.nvfp4_quantize(w)
            cache[key] = (p, s.view(torch.uint8), g)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    q, s, extra = cache[key]
    fmt = int(kind[2:])
    group = {FMT_INT4: 128, FMT_MXFP4: 32, FMT_NVFP4: 16}[fmt]
    return lambda: _weight_only.launch(x, q, s, None, extra, None, group, fmt, _split(cfg, kind, m, n, k))


def _worker(cases) -> None:
    cache: dict = {}
    for case in cases:
        try:
            _fn(case, cache)()
        except Exception as e:  # noqa: BLE001 - a config that fails to compile is reported by the timing pass
            print(f"precompile failed {case}: {type(e).__name__}: {str(e)[:200]}", flush=True)
    torch.cuda.synchronize()


def tune(rep: int, jobs: int, log: Callable[[str], None]) -> list[dict]:
    from .bench import time_gpu, weight_bytes

    cases = _cases()
    if jobs > 1:
        with mp.get_context("spawn").Pool(jobs) as pool:
            pool.map(_worker, [cases[i::jobs] for i in range(jobs)])
    rows, cache = [], {}
    for case in cases:
        kind, m, n, k, cfg = case
        try:
            us = time_gpu(_fn(case, cache), rep)
        except Exception as e:  # noqa: BLE001 - keep sweeping; the row records why
            us, err = None, f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
        else:
            err = ""
        flops = 2.0 * m * n * k
        op = {f"wo{FMT_INT4}": "w4a16", f"wo{FMT_MXFP4}": "mxfp4", f"wo{FMT_NVFP4}": "nvfp4"}[kind]
        row = {"kind": kind, "M": m, "N": n, "K": k, "config": cfg.__dict__, "us": us, "error": err,
               "tflops": None if us is None else round(flops / us * 1e-6, 1),
               "weight_GBps": None if us is None else round(weight_bytes(op, n, k) / us * 1e-3, 1)}  # fmt: skip
        rows.append(row)
        log(f"{kind:6s} M={m:<5d} N={n:<6d} K={k:<6d} {cfg} -> {us if us is None else round(us, 1)} us "
            f"{row['weight_GBps']} GB/s {err}")  # fmt: skip
    best: dict = {}
    for r in rows:
        key = (r["kind"], r["M"], r["N"], r["K"])
        if r["us"] is not None and (key not in best or r["us"] < best[key]["us"]):
            best[key] = r
    log("\nbest per shape:")
    for key, r in best.items():
        log(f"  {key}: {r['us']:.1f} us {r['config']}")
    return rows
