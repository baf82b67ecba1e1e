"""`evalsuite run --noise-floor` scores the baseline against itself at another batch size (self-flips per task,
self-KLD on the fidelity texts), and the report puts each variant's flips and KLD next to that floor."""

import json
import textwrap

import pytest

from evalsuite.cli import main
from evalsuite.store import Store

SUITE = """\
name: noise
model:
  path: embedded:tiny
variants:
  - name: int3
    scheme:
      weights: {num_bits: 3, type: int, strategy: group, group_size: 64}
suites:
  academic:
    tasks: [tiny_mc, tiny_arith]
    limit: 8
  fidelity:
    texts: [tiny_ppl]
    limit: 4
    batch_size: 4
run:
  batch_size: 8
  bootstrap_iters: 0
"""
TASKS = ("tiny_mc", "tiny_arith")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("noise")
    (root / "suite.yaml").write_text(textwrap.dedent(SUITE))
    out = root / "run"
    assert main(["run", str(root / "suite.yaml"), "--noise-floor", "--out", str(out)]) == 0
    return out


def test_results_record_self_flips_per_task_and_self_kld(run_dir):
    data = json.loads((run_dir / "results.json").read_text())
    assert data["provenance"]["noise_floor"] is True, "--noise-floor did not reach run.noise_floor"
    floor = data["noise_floor"]["baseline"]
    assert (floor["batch_size"], floor["other_batch_size"]) == (8, 2)  # default: batch_size // 4
    flips = {f["task"]: f for f in floor["flips"]}
    assert set(flips) == set(TASKS), f"self-flips for {sorted(flips)}, expected every task with a 0/1 metric"
    for task, f in flips.items():
        assert f["n"] == 8, (task, f)
        assert f["flips"] == f["correct_to_wrong"] + f["wrong_to_correct"], (task, f)
        assert f["flip_rate"] == f["flips"] / f["n"], (task, f)
        assert f["flip_rate"] <= 0.25, f"{task}: the baseline flips {f['flip_rate']:.0%} of answers against itself"
    tokens = floor["tokens"]
    assert set(tokens) == {"tiny_ppl"}, tokens
    self_kld = tokens["tiny_ppl"]
    assert self_kld["tokens"] == data["suites"]["fidelity"]["int3"]["tiny_ppl"]["tokens"] > 0
    assert 0 <= self_kld["kld_mean"] < 1e-4 and self_kld["top1_agreement"] > 0.99, self_kld
    assert data["suites"]["fidelity"]["int3"]["tiny_ppl"]["kld_mean"] > self_kld["kld_mean"]


def test_the_floor_was_computed_at_the_other_batch_size_not_served_from_the_baseline(run_dir):
    data = json.loads((run_dir / "results.json").read_text())
    key, twin_key = data["variants"]["baseline"]["model_key"], data["noise_floor"]["baseline"]["model_key"]
    store = Store(run_dir / "store.sqlite")
    try:
        twin = store.count_responses(twin_key, kinds=SCORED)
        base = store.count_responses(key, kinds=SCORED)
        panels = store.count_responses(twin_key, kinds=("fidelity",))
    finally:
        store.close()
    assert twin_key != key
    assert twin == base > 0, f"the baseline at batch 2 has {twin} responses of its own, the baseline {base}"
    assert panels == 4, f"{panels} fidelity panels of the baseline at batch 2 against itself, expected one per text"


SCORED = ("loglikelihood", "loglikelihood_rolling", "generate_until")


def _table(md: str, first_header: str) -> tuple[list[str], list[list[str]]]:
    lines = [line for line in md.splitlines() if line.startswith("|")]
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2 :]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != len(lines[start].strip("|").split("|")):
            break
        rows.append(cells)
    return [c.strip() for c in lines[start].strip("|").split("|")], rows


def test_report_shows_each_variants_flips_and_kld_next_to_the_floor(run_dir):
    from evalsuite.reports import format as fmt

    data = json.loads((run_dir / "results.json").read_text())
    md = (run_dir / "report.md").read_text()
    flips_section = md.split("## Answer flips", 1)[1]
    header, rows = _table(flips_section, "variant")
    assert "noise floor (baseline at batch 2)" in header, header
    column = header.index("noise floor (baseline at batch 2)")
    floor = {f["task"]: f["flip_rate"] for f in data["noise_floor"]["baseline"]["flips"]}
    variant = {f["task"]: f["flip_rate"] for f in data["flips"]["int3"]}
    shown = {r[1]: r for r in rows if r[0] == "int3"}
    assert set(shown) == set(TASKS), rows
    for task in TASKS:
        assert shown[task][header.index("flip rate")] == fmt.pct(variant[task]), shown[task]
        assert shown[task][column] == fmt.pct(floor[task]), shown[task]
    fidelity_section = md.split("## Fidelity", 1)[1]
    _, fid_rows = _table(fidelity_section, "variant")
    labels = [r[0] for r in fid_rows]
    twins = ["noise floor: int3 triton vs torch-ref"] if data["provenance"]["backend"] == "triton" else []
    assert labels == ["int3", "noise floor: baseline at batch 8 vs 2", *twins], labels
