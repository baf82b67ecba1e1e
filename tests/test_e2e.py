"""The whole path on the embedded model: suite file -> run -> results.json -> reports -> gate."""

import json
import re
import textwrap

import pytest

from evalsuite.cli import main
from evalsuite.results import load

SUITE = """\
name: e2e
model:
  path: embedded:tiny
variants:
  - W8A8_INT8
  - W4A16
  - name: int3
    scheme:
      weights: {num_bits: 3, type: int, strategy: group, group_size: 64}
suites:
  academic:
    tasks: [tiny_mc, tiny_arith, tiny_ppl]
    limit: 24
run:
  batch_size: 16
  bootstrap_iters: 200
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    suite = root / "suite.yaml"
    suite.write_text(textwrap.dedent(SUITE))
    out = root / "run"
    assert main(["run", str(suite), "--out", str(out)]) == 0
    return out


def test_results_have_recovery_for_every_variant_and_task(run_dir):
    results = load(run_dir)
    data = results.data
    assert data["schema_version"] == 1
    assert set(data["variants"]) == {"baseline", "W8A8_INT8", "W4A16", "int3"}
    primary = {(r["variant"], r["task"]) for r in data["recovery"] if r["scope"] == "task" and r["primary"]}
    assert primary == {(v, t) for v in ("W8A8_INT8", "W4A16", "int3") for t in ("tiny_mc", "tiny_arith", "tiny_ppl")}
    suites = [r for r in data["recovery"] if r["scope"] == "suite"]
    assert len(suites) == 3 and all(r["excluded_lower_is_better"] == ["tiny_ppl"] for r in suites)
    for r in data["recovery"]:
        assert r["recovery"] is not None
        assert r["ci_low"] is None or r["ci_low"] <= r["recovery"] <= r["ci_high"]
    frame = results.to_frame()
    assert {"value", "stderr", "n", "recovery", "ci_low"} <= set(frame.columns)
    assert (frame[frame.variant == "baseline"]["n"] == 24).all()


def test_variants_record_bytes_kernels_and_backend(run_dir):
    variants = load(run_dir).data["variants"]
    assert variants["baseline"]["compression_ratio"] == 1.0
    assert variants["W8A8_INT8"]["kernels"] == ["act_quant[int8]", "int8_gemm"]
    assert variants["W4A16"]["backend"] == "torch-ref"
    assert 1.2 < variants["W8A8_INT8"]["compression_ratio"] < variants["W4A16"]["compression_ratio"]
    assert variants["W4A16"]["quantized_layer_bytes"] < variants["W4A16"]["float_layer_bytes"] / 3


def test_the_baseline_beats_chance_and_int3_loses_accuracy(run_dir):
    rows = {(m["variant"], m["task"], m["metric"]): m["value"] for m in load(run_dir).data["metrics"]}
    assert rows[("baseline", "tiny_mc", "acc_norm")] > 0.5  # chance: 0.25
    assert rows[("baseline", "tiny_arith", "exact_match")] > 0.5  # chance: ~0
    assert rows[("int3", "tiny_ppl", "word_perplexity")] > rows[("baseline", "tiny_ppl", "word_perplexity")]


def test_reports_are_written_and_self_contained(run_dir):
    md = (run_dir / "report.md").read_text()
    html = (run_dir / "report.html").read_text()
    assert "## Recovery" in md and "W4A16" in md and "tiny_arith" in md
    assert "<svg" in html and "Provenance" in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "the HTML report must not load external assets"


def test_prompts_and_settings_are_identical_across_variants(run_dir):
    data = load(run_dir).data
    assert data["provenance"]["batch_size"] == 16
    assert data["provenance"]["versions"]["lm_eval"]


def test_gate_passes_below_and_fails_above(run_dir, capsys):
    assert main(["gate", str(run_dir), "--min-recovery", "5"]) == 0
    assert main(["gate", str(run_dir), "--min-recovery", "150"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_rerun_is_served_from_the_store(run_dir):
    before = json.loads((run_dir / "results.json").read_text())
    suite = run_dir.parent / "suite.yaml"
    assert main(["run", str(suite), "--out", str(run_dir)]) == 0
    after = load(run_dir).data
    assert all(v["model_calls"] == 0 for v in after["variants"].values())
    assert after["metrics"] == before["metrics"]


def test_report_command_rerenders(run_dir):
    (run_dir / "report.md").unlink()
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report.md").is_file()
