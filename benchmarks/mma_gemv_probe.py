"""The int4 tensor-core decode GEMV (`_int4_mma_gemv`, issue 17) on a GPU: first its outputs against its
pure-torch reference and against the dispatched W4A16 path over a grid of shapes (odd N, several M, group
sizes, zero points, bias, with and without split K), then its time against the dispatched W4A16 call and the
bf16 matmul on the same weights, for a grid of tiles, side by side in one process (CUDA-graph replays with L2
flushed, `bench.time_gpu`). Prints tables and writes mma-gemv.json to the directory given (default $OUT):

    python3 benchmarks/mma_gemv_probe.py [OUT_DIR]
"""

import itertools
import json
import os
import sys

import torch
import triton

from evalsuite.kernels import _int4_mma_gemv as mg
from evalsuite.kernels.bench import copy_bandwidth, time_gpu, weight_bytes
from evalsuite.kernels.w4a16_gemm import dequantize_wna16, pack_int4, w4a16_gemm

SHAPES = {"8b-qkv": (6144, 4096), "8b-o": (4096, 4096), "8b-gate_up": (28672, 4096), "8b-down": (4096, 14336),
          "70b-o": (8192, 8192)}  # fmt: skip
CHECKS = [  # m, n, k, group, zero points, bias
    (1, 4096, 4096, 128, False, False), (3, 1000, 384, 128, True, True), (8, 6144, 4096, 256, True, False),
    (5, 72, 1024, 512, False, True), (1, 28672, 4096, 128, False, False), (2, 4099, 8192, 128, True, False),
    (16, 1000, 1024, 128, True, True), (11, 300, 640, 128, False, False),
]  # fmt: skip
CHECK_CONFIGS = [dict(num_warps=4, reps=1, prefetch=1), dict(num_warps=4, reps=2, prefetch=2),
                 dict(num_warps=8, reps=2, prefetch=1), dict(num_warps=4, reps=4, prefetch=1, splits=1),
                 dict(num_warps=4, reps=2, prefetch=1, splits=3)]  # fmt: skip
TILES = [dict(num_warps=w, reps=1, prefetch=p, chains=c, per_sm=s)
         for w, p, c, s in itertools.product((4, 8), (1, 2), (1, 2), (4, 8))]  # fmt: skip
REP = 60


def weights(n, k, group, zp, device="cuda"):
    codes = torch.randint(0, 16, (n, k), dtype=torch.uint8, device=device)
    scale = (torch.rand(n, k // group, device=device) * 0.02 + 0.001).to(torch.bfloat16)
    z = torch.randint(0, 16, (n, k // group), dtype=torch.uint8, device=device) if zp else None
    return codes, scale, z


def check() -> list:
    rows, bad = [], 0
    print("| M | N | K | group | zp | bias | config | rel. err vs ref | rel. err vs dispatched |")
    print("|---|---|---|---|---|---|---|---|---|")
    for m, n, k, group, zp, has_bias in CHECKS:
        codes, scale, z = weights(n, k, group, zp)
        words = mg.mma_layout_words(codes)
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        bias = torch.randn(n, device="cuda", dtype=torch.bfloat16) if has_bias else None
        ref = mg.mma_gemv_ref(x.float(), words, scale, z, group, bias)
        w_deq = dequantize_wna16(pack_int4(codes), scale, z, group, k)
        assert torch.allclose(ref, x.float() @ w_deq.t() + (0 if bias is None else bias.float()), atol=1e-3)
        disp = w4a16_gemm(x, pack_int4(codes), scale.float(), z, group, bits=4, bias=bias).float()
        norm = ref.abs().max().item()
        for cfg in CHECK_CONFIGS:
            out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
            mg.launch(x, words, scale, z, bias, group, out, **cfg)
            e_ref = (out.float() - ref).abs().max().item() / norm
            e_disp = (out.float() - disp).abs().max().item() / norm
            ok = e_ref < 8e-3
            bad += not ok
            rows.append(dict(m=m, n=n, k=k, group=group, zp=zp, bias=has_bias, cfg=cfg, err_ref=e_ref,
                             err_dispatched=e_disp, ok=ok))  # fmt: skip
            print(f"| {m} | {n} | {k} | {group} | {zp} | {has_bias} | {cfg} | {e_ref:.2e}{'' if ok else ' FAIL'} "
                  f"| {e_disp:.2e} |", flush=True)  # fmt: skip
    print(f"checks: {len(rows) - bad} passed, {bad} failed")
    return rows


def check_layer_calls() -> list:
    """`w4a16_gemm(..., k_order="mma128")`, as a layer holding that order calls it, against the same codes in K
    order: the tensor-core GEMV at M <= 8, gathered x and the K-order kernels above."""
    rows = []
    n, k, group = 3000, 4096, 128
    codes, scale, z = weights(n, k, group, True)
    packed = pack_int4(codes)
    stored = mg.to_mma_order(packed, k)
    for m in (1, 4, 8, 9, 16, 17, 300):
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        want = w4a16_gemm(x, packed, scale.float(), z, group).float()
        got = w4a16_gemm(x, stored, scale.float(), z, group, k_order=mg.K_ORDER).float()
        err = (got - want).abs().max().item() / want.abs().max().item()
        rows.append(dict(m=m, err=err, ok=err < 8e-3))
        print(f"layer call M={m}: rel. err vs K order {err:.2e}{'' if err < 8e-3 else ' FAIL'}")
    return rows


def timing(copy_gbps: float) -> list:
    rows = []
    print("\n| shape | M | bf16 us | dispatched W4A16 us | best mma us (config) | mma vs bf16 | dispatched vs bf16 |"
          " mma % of copy |\n|---|---|---|---|---|---|---|---|")  # fmt: skip
    for shape, (n, k) in SHAPES.items():
        for m in (1, 16):
            rows.append(_time_shape(shape, n, k, m, copy_gbps))
    return rows


def _time_shape(shape: str, n: int, k: int, m: int, copy_gbps: float) -> dict:
    codes, scale, _ = weights(n, k, 128, False)
    words, packed, scale32 = mg.mma_layout_words(codes), pack_int4(codes), scale.float()
    w_bf16 = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
    t_bf16 = time_gpu(lambda: x @ w_bf16.t(), REP)
    t_disp = time_gpu(lambda: w4a16_gemm(x, packed, scale32, None, 128, bits=4), REP)
    per = {}
    for cfg in TILES if m == 1 else [mg.pick(m)]:  # M = 16: the dispatched tile only, for time
        try:
            t = time_gpu(lambda cfg=cfg: mg.launch(x, words, scale, None, None, 128, out, **cfg), REP)
        except Exception as e:  # a tile that does not compile or launch is reported, not fatal
            print(f"  {shape} M={m} {cfg}: {type(e).__name__}: {str(e)[:200]}")
            continue
        per[str(cfg)] = round(t, 2)
    best = min(per, key=per.get)
    kb = weight_bytes("w4a16", n, k) * 1e-3
    row = dict(shape=shape, n=n, k=k, m=m, bf16_us=round(t_bf16, 2), dispatched_us=round(t_disp, 2), mma_us=per,
               best=best, pct_copy=round(100 * kb / per[best] / copy_gbps, 1))  # fmt: skip
    print(f"| {shape} | {m} | {t_bf16:.1f} | {t_disp:.1f} | {per[best]:.1f} ({best}) | {t_bf16 / per[best]:.2f}x | "
          f"{t_bf16 / t_disp:.2f}x | {row['pct_copy']}% |", flush=True)  # fmt: skip
    return row


def main(out_dir: str) -> None:
    torch.manual_seed(0)
    copy_gbps = copy_bandwidth(REP)
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  triton {triton.__version__}  "
          f"copy {copy_gbps:.0f} GB/s")  # fmt: skip
    checks = check() + check_layer_calls()
    rows = timing(copy_gbps)
    meta = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
            "copy_gbps": round(copy_gbps, 1), "rep": REP}  # fmt: skip
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "mma-gemv.json"), "w") as f:
        json.dump({"meta": meta, "checks": checks, "timing": rows}, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("OUT", "."))
