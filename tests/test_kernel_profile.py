import pytest
import torch

from evalsuite import kernel_profile


@pytest.mark.parametrize(
    "name, kind",
    [
        ("_gemv_kernel", "weight-only GEMV (ours)"),
        ("_w8a8_gemv_kernel", "W8A8 decode GEMV, act_quant fused (ours)"),
        ("_decode_attention_kernel", "attention"),
        ("_weight_only_kernel", "weight-only GEMM / dequantize (ours)"),
        ("_scaled_gemm_tma_kernel", "scaled GEMM (ours)"),
        ("_act_quant_row_kernel", "activation quantization (ours)"),
        ("void pytorch_flash::flash_fwd_splitkv_kernel<Flash_fwd_kernel_traits<128, 64>>", "attention"),
        ("fmha_cutlassF_bf16_aligned_64x64_rf_sm80", "attention"),
        ("nvjet_tst_128x64_64x8_2x1_v_bz_TNT", "cuBLAS / CUTLASS matmul"),
        ("triton_red_fused__to_copy_add_mean_mul_pow_rsqrt_0", "Inductor fused kernels"),
        ("void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>>", "copies and fills"),
        ("void at::native::index_elementwise_kernel<128, 4>", "other"),
    ],
)
def test_kind_of_names_each_family(name, kind):
    assert kernel_profile.kind_of(name) == kind


def _prof():
    rows = [
        {"name": "_gemv_kernel", "grid": "64x1x8", "kind": "weight-only GEMV (ours)", "count": 4, "us": 60.0},
        {"name": "_gemv_kernel", "grid": "448x1x2", "kind": "weight-only GEMV (ours)", "count": 1, "us": 40.0},
        {"name": "triton_poi_fused_0", "grid": "16x1x1", "kind": "Inductor fused kernels", "count": 3, "us": 9.0},
    ]
    for r in rows:
        r["us_each"] = r["us"] / r["count"]
    return {"calls": 4, "wall_us": 200.0, "span_us": 150.0, "busy_us": 109.0, "rows": rows}


def test_by_kind_sums_kernels_of_one_kind_against_the_wall():
    kinds = kernel_profile.by_kind(_prof())
    assert [k["kind"] for k in kinds] == ["weight-only GEMV (ours)", "Inductor fused kernels"]
    assert kinds[0]["us"] == 100.0 and kinds[0]["count"] == 5 and kinds[0]["share"] == 0.5
    assert kinds[1]["share"] == 9.0 / 200.0


def test_render_states_busy_and_idle_time():
    text = kernel_profile.render(_prof(), "W4A16 step")
    assert "200.0 us per call; kernels busy 109.0 us (55%); idle 91.0 us" in text
    assert "| weight-only GEMV (ours) | 5 | 100.0 | 50.0% |" in text
    assert "| `_gemv_kernel` | 448x1x2 | weight-only GEMV (ours) | 1 | 40.00 | 40.0 |" in text


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the profiler's kernel records need a GPU")
def test_profile_records_the_kernels_of_a_cuda_graph_replay():
    a = torch.randn(1024, 1024, device="cuda")
    b = torch.empty_like(a)
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        torch.mm(a, a, out=b)
    torch.cuda.synchronize()
    with torch.cuda.graph(graph):
        torch.mm(a, a, out=b)
        b.add_(1.0)
    prof = kernel_profile.profile(graph.replay, calls=5)
    kinds = {r["kind"]: r["count"] for r in prof["rows"]}
    assert kinds.get("cuBLAS / CUTLASS matmul") == 1, prof["rows"]
    assert sum(r["count"] for r in prof["rows"]) == 2, prof["rows"]
    assert 0 < prof["busy_us"] <= prof["span_us"] + 1e-6
    hosted = kernel_profile.profile(graph.replay, calls=2, host=True)
    assert hosted["host"] and all(h["self_us"] >= 0 for h in hosted["host"])
    assert "Host operators" in kernel_profile.render(hosted, "replay")
