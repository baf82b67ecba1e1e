"""Static SASS of the decode GEMV's loop, compiled for an H100 (sm_90) on any machine, no GPU: Triton lowers the
kernel and assembles it with the ptxas it ships, and its nvdisasm lists the SASS. For each case (format and tile
of an 8B layer as `_weight_only._gemv_config` picks them, the launch's divisibility attributes set as Triton's
runtime sets them for 16-aligned pointers and sizes) it prints the loop body's instruction count per step and
per code, and its opcode histogram; writes gemv-sass.json to the directory given. Each FP4 case is compiled with
the E4M3 scale widened by the float8 cast (FP8_CVT) and decoded with integer operations.

    python3 benchmarks/gemv_sass.py [OUT_DIR]
"""

import collections
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from evalsuite.kernels import _weight_only_gemv

TYPES = {"x_ptr": "*bf16", "w_ptr": "*i32", "s_ptr": "*fp32", "z_ptr": "*u8", "gs_ptr": "*fp32", "bias_ptr": "*bf16",
         "out_ptr": "*bf16", "ws_ptr": "*fp32", "count_ptr": "*i32", "nw_ptr": "*bf16",
         "res_ptr": "*bf16", "eps": "fp32"}  # fmt: skip
# the integer arguments that are multiples of 16 at Llama-3.1-8B's shapes (group_words too for int4 g128)
DIVISIBLE = {"N", "KW", "num_groups", "w_per_split", "stride_xm", "stride_wn", "stride_sn", "stride_om", "stride_ws",
             "stride_rm"}  # fmt: skip
BASE = dict(HAS_ZP=False, HAS_BIAS=False, SPLIT_K=1, GROUPS_PER_TILE=1, EVEN_K=True, BF16_RNE=False, PREFETCH=False,
            PTX=True, FP8_CVT=True, X_HALVES=True, STAGES=3, PDL=0, GATED=False, NORM=0, RESIDUAL=False,
            NORM_BLOCK=1024, NORM_STEPS=4, NORM_EVEN=True, BLOCK_N=16, BLOCK_W=32, FMT=3)  # fmt: skip
# name: (constexprs, warps); tiles as _gemv_config picks them for 8B gate/up (tall) and q/k/v
CASES = {
    "int4-g128-gate_up": (dict(FMT=0, GATED=True, BLOCK_N=32, GROUPS_PER_TILE=2), 1),
    "int4-g128-qkv": (dict(FMT=0, BLOCK_N=64, GROUPS_PER_TILE=2, SPLIT_K=4), 4),
    "nvfp4-gate_up": (dict(FMT=3, GATED=True, BLOCK_N=16, GROUPS_PER_TILE=16), 1),
    "nvfp4-qkv": (dict(FMT=3, BLOCK_N=64, GROUPS_PER_TILE=16, STAGES=1, PREFETCH=True, SPLIT_K=4), 4),
    "mxfp4-gate_up": (dict(FMT=2, GATED=True, BLOCK_N=16, GROUPS_PER_TILE=8), 1),
}


def sass(consts: dict, warps: int) -> str:
    fn = _weight_only_gemv._gemv_kernel
    types = dict(TYPES, s_ptr="*u8") if consts["FMT"] >= 2 else TYPES
    divisible = DIVISIBLE | ({"group_words"} if consts["FMT"] <= 1 else set())
    sig = {p.name: "constexpr" if p.is_constexpr else types.get(p.name, "i32") for p in fn.params}
    attrs = {(i,): [["tt.divisibility", 16]] for i, p in enumerate(fn.params)
             if not p.is_constexpr and (sig[p.name].startswith("*") or p.name in divisible)}  # fmt: skip
    kernel = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs),
                            target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp, "gemv.cubin")
        cubin.write_bytes(kernel.asm["cubin"])
        nvdisasm = Path(triton.__file__).parent / "backends/nvidia/bin/nvdisasm"
        return subprocess.run([str(nvdisasm), "-c", str(cubin)], capture_output=True, text=True, check=True).stdout


def longest_loop(text: str) -> list[str]:
    """The instructions between a label and the backward branch to it, the longest such range."""
    lines = [line for line in text.splitlines() if re.match(r"\s+/\*[0-9a-f]{4,}\*/", line)]

    def addr(line):
        return int(re.match(r"\s+/\*([0-9a-f]+)\*/", line).group(1), 16)

    labels = {m.group(1): int(m.group(2), 16) for m in re.finditer(r"\.(L_x_\d+):\n\s+/\*([0-9a-f]+)\*/", text)}
    loops = []
    for line in lines:
        m = re.search(r"BRA.*`\(\.(L_x_\d+)\)", line)
        if m and m.group(1) in labels and labels[m.group(1)] < addr(line):
            loops.append([x for x in lines if labels[m.group(1)] <= addr(x) <= addr(line)])
    return max(loops, key=len)


def opcodes(body: list[str]) -> collections.Counter:
    count = collections.Counter()
    for line in body:
        ins = re.sub(r"^@!?U?P\w+\s+", "", re.sub(r"\s+/\*[0-9a-f]+\*/\s+", "", line).strip())
        count[ins.split()[0]] += 1
    return count


def main(out_dir: str) -> None:
    rows = []
    for name, (extra, warps) in CASES.items():
        for cvt in (True, False) if extra["FMT"] == 3 else (True,):
            consts = dict(BASE, **extra, FP8_CVT=cvt)
            body = longest_loop(sass(consts, warps))
            codes = consts["BLOCK_N"] * consts["BLOCK_W"] * (4 if consts["FMT"] == 1 else 8) // (32 * warps)
            label = name + ("" if extra["FMT"] != 3 else " (fp8 cast)" if cvt else " (integer E4M3 decode)")
            counts = dict(opcodes(body).most_common())
            rows.append(dict(case=label, per_step=len(body), codes_per_thread=codes,
                             per_code=round(len(body) / codes, 2), opcodes=counts))  # fmt: skip
    print(f"triton {triton.__version__}, sm_90\n| case | SASS per step | codes per thread | per code | top opcodes |")
    print("|---|---|---|---|---|")
    for r in rows:
        top = ", ".join(f"{k} {v}" for k, v in list(r["opcodes"].items())[:6])
        print(f"| {r['case']} | {r['per_step']} | {r['codes_per_thread']} | {r['per_code']} | {top} |")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    Path(out_dir, "gemv-sass.json").write_text(json.dumps({"triton": triton.__version__, "rows": rows}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("OUT", "."))
