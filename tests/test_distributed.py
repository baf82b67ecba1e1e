"""Two gloo processes under torchrun give exactly the per-sample results and metrics of one process."""

import json
import os
import sqlite3
import subprocess
import sys

import yaml

SUITE = {
    "name": "dp",
    "model": {"path": "embedded:tiny"},
    "variants": ["W8A8_INT8"],
    "suites": {
        "academic": {"tasks": ["tiny_mc", "tiny_arith", "tiny_ppl"], "limit": 24},
        "code": {"tasks": ["tiny_code"], "limit": 6, "allow_code_execution": True, "timeout_s": 5},
    },
    "run": {"batch_size": 4, "bootstrap_iters": 100, "device": "cpu"},
}


def samples(run_dir):
    """Every model's per-document records (each task's result beside them holds the run's own isolation
    record, with its temp paths: it is compared through results.json instead)."""
    query = "SELECT model_key, task_key, records FROM samples WHERE task_key NOT LIKE 'result:%' ORDER BY 1, 2"
    with sqlite3.connect(run_dir / "store.sqlite") as conn:
        rows = conn.execute(query).fetchall()
    return [(m, t, json.loads(r)) for m, t, r in rows]


def test_two_ranks_match_one_process(tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump(SUITE))
    # both runs on the CPU (gloo ranks), also on a GPU machine that has fewer GPUs than ranks
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    one = subprocess.run(
        [sys.executable, "-m", "evalsuite", "run", str(suite), "--out", str(tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "evalsuite",
            "run",
            str(suite),
            "--out",
            str(tmp_path / "two"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    a = json.loads((tmp_path / "one" / "results.json").read_text())
    b = json.loads((tmp_path / "two" / "results.json").read_text())
    assert b["provenance"]["world_size"] == 2 and a["provenance"]["world_size"] == 1
    assert a["metrics"] == b["metrics"]
    assert [(r["variant"], r["task"], r["recovery"]) for r in a["recovery"]] == [
        (r["variant"], r["task"], r["recovery"]) for r in b["recovery"]
    ]
    assert samples(tmp_path / "one") == samples(tmp_path / "two")
