"""The whole path on the embedded model: suite file -> run -> results.json -> reports -> gate."""

import json
import re
import sqlite3
import textwrap
from contextlib import closing

import pytest
import torch

from evalsuite.cli import main
from evalsuite.lm import EvalLM
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


REQUEST_KINDS = ("loglikelihood", "loglikelihood_rolling", "generate_until")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The run directory, and every request each model was sent: {label: {(task, kind): [request args]}}."""
    root = tmp_path_factory.mktemp("e2e")
    suite = root / "suite.yaml"
    suite.write_text(textwrap.dedent(SUITE))
    out = root / "run"
    sent: dict = {}

    def spy(kind):
        original = getattr(EvalLM, kind)

        def recorded(self, requests, *args, **kwargs):
            rows = sent.setdefault(self.label, {}).setdefault((self.task_name, kind), [])
            rows += [json.dumps(list(r.args), sort_keys=True, default=str) for r in requests]
            return original(self, requests, *args, **kwargs)

        return recorded

    with pytest.MonkeyPatch.context() as patch:
        for kind in REQUEST_KINDS:
            patch.setattr(EvalLM, kind, spy(kind))
        assert main(["run", str(suite), "--out", str(out)]) == 0
    return out, sent


@pytest.fixture(scope="module")
def run_dir(run):
    return run[0]


def test_results_have_recovery_for_every_variant_and_task(run_dir):
    results = load(run_dir)
    data = results.data
    assert data["schema_version"] == 2
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
    decode = ["w8a8_gemv"] if torch.cuda.is_available() else []  # the fused decode kernel, Triton backend only
    assert variants["W8A8_INT8"]["kernels"] == ["act_quant[int8]", "int8_gemm", *decode]
    assert variants["W4A16"]["backend"] == ("triton" if torch.cuda.is_available() else "torch-ref")  # auto
    assert 1.2 < variants["W8A8_INT8"]["compression_ratio"] < variants["W4A16"]["compression_ratio"]
    assert variants["W4A16"]["quantized_layer_bytes"] < variants["W4A16"]["float_layer_bytes"] / 3
    # which decoder generated tiny_arith's answers, recorded for every model
    decoders = {name: v["decode"] for name, v in variants.items()}
    if not torch.cuda.is_available():
        assert decoders == dict.fromkeys(variants, "eager HF decoder: graph decoder skipped, no CUDA device (cpu)")
        return
    start = "graph decoder (cuda-graph, inductor-compiled; q/k/v and gate/up fused in 8/8 groups; "
    end = "step attention: Triton decode kernel, which applies RoPE and writes the new keys and values)"
    gate = "SiLU-gate in the gate/up kernel in 4/4 layers; "  # the weight-only GEMV's epilogue
    assert decoders["baseline"] == decoders["W8A8_INT8"] == start + end
    assert decoders["W4A16"] == decoders["int3"] == start + gate + end


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


def test_prompts_and_settings_are_identical_across_variants(run):
    run_dir, sent = run
    data = load(run_dir).data
    names = list(data["variants"])
    for task in ("tiny_mc", "tiny_arith", "tiny_ppl"):  # results.json holds the per-document prompt hashes
        prompts = data["prompts"][f"academic/{task}"]
        assert len(prompts["baseline"]) == 24 and all(prompts["baseline"])
        assert prompts["documents_that_differ"] == {"W8A8_INT8": 0, "W4A16": 0, "int3": 0}
    # every model was sent exactly the baseline's requests: contexts, continuations, generation settings
    assert set(sent) == set(names), f"requests were recorded for {sorted(sent)}"
    expected = {(t, k) for t in ("tiny_mc", "tiny_arith", "tiny_ppl") for k in REQUEST_KINDS}
    assert set(sent["baseline"]) <= expected and len(sent["baseline"]) == 3, sorted(sent["baseline"])
    for name in names:
        for (task, kind), requests in sent["baseline"].items():
            theirs = sent[name].get((task, kind))
            assert theirs == requests, f"{name} was not sent the baseline's {kind} requests for {task}"
    generation = [json.loads(r) for r in sent["baseline"][("tiny_arith", "generate_until")]]
    assert len(generation) == 24
    settings = {json.dumps(kwargs, sort_keys=True) for _, kwargs in generation}
    assert len(settings) == 1, settings
    got, want = json.loads(settings.pop()), {"until": ["\n"], "max_gen_toks": 64, "do_sample": False}  # the YAML's
    assert {k: got.get(k) for k in want} == want, got

    # and the stored samples carry the same prompt hash for every document of every task, in every model
    with closing(sqlite3.connect(run_dir / "store.sqlite")) as conn:
        variant_of = {k: json.loads(d)["variant"] for k, d in conn.execute("SELECT model_key, description FROM models")}
        query = "SELECT model_key, task_key, records FROM samples WHERE task_key NOT LIKE 'result:%'"
        stored = conn.execute(query).fetchall()  # per-document records (beside them: each task's result)
    hashes: dict = {}
    for model_key, task_key, records in stored:
        per_doc = sorted((r["filter"], str(r["doc_id"]), r["prompt_hash"]) for r in json.loads(records))
        hashes.setdefault(task_key, {})[variant_of[model_key]] = per_doc
    assert len(hashes) == 3, sorted(hashes)
    for task_key, per_variant in hashes.items():
        assert set(per_variant) == set(names), (task_key, sorted(per_variant))
        assert len({r[1] for r in per_variant["baseline"]}) == 24, task_key
        for name in names:
            assert per_variant[name] == per_variant["baseline"], f"{task_key}: {name}'s prompt hashes differ"
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
