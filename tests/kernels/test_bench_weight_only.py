"""The large-M weight-only study's summary: from which measured M dequantize-then-cuBLAS wins at every larger M."""

from evalsuite.kernels.bench_weight_only import crossover, markdown


def _row(shape, fmt, m, ratio):
    return {"format": fmt, "shape": shape, "M": m, "N": 8, "K": 8, "fused_us": ratio, "dequant_cublas_us": 1.0,
            "bf16_us": 1.0, "fused_over_dequant": ratio, "dispatch": "triton-gemm", "max_rel_diff": 0.0}  # fmt: skip


def test_the_crossover_is_the_smallest_m_from_which_dequant_wins_at_every_larger_m():
    rows = [
        *(_row("8b-o", "int4", m, r) for m, r in [(128, 0.6), (256, 1.1), (512, 0.9), (1024, 1.3), (4096, 1.2)]),
        *(_row("8b-o", "nvfp4", m, r) for m, r in [(128, 0.5), (256, 1.02), (512, 1.4)]),
        *(_row("70b-o", "int4", m, r) for m, r in [(128, 0.5), (4096, 0.97)]),
    ]
    assert crossover(rows) == [
        {"shape": "8b-o", "format": "int4", "dequant_wins_from_M": 1024},  # 512 lost, so 256 does not count
        {"shape": "8b-o", "format": "nvfp4", "dequant_wins_from_M": 256},
        {"shape": "70b-o", "format": "int4", "dequant_wins_from_M": None},
    ]
    meta = {"device": "X", "torch": "t", "triton": "tr", "timing": "w", "DEQUANT_GEMM_MIN_M": 256}
    text = markdown(rows, crossover(rows), meta)
    assert "| 70b-o | int4 | never |" in text and "| 8b-o | int4 | 1024 |" in text


def test_the_study_runs_on_the_interpreter_and_writes_its_files(tmp_path, capsys):
    """`bench kernels --only weight_only_large --tiny` (int4 only): the code path, not the speed."""
    import json

    from evalsuite.kernels.bench import main
    from tests.kernels.common import DEVICE

    device = ["--device", "cpu"] if DEVICE == "cpu" else []
    args = ["--only", "weight_only_large", "--tiny", "--rep", "5", "--formats", "int4", "--out", str(tmp_path)]
    assert main([*args, *device]) == 0
    data = json.loads(next(tmp_path.glob("weight-only-large-*.json")).read_text())
    assert {r["M"] for r in data["rows"]} == {24, 300} and data["meta"]["DEQUANT_GEMM_MIN_M"] == 256
    assert main(["--only", "weight_only_large", "--formats", "int9", *device]) == 2
    assert "unknown formats ['int9']" in capsys.readouterr().err
