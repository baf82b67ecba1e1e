"""Tile-config sweep behind `bench kernels --tune`: times candidate configs of each GEMM at the target shapes,
so the shape heuristics in _scaled_gemm.pick_config and _weight_only.pick_config can be set from data."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable

import torch

from ._scaled_gemm import GemmConfig
from ._weight_only import FMT_INT4, FMT_MXFP4, FMT_NVFP4, WeightOnlyConfig

SCALED = [
    GemmConfig(128, 256, 128, 8, 8, 3),
    GemmConfig(128, 256, 128, 8, 8, 4),
    GemmConfig(256, 128, 128, 8, 8, 3),
    GemmConfig(128, 128, 128, 8, 8, 4),
    GemmConfig(128, 128, 128, 8, 4, 5),
    GemmConfig(128, 256, 64, 8, 8, 5),
    GemmConfig(256, 128, 64, 8, 8, 5),
    GemmConfig(128, 128, 256, 8, 8, 3),
    GemmConfig(128, 256, 128, 8, 8, 3, persistent=True),
    GemmConfig(128, 256, 128, 8, 8, 4, persistent=True),
    GemmConfig(128, 128, 128, 8, 8, 4, persistent=True),
    GemmConfig(256, 128, 128, 8, 8, 3, persistent=True),
    GemmConfig(128, 256, 64, 8, 8, 5, persistent=True),
]
W = WeightOnlyConfig
DECODE = [  # split_k 0: the heuristic's
    W(64, 16, 128, 0, 4, 4),
    W(64, 16, 128, 0, 4, 6),
    W(32, 16, 128, 0, 4, 4),
    W(128, 16, 128, 0, 4, 4),
    W(128, 16, 128, 0, 8, 4),
    W(64, 16, 64, 0, 4, 6),
    W(64, 16, 128, 0, 4, 4, epilogue_scale=False),
    W(128, 16, 128, 0, 4, 4, epilogue_scale=False),
    W(64, 16, 256, 0, 4, 3, epilogue_scale=False),
]
PREFILL = [
    W(128, 128, 64, 1, 8, 3, swap_ab=False, epilogue_scale=False),
    W(128, 128, 128, 1, 8, 3, swap_ab=False, epilogue_scale=False),
    W(128, 256, 64, 1, 8, 3, swap_ab=False, epilogue_scale=False),
    W(256, 128, 64, 1, 8, 3, swap_ab=False, epilogue_scale=False),
    W(128, 128, 64, 1, 4, 4, swap_ab=False, epilogue_scale=False),
    W(128, 128, 64, 1, 8, 4, swap_ab=False, epilogue_scale=False),
    W(128, 128, 64, 1, 8, 3, swap_ab=True, epilogue_scale=False),
    W(128, 128, 128, 1, 8, 3, swap_ab=False, epilogue_scale=True),
]


def _cases() -> list[tuple]:
    cases = []
    for kind in ("int8", "fp8"):
        for s in (4096, 8192):
            cases += [(kind, s, s, s, c) for c in SCALED]
    for fmt in (FMT_INT4, FMT_MXFP4, FMT_NVFP4):
        for n, k in ((8192, 8192), (4096, 4096), (28672, 4096)) if fmt == FMT_INT4 else ((8192, 8192),):
            for m in (1, 16) if fmt == FMT_INT4 else (1,):
                cases += [(f"wo{fmt}", m, n, k, c) for c in DECODE]
    for m in (2048, 8192):
        cases += [(f"wo{FMT_INT4}", m, 8192, 8192, c) for c in PREFILL]
        cases += [(f"wo{FMT_MXFP4}", m, 8192, 8192, c) for c in PREFILL if not c.epilogue_scale]
    return cases


def _split(cfg: WeightOnlyConfig, n: int, k: int) -> WeightOnlyConfig:
    if cfg.split_k:
        return cfg
    tiles = -(-n // cfg.block_n)
    split = max(1, min(-(-k // cfg.block_k), 4 * 132 // tiles))
    return WeightOnlyConfig(**{**cfg.__dict__, "split_k": split})


def _fn(case, cache: dict) -> Callable:
    from . import _scaled_gemm, _weight_only, act_quant, fp4_gemm, w4a16_gemm

    kind, m, n, k, cfg = case
    key = (kind, n, k)
    if key not in cache:
        cache.clear()
        torch.cuda.empty_cache()
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) / k**0.5
        if kind in ("int8", "fp8"):
            cache[key] = act_quant.act_quant(w, kind, "token")
        elif kind == f"wo{FMT_INT4}":
            codes = torch.randint(0, 16, (n, k), dtype=torch.uint8, device="cuda")
            cache[key] = (w4a16_gemm.pack_int4(codes), torch.rand(n, k // 128, device="cuda") / 100, None)
        elif kind == f"wo{FMT_MXFP4}":
            cache[key] = (*fp4_gemm.mxfp4_quantize(w), None)
        else:
            p, s, g = fp4_gemm.nvfp4_quantize(w)
            cache[key] = (p, s.view(torch.uint8), g)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    if kind in ("int8", "fp8"):
        b, b_s = cache[key]
        a, a_s = act_quant.act_quant(x, kind, "token")
        return lambda: _scaled_gemm.launch(a, a_s, b, b_s, None, torch.bfloat16, "row", cfg)
    q, s, extra = cache[key]
    fmt = int(kind[2:])
    group = {FMT_INT4: 128, FMT_MXFP4: 32, FMT_NVFP4: 16}[fmt]
    return lambda: _weight_only.launch(x, q, s, None, extra, None, group, fmt, _split(cfg, n, k))


def _worker(cases) -> None:
    cache: dict = {}
    for case in cases:
        try:
            _fn(case, cache)()
        except Exception as e:  # noqa: BLE001 - a config that fails to compile is reported by the timing pass
            print(f"precompile failed {case}: {type(e).__name__}: {str(e)[:200]}", flush=True)
    torch.cuda.synchronize()


def tune(rep: int, jobs: int, log: Callable[[str], None]) -> list[dict]:
    import triton.testing

    cases = _cases()
    if jobs > 1:
        with mp.get_context("spawn").Pool(jobs) as pool:
            pool.map(_worker, [cases[i::jobs] for i in range(jobs)])
    rows, cache = [], {}
    for case in cases:
        kind, m, n, k, cfg = case
        try:
            us = triton.testing.do_bench(_fn(case, cache), warmup=10, rep=rep, return_mode="median") * 1e3
        except Exception as e:  # noqa: BLE001 - keep sweeping; the row records why
            us, err = None, f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
        else:
            err = ""
        flops = 2.0 * m * n * k
        row = {"kind": kind, "M": m, "N": n, "K": k, "config": cfg.__dict__, "us": us, "error": err,
               "tflops": None if us is None else round(flops / us * 1e-6, 1)}  # fmt: skip
        rows.append(row)
        log(f"{kind:6s} M={m:<5d} N={n:<6d} K={k:<6d} {cfg} -> {us if us is None else round(us, 1)} us "
            f"{row['tflops']} T {err}")  # fmt: skip
    best: dict = {}
    for r in rows:
        key = (r["kind"], r["M"], r["N"], r["K"])
        if r["us"] is not None and (key not in best or r["us"] < best[key]["us"]):
            best[key] = r
    log("\nbest per shape:")
    for key, r in best.items():
        log(f"  {key}: {r['us']:.1f} us {r['config']}")
    return rows
