"""The kernels' NVIDIA-only code paths compiled for an H100 (sm_90) on any machine: Triton lowers a kernel to PTX
and assembles it with the ptxas it ships, no GPU needed. CI runs the kernels on Triton's interpreter, which
neither compiles anything nor takes the branches that only NVIDIA GPUs take (inline PTX: the weight-only
GEMV's `lop3` and fp16-pair E2M1 decode, the W8A8 GEMV's `dp4a`; act_quant's hardware FP8 conversion; the
tensor-core products of the decode attention, the weight-only GEMM and the int8 and fp8 GEMMs), so a kernel
that would not compile on a GPU would pass CI unseen.
The compiles run in a subprocess: the kernel tests switch the interpreter on for their whole process."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

SCRIPT = r"""
import json, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from evalsuite.kernels import _scaled_gemm, _weight_only, _weight_only_gemv, act_quant, decode_attention, w8a8_gemv

def compile(fn, types, consts, warps=4):
    sig = {p.name: ("constexpr" if p.is_constexpr else types.get(p.name, "i32")) for p in fn.params}
    missing = [p.name for p in fn.params if p.is_constexpr and p.name not in consts]
    assert not missing, f"constexprs not given: {missing}"
    kernel = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts), target=GPUTarget("cuda", 90, 32),
                            options={"num_warps": warps})
    return kernel.asm["ptx"]

GEMV = {"x_ptr": "*bf16", "w_ptr": "*i32", "s_ptr": "*fp32", "z_ptr": "*u8", "gs_ptr": "*fp32",
        "bias_ptr": "*bf16", "out_ptr": "*bf16", "ws_ptr": "*fp32", "count_ptr": "*i32", "nw_ptr": "*bf16",
        "res_ptr": "*bf16", "eps": "fp32"}
GEMV_C = dict(HAS_ZP=False, HAS_BIAS=True, SPLIT_K=4, GROUPS_PER_TILE=1, EVEN_K=True, BF16_RNE=False,
              PREFETCH=True, PTX=True, FP8_CVT=True, X_HALVES=True, STAGES=1, PDL=0, GATED=False, NORM=False,
              RESIDUAL=False, NORM_BLOCK=1024, NORM_STEPS=4, NORM_EVEN=True, BLOCK_N=64, BLOCK_W=32)
ATTN = {"q_ptr": "*bf16", "kv_ptr": "*bf16", "mask_ptr": "*u8", "last_ptr": "*i64", "out_ptr": "*bf16",
        "ws_ptr": "*fp32", "count_ptr": "*i32", "new_ptr": "*bf16", "cos_ptr": "*bf16", "sin_ptr": "*bf16",
        "wq_ptr": "*bf16", "wk_ptr": "*bf16", "scale": "fp32", "eps": "fp32"}
ATTN_C = dict(HAS_LAST=True, WRITE=False, ROPE=False, QK_NORM=False, RNE=False, SPLITS=6, BLOCK_G=16, BLOCK_L=64,
              BLOCK_D=128, PRECISION=None, DOT_IN_FP32=False)
W8 = {"x_ptr": "*bf16", "w_ptr": "*i32", "bs_ptr": "*fp32", "bias_ptr": "*bf16", "out_ptr": "*bf16",
      "ws_ptr": "*i32", "count_ptr": "*i32"}
W8_C = dict(HAS_BIAS=True, SPLIT_K=4, BF16_RNE=False, DP4A=True, EXACT_DIV=False, ROW_BLOCK=4096, BLOCK_N=64,
            BLOCK_W=64)
AQ = {"x_ptr": "*bf16", "q_ptr": "*u8", "scale_ptr": "*fp32", "amax_ptr": "*fp32"}
AQ_C = dict(QMIN=-448.0, QMAX=448.0, IS_FP8=True, PER_TENSOR=False, STATIC=False, BLOCK_K=4096, SINGLE_PASS=True,
            EXACT_DIV=False, HW_FP8=True)
WO = {"x_ptr": "*bf16", "w_ptr": "*u8", "s_ptr": "*fp32", "z_ptr": "*u8", "gs_ptr": "*fp32", "bias_ptr": "*bf16",
      "out_ptr": "*bf16"}
WO_C = dict(FMT=0, HAS_ZP=False, HAS_BIAS=True, SPLIT_K=1, GROUPS_PER_TILE=1, EVEN_K=True, SWAP_AB=True,
            EPI_MAGIC=128, DOT_PRECISION="tf32", DOT_IN_FP32=False, BF16_RNE=False, BLOCK_N=64, BLOCK_M=16,
            BLOCK_K=128)
SG = {"a_ptr": "*i8", "b_ptr": "*i8", "c_ptr": "*bf16", "a_scale_ptr": "*fp32", "b_scale_ptr": "*fp32",
      "bias_ptr": "*bf16"}
SG_C = dict(SCALE_KIND=1, HAS_BIAS=True, ACC_INT=True, EVEN_K=True, PROMOTE_K=None, BF16_RNE=False, BLOCK_M=128,
            BLOCK_N=128, BLOCK_K=128, GROUP_M=8)
case = sys.argv[1]
ptx = {
    "gemv-int4": lambda: compile(_weight_only_gemv._gemv_kernel, GEMV, {**GEMV_C, "FMT": 0}),
    "gemv-nvfp4": lambda: compile(_weight_only_gemv._gemv_kernel, {**GEMV, "s_ptr": "*u8"}, {**GEMV_C, "FMT": 3}),
    "gemv-int4-staged": lambda: compile(_weight_only_gemv._gemv_kernel, GEMV,
                                        {**GEMV_C, "FMT": 0, "PREFETCH": False, "STAGES": 3}),
    "gemv-int4-staged-pdl": lambda: compile(_weight_only_gemv._gemv_kernel, GEMV,
                                            {**GEMV_C, "FMT": 0, "PREFETCH": False, "STAGES": 3, "PDL": 2}),
    "gemv-int4-gated": lambda: compile(_weight_only_gemv._gemv_kernel, GEMV,
                                       {**GEMV_C, "FMT": 0, "PREFETCH": False, "STAGES": 3, "GATED": True}),
    "gemv-int4-gated-norm": lambda: compile(_weight_only_gemv._gemv_kernel, GEMV,
                                            {**GEMV_C, "FMT": 0, "PREFETCH": False, "STAGES": 3, "GATED": True,
                                             "NORM": True, "BLOCK_N": 32}, warps=1),
    "gemv-nvfp4-residual": lambda: compile(_weight_only_gemv._gemv_kernel, {**GEMV, "s_ptr": "*u8"},
                                           {**GEMV_C, "FMT": 3, "RESIDUAL": True}),
    "w8a8-gemv": lambda: compile(w8a8_gemv._w8a8_gemv_kernel, W8, W8_C),
    "attention-bf16": lambda: compile(decode_attention._decode_attention_kernel, ATTN, ATTN_C),
    "attention-bf16-write": lambda: compile(decode_attention._decode_attention_kernel, ATTN,
                                            {**ATTN_C, "WRITE": True}),
    "attention-bf16-rope-norm": lambda: compile(decode_attention._decode_attention_kernel, ATTN,
                                                {**ATTN_C, "WRITE": True, "ROPE": True, "QK_NORM": True}),
    "attention-fp32": lambda: compile(decode_attention._decode_attention_kernel,
                                      {**ATTN, "q_ptr": "*fp32", "kv_ptr": "*fp32", "out_ptr": "*fp32",
                                       "new_ptr": "*fp32", "cos_ptr": "*fp32", "sin_ptr": "*fp32",
                                       "wq_ptr": "*fp32", "wk_ptr": "*fp32"},
                                      {**ATTN_C, "PRECISION": "ieee", "SPLITS": 1}),
    "act-quant-fp8": lambda: compile(act_quant._act_quant_row_kernel, AQ, AQ_C),
    "w4a16-gemm": lambda: compile(_weight_only._weight_only_kernel, WO, WO_C),
    "int8-gemm": lambda: compile(_scaled_gemm._scaled_gemm_kernel, SG, SG_C, warps=8),
    "fp8-gemm-precise": lambda: compile(_scaled_gemm._scaled_gemm_kernel,
                                        {**SG, "a_ptr": "*fp8e4nv", "b_ptr": "*fp8e4nv"},
                                        {**SG_C, "ACC_INT": False, "PROMOTE_K": 128}, warps=8),
}[case]()
print(json.dumps({"bytes": len(ptx), "ptx": ptx}))
"""

# case: instructions its PTX must hold (the GPU-only path was taken, not the portable one)
CASES = {
    "gemv-int4": ["lop3.b32", "ld.global.b64"],
    "gemv-nvfp4": ["lop3.b32", "cvt.f32.f16", "ld.global.b64", "cvt.rn.f16x2.e4m3x2"],  # the scale's conversion
    "gemv-int4-staged": ["lop3.b32", "cp.async"],
    "gemv-int4-staged-pdl": ["prefetch.global.L2", "griddepcontrol.wait", "griddepcontrol.launch_dependents"],
    "gemv-int4-gated": ["lop3.b32", "cp.async", "ex2.approx"],  # the epilogue's SiLU
    "gemv-int4-gated-norm": ["cp.async", "sqrt.rn.f32", "div.rn.f32", "cvt.rn.bf16.f32"],  # the prologue's rstd
    "gemv-nvfp4-residual": ["cvt.f32.f16", "cvt.rn.bf16.f32"],
    "w8a8-gemv": ["dp4a.s32.s32", "atom.global.gpu.acq_rel"],
    "attention-bf16": ["mma.sync"],
    "attention-bf16-write": ["mma.sync", "bar.sync"],
    "attention-bf16-rope-norm": ["mma.sync", "bar.sync", "rsqrt.approx"],
    "attention-fp32": ["fma.rn.f32"],
    "act-quant-fp8": ["cvt.rn.satfinite.e4m3x2.f32"],
    "w4a16-gemm": ["mma"],
    "int8-gemm": ["mma", ".s8"],
    "fp8-gemm-precise": ["mma", "e4m3"],
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_nvidia_path_compiles_for_sm90(case):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"  # the default these kernels were written for (triton 3.9 asks)
    done = subprocess.run([sys.executable, "-c", SCRIPT, case], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ptx = json.loads(done.stdout.strip().splitlines()[-1])["ptx"]
    for instruction in CASES[case]:
        assert instruction in ptx, f"{case}: no {instruction} in the PTX"
