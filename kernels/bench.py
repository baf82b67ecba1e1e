"""Kernel benchmarks at Llama-3.1 8B/70B linear shapes, against torch's own op measured in the same process.

    python -m evalsuite.kernels.bench [--quick] [--out DIR] [--ops int8,fp8,...] [--jobs 8]
    python -m evalsuite.kernels.bench --tune --out DIR      # time candidate tile configs at the target shapes
    python -m evalsuite.kernels.bench --only weight_only_large --out DIR   # fused vs dequant+cuBLAS at large M
    python -m evalsuite.kernels.bench --only decode_attention --out DIR    # the decode step's attention kernel

Each row times our launcher and the torch baseline with `triton.testing.do_bench` (median, L2 flushed between
calls): int8 vs `torch._int_mm` + the scale epilogue in torch; fp8 vs `torch._scaled_mm` with the same scales
and the same accumulation (fp8: fast against use_fast_accum=True; fp8_precise: against its default);
w4a16 and FP4 vs a bf16 `torch.matmul` with the full-precision weight; act_quant's achieved bandwidth vs a
device-to-device copy of the same activations. `ratio` is torch time / our time (higher is better), except for
act_quant, where it is our bandwidth / copy bandwidth. Writes kernels-<gpu>.json and .md to --out.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from .bench_report import fp8_accuracy, line, markdown, target_rows

LLAMA_SHAPES = {  # name: (N, K) of nn.Linear(K, N)
    "8b-qkv": (6144, 4096),
    "8b-o": (4096, 4096),
    "8b-gate_up": (28672, 4096),
    "8b-down": (4096, 14336),
    "70b-qkv": (10240, 8192),
    "70b-o": (8192, 8192),
    "70b-gate_up": (57344, 8192),
    "70b-down": (8192, 28672),
}
M_VALUES = (1, 16, 128, 2048, 8192)
OPS = ("int8", "fp8", "fp8_precise", "fp8_tensor", "fp8_block", "w4a16", "mxfp4", "nvfp4", "act_quant")
QUICK_SHAPES = ("8b-o", "70b-o", "8b-gate_up")
QUICK_M = (1, 16, 2048)
GROUP_SIZE = 128

# Targets: (op, N, K, M) -> minimum ratio.
TARGETS = {
    ("int8", 4096, 4096, 4096): 1.2,
    ("int8", 8192, 8192, 8192): 1.2,
    ("fp8", 4096, 4096, 4096): 1.0,
    ("fp8", 8192, 8192, 8192): 1.0,
    ("fp8_precise", 4096, 4096, 4096): 1.0,
    ("fp8_precise", 8192, 8192, 8192): 1.0,
    ("w4a16", 8192, 8192, 1): 3.0,
    ("w4a16", 8192, 8192, 16): 2.8,
    ("w4a16", 8192, 8192, 2048): 0.8,
    ("w4a16", 8192, 8192, 8192): 0.8,
    ("mxfp4", 8192, 8192, 1): 2.8,
    ("nvfp4", 8192, 8192, 1): 2.8,
    ("w4a16", 28672, 4096, 1): 3.0,  # Llama-3.1-8B gate_up at decode
    ("mxfp4", 28672, 4096, 1): 3.0,
    ("nvfp4", 28672, 4096, 1): 3.0,
    ("act_quant", 0, 4096, 1): 0.85,
    ("act_quant", 0, 4096, 2048): 0.85,
    ("act_quant", 0, 8192, 2048): 0.85,
    ("act_quant", 0, 4096, 8192): 0.85,
    ("act_quant", 0, 8192, 8192): 0.85,
}
DECODE_MAX_M = 64  # rows up to this M report their weight bandwidth against the copy bandwidth


@dataclass
class Row:
    op: str
    shape: str
    m: int
    n: int
    k: int
    ours_us: float
    torch_us: float | None
    ratio: float | None
    rate: float  # TFLOP/s (TOP/s for int8) for GEMMs, GB/s for act_quant and decode GEMMs
    unit: str
    baseline: str
    note: str = ""
    extra: dict = field(default_factory=dict)


def _cases(quick: bool, ops: tuple[str, ...]) -> list[tuple[str, str, int, int, int]]:
    """(op, shape name, M, N, K), grouped by weight shape so each weight is built once."""
    shapes = {name: LLAMA_SHAPES[name] for name in (QUICK_SHAPES if quick else LLAMA_SHAPES)}
    ms = QUICK_M if quick else M_VALUES
    cases = []
    for name, (n, k) in shapes.items():
        for op in ops:
            if op == "act_quant":
                continue
            if op in ("fp8_tensor", "fp8_block") and name not in ("8b-o", "70b-o"):
                continue
            cases += [(op, name, m, n, k) for m in ms]
    for op in ("int8", "fp8", "fp8_precise"):  # the square target shapes
        if op in ops:
            cases += [(op, "square", s, s, s) for s in (4096, 8192)]
    if "act_quant" in ops:
        ks = (4096, 8192) if quick else (4096, 8192, 14336, 28672)
        cases += [("act_quant", f"K={k}", m, 0, k) for k in ks for m in ms]
    return cases


class Inputs:
    """Weights of one (N, K) in every format, built on the GPU once and reused across M."""

    def __init__(self, n: int, k: int, ops: set[str]):
        from . import act_quant, fp4_gemm, w4a16_gemm

        self.n, self.k = n, k
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) / k**0.5
        self.w = w
        if ops & {"int8"}:
            self.w_i8, self.ws_i8 = act_quant.act_quant(w, "int8", "token")
        if ops & {"fp8", "fp8_precise", "fp8_tensor"}:
            self.w_f8, self.ws_f8 = act_quant.act_quant(w, "fp8", "token")
            self.w_f8t, self.ws_f8t = act_quant.act_quant(w, "fp8", "tensor")
        if "fp8_block" in ops:
            self.w_f8b = (torch.randn(n, k, device="cuda") * 100).clamp(-448, 448).to(torch.float8_e4m3fn)
            self.ws_f8b = torch.rand(-(-n // 128), -(-k // 128), device="cuda") / (100 * k**0.5)
        if "w4a16" in ops:
            g = -(-k // GROUP_SIZE)
            codes = torch.randint(0, 16, (n, k), dtype=torch.uint8, device="cuda")
            self.w_i4 = w4a16_gemm.pack_int4(codes)
            self.ws_i4 = torch.rand(n, g, device="cuda") / (8 * k**0.5)
        if "mxfp4" in ops:
            self.w_mx, self.ws_mx = fp4_gemm.mxfp4_quantize(w)
        if "nvfp4" in ops:
            self.w_nv, self.ws_nv, self.gs_nv = fp4_gemm.nvfp4_quantize(w)


def _fns(op: str, m: int, inp: Inputs | None, k: int) -> tuple[Callable, Callable | None, str, float, str]:
    """(ours, baseline, baseline name, work, unit): work in FLOPs (GEMMs) or bytes (act_quant)."""
    from . import act_quant, fp4_gemm, fp8_gemm, int8_gemm, w4a16_gemm

    if op == "act_quant":
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        copy_out = torch.empty_like(x)
        work = m * k * 2 + m * k + m * 4  # read bf16, write int8/fp8 codes and one fp32 scale per token
        return (lambda: act_quant.act_quant(x, "fp8", "token")), (lambda: copy_out.copy_(x)), "copy", work, "GB/s"
    n = inp.n
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    flops = 2.0 * m * n * k
    if op == "int8":
        a_q, a_s = act_quant.act_quant(x, "int8", "token")
        ours = lambda: int8_gemm.int8_gemm(a_q, a_s, inp.w_i8, inp.ws_i8)  # noqa: E731
        b_t, b_s = inp.w_i8.t(), inp.ws_i8.reshape(1, -1)
        theirs = lambda: (torch._int_mm(a_q, b_t).float() * a_s * b_s).to(torch.bfloat16)  # noqa: E731
        theirs.core = lambda: torch._int_mm(a_q, b_t)  # the int32 product alone
        return ours, (theirs if m > 16 else None), "_int_mm+epilogue", flops, "TOP/s"
    if op in ("fp8", "fp8_precise", "fp8_tensor", "fp8_block"):
        gran = {"fp8_tensor": "tensor", "fp8_block": 128}.get(op, "token")
        a_q, a_s = act_quant.act_quant(x, "fp8", gran)
        if op == "fp8_block":
            b, b_s, sa, sb = inp.w_f8b, inp.ws_f8b, a_s, inp.ws_f8b
        elif op == "fp8_tensor":
            b, b_s, sa, sb = inp.w_f8t, inp.ws_f8t, a_s.reshape(()), inp.ws_f8t.reshape(())
        else:
            b, b_s, sa, sb = inp.w_f8, inp.ws_f8, a_s, inp.ws_f8.reshape(1, -1)
        # like for like: fast accumulation against _scaled_mm's fast accumulation, precise (and block scales,
        # which promote every 128 columns in both) against its default
        mode = "precise" if op == "fp8_precise" else "fast"
        fast = op not in ("fp8_precise", "fp8_block")
        ours = lambda: fp8_gemm.fp8_gemm(a_q, a_s, b, b_s, accumulation=mode)  # noqa: E731
        theirs = lambda: torch._scaled_mm(a_q, b.t(), sa, sb, out_dtype=torch.bfloat16, use_fast_accum=fast)  # noqa: E731
        return ours, theirs, "_scaled_mm" + ("(fast_accum)" if fast else ""), flops, "TFLOP/s"
    theirs = lambda: torch.matmul(x, inp.w.t())  # noqa: E731
    if op == "w4a16":
        ours = lambda: w4a16_gemm.w4a16_gemm(x, inp.w_i4, inp.ws_i4, None, GROUP_SIZE)  # noqa: E731
    elif op == "mxfp4":
        ours = lambda: fp4_gemm.fp4_gemm(x, inp.w_mx, inp.ws_mx, "mxfp4")  # noqa: E731
    else:
        ours = lambda: fp4_gemm.fp4_gemm(x, inp.w_nv, inp.ws_nv, "nvfp4", inp.gs_nv)  # noqa: E731
    return ours, theirs, "bf16 matmul", flops, "TFLOP/s"


def time_gpu(fn: Callable, rep: int) -> float:
    """Median GPU time of fn in us. fn is captured once in a CUDA graph and do_bench times the replays, so
    Python launch overhead is out of the numbers while do_bench still flushes L2 before every replay."""
    import triton.testing

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm up (compile, cuBLAS handles) off the capture
        fn()
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return triton.testing.do_bench(graph.replay, warmup=max(5, rep // 4), rep=rep, return_mode="median") * 1e3


def weight_bytes(op: str, n: int, k: int) -> int:
    per = {"w4a16": 0.5 + 4 / GROUP_SIZE, "mxfp4": 0.5 + 1 / 32, "nvfp4": 0.5 + 1 / 16, "int8": 1, "fp8": 1}
    return int(n * k * per.get(op.split("_")[0], 1))


def copy_bandwidth(rep: int) -> float:
    """GB/s of a 1 GiB device-to-device copy by a kernel on the SMs (x * 1 into another buffer), counting bytes
    read plus bytes written. Not `dst.copy_(src)`: captured in a graph, that 1 GiB copy is a memcpy node that
    ran at 2,422 GB/s on an H100 where the kernel, and the same copy_ run eagerly, reached 3,005 and 2,981
    (benchmarks/gemv-ab-h100/timing-probe.json); every decode row's share of copy bandwidth read 24% high."""
    src = torch.randn(2**28, device="cuda")
    dst = torch.empty_like(src)
    us = time_gpu(lambda: torch.mul(src, 1, out=dst), rep)
    return 2 * src.numel() * 4 / us * 1e-3


def run(cases, rep: int, log: Callable[[str], None], copy_gbps: float) -> list[Row]:
    rows: list[Row] = []
    inputs: Inputs | None = None
    ops = {c[0] for c in cases}
    for op, shape, m, n, k in cases:
        if op != "act_quant" and (inputs is None or (inputs.n, inputs.k) != (n, k)):
            inputs = None
            torch.cuda.empty_cache()
            inputs = Inputs(n, k, ops)
        ours, theirs, base, work, unit = _fns(op, m, inputs, k)
        try:
            t_ours = time_gpu(ours, rep)
        except Exception as e:  # noqa: BLE001 - record the failure and keep measuring the other rows
            log(f"{op} {shape} M={m}: FAILED {type(e).__name__}: {str(e).splitlines()[0][:200]}")
            continue
        t_torch, note = None, ""
        if theirs is None:
            note = "baseline n/a (_int_mm needs M > 16)"
        else:
            try:
                t_torch = time_gpu(theirs, rep)
            except Exception as e:  # noqa: BLE001 - torch's op refuses this shape or scaling
                note = f"baseline failed: {type(e).__name__}: {str(e).splitlines()[0][:80]}"
        extra = {}
        core = getattr(theirs, "core", None)
        if core is not None and t_torch is not None and m >= 128:
            try:
                t_core = time_gpu(core, rep)
            except Exception as e:  # noqa: BLE001
                extra["core"] = f"failed: {type(e).__name__}"
            else:
                extra["vs_int_mm_alone"] = round(t_core / t_ours, 3)
        if op == "act_quant":
            rate = work / t_ours * 1e-3  # GB/s
            ratio = None if t_torch is None else rate / (2 * m * k * 2 / t_torch * 1e-3)
        else:
            rate = work / t_ours * 1e-6  # TFLOP/s
            ratio = None if t_torch is None else t_torch / t_ours
        if op != "act_quant" and m <= DECODE_MAX_M:
            extra["weight_GBps"] = round(weight_bytes(op, n, k) / t_ours * 1e-3, 1)
            extra["weight_pct_copy"] = round(100 * weight_bytes(op, n, k) / t_ours * 1e-3 / copy_gbps, 1)
            if t_torch is not None and base == "bf16 matmul":
                extra["bf16_pct_copy"] = round(100 * 2 * n * k / t_torch * 1e-3 / copy_gbps, 1)
        row = Row(op, shape, m, n, k, round(t_ours, 2), None if t_torch is None else round(t_torch, 2),
                  None if ratio is None else round(ratio, 3), round(rate, 1), unit, base, note, extra)  # fmt: skip
        rows.append(row)
        log(line(row))
    return rows


def _device_slug() -> str:
    name = torch.cuda.get_device_name()
    for key in ("H200", "H100", "A100", "L40S", "B200"):
        if key in name:
            return key.lower()
    return name.lower().replace(" ", "-")


def _precompile_worker(cases) -> None:
    """Run each case's launcher once so that its kernels land in Triton's on-disk cache."""
    torch.cuda.init()
    inputs = None
    ops = {c[0] for c in cases}
    for op, _shape, m, n, k in cases:
        if op != "act_quant" and (inputs is None or (inputs.n, inputs.k) != (n, k)):
            inputs = None
            torch.cuda.empty_cache()
            inputs = Inputs(n, k, ops)
        ours, *_ = _fns(op, m, inputs, k)
        try:
            ours()
        except Exception as e:  # noqa: BLE001 - the timing pass reports it
            print(f"precompile {op} M={m} N={n} K={k}: {type(e).__name__}: {str(e)[:300]}", flush=True)
    torch.cuda.synchronize()


def precompile(cases, jobs: int) -> None:
    """Compile in `jobs` processes (compilation is CPU-bound and serial within one process)."""
    if jobs <= 1:
        return
    chunks = [cases[i::jobs] for i in range(jobs)]
    with mp.get_context("spawn").Pool(jobs) as pool:
        pool.map(_precompile_worker, [c for c in chunks if c])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="evalsuite bench kernels", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help=f"shapes {', '.join(QUICK_SHAPES)} and M in {QUICK_M}")
    p.add_argument("--out", default=None, help="directory for kernels-<gpu>.json and .md")
    p.add_argument("--ops", default=",".join(OPS), help=f"comma-separated subset of {', '.join(OPS)}")
    p.add_argument("--rep", type=int, default=100, help="milliseconds of timed repetitions per measurement")
    p.add_argument("--jobs", type=int, default=min(8, os.cpu_count() or 1), help="processes that precompile")
    p.add_argument("--tune", action="store_true", help="time candidate tile configs at the target shapes instead")
    p.add_argument("--render", default=None, help="re-render targets and Markdown from a saved JSON (no GPU)")
    p.add_argument("--only", choices=["weight_only_large", "decode_attention"],
                   help="one study instead of the op table (see its module)")  # fmt: skip
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="--only: cpu needs TRITON_INTERPRET=1")
    p.add_argument("--tiny", action="store_true", help="--only: one tiny shape (a smoke run of the code path)")
    p.add_argument("--formats", default="int4,int8,mxfp4,nvfp4", help="--only weight_only_large: formats to time")
    args = p.parse_args(argv)
    if args.only == "weight_only_large":
        from . import bench_weight_only

        return bench_weight_only.main(args)
    if args.only == "decode_attention":
        from . import bench_decode_attention

        return bench_decode_attention.main(args)
    if args.render:
        with open(args.render) as f:
            saved = json.load(f)
        rows = [Row(**r) for r in saved["rows"]]
        saved["targets"] = target_rows(rows, TARGETS)
        with open(args.render, "w") as f:
            json.dump(saved, f, indent=1)
        with open(args.render.removesuffix(".json") + ".md", "w") as f:
            f.write(markdown(rows, saved["targets"], saved["meta"]["device"], saved["meta"]))
        return 0
    if not torch.cuda.is_available():
        print("bench kernels: needs a CUDA device", file=sys.stderr)
        return 2
    ops = tuple(o for o in args.ops.split(",") if o)
    unknown = [o for o in ops if o not in OPS]
    if unknown:
        print(f"bench kernels: unknown ops {unknown}; choose from {', '.join(OPS)}", file=sys.stderr)
        return 2
    device = torch.cuda.get_device_name()
    print(f"device: {device}, torch {torch.__version__}, triton {__import__('triton').__version__}", flush=True)
    if args.tune:
        from .tune import tune

        rows = tune(args.rep, args.jobs, lambda s: print(s, flush=True))
        kind, accuracy, copy_gbps = "tune", {}, None
    else:
        cases = _cases(args.quick, ops)
        t0 = time.time()
        precompile(cases, args.jobs)
        print(f"precompiled {len(cases)} cases in {time.time() - t0:.0f}s", flush=True)
        copy_gbps = copy_bandwidth(args.rep)
        print(f"device copy: {copy_gbps:.0f} GB/s (read + write)", flush=True)
        rows = [asdict(r) for r in run(cases, args.rep, lambda s: print(s, flush=True), copy_gbps)]
        kind = "kernels"
        accuracy = fp8_accuracy(lambda s: print(s, flush=True)) if any("fp8" in c[0] for c in cases) else {}
    if args.tune:
        targets = []
    else:
        targets = target_rows([Row(**r) for r in rows], TARGETS)
        print("\ntargets:")
        for t in targets:
            print(f"  {t['op']:10s} M={t['M']:<5d} N={t['N']:<6d} K={t['K']:<6d} need {t['target']}x  got "
                  f"{t['ratio']}x  {'met' if t['met'] else 'MISSED'}")  # fmt: skip
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        stem = os.path.join(args.out, f"{kind}-{_device_slug()}")
        meta = {"device": device, "torch": torch.__version__, "triton": __import__("triton").__version__,
                "argv": argv if argv is not None else sys.argv[1:], "rep_ms": args.rep, "fp8_accuracy": accuracy,
                "copy_GBps": None if copy_gbps is None else round(copy_gbps, 1),
                "timing": "CUDA-graph replay of one call, median of triton.testing.do_bench (L2 flushed)"}  # fmt: skip
        with open(stem + ".json", "w") as f:
            json.dump({"meta": meta, "targets": targets, "rows": rows}, f, indent=1)
        if not args.tune:
            with open(stem + ".md", "w") as f:
                f.write(markdown([Row(**r) for r in rows], targets, device, meta))
        print(f"wrote {stem}.json", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
