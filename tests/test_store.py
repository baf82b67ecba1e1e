"""The store never serves one model's answers as another's, recomputes exactly what changed, and resumes
after kill -9 with no sample lost or duplicated."""

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys

import pytest
import yaml

from evalsuite.config import parse_suite
from evalsuite.models import EMBEDDED, ModelLoadError, resolve_model
from evalsuite.runner import run_suite
from evalsuite.store import Store

TINY = EMBEDDED["embedded:tiny"]


def suite(model, variants=("W8A8_INT8",), **suites):
    suites = suites or {"academic": {"tasks": ["tiny_mc"], "limit": 12}}
    return parse_suite(
        {
            "name": "s",
            "model": {"path": str(model)},
            "variants": list(variants),
            "suites": suites,
            # a copy of the demo model is, by its path, a user's model, whose default calibration (128 windows
            # of 512 tokens, for per-layer SQNR) is what these tests spent most of their time on: they test the
            # store, so a few short windows do
            "run": {"batch_size": 8, "bootstrap_iters": 50, "calibration": {"samples": 4, "seq_len": 128}},
        }
    )


def calls(outcome):
    return {name: info["model_calls_by_task"] for name, info in outcome.data["variants"].items()}


@pytest.fixture
def model_copy(tmp_path):
    path = tmp_path / "model"
    shutil.copytree(TINY, path)
    return path


def test_identical_rerun_makes_no_model_calls_and_the_baseline_is_shared(tmp_path, model_copy):
    first = run_suite(suite(model_copy, ("W8A8_INT8", "W4A16")), tmp_path / "run")
    assert all(c["academic/tiny_mc"] > 0 for c in calls(first).values())
    again = run_suite(suite(model_copy, ("W8A8_INT8", "W4A16", "NVFP4")), tmp_path / "run")
    counted = calls(again)
    assert counted["baseline"] == {"academic/tiny_mc": 0}  # computed once, shared by every later run
    assert counted["W8A8_INT8"] == counted["W4A16"] == {"academic/tiny_mc": 0}
    assert counted["NVFP4"]["academic/tiny_mc"] > 0
    assert again.data["metrics"][:2] == first.data["metrics"][:2]


def test_another_batch_size_recomputes_rather_than_reusing_the_baseline(tmp_path, model_copy):
    run_suite(suite(model_copy), tmp_path / "run")
    config = suite(model_copy)
    config = config.model_copy(update={"run": config.run.model_copy(update={"batch_size": 4})})
    counted = calls(run_suite(config, tmp_path / "run"))
    assert counted["baseline"]["academic/tiny_mc"] > 0 and counted["W8A8_INT8"]["academic/tiny_mc"] > 0


def test_one_byte_of_weights_recomputes_that_model_only(tmp_path, model_copy):
    other = tmp_path / "other"
    shutil.copytree(TINY, other)
    run_suite(suite(model_copy), tmp_path / "run")
    run_suite(suite(other), tmp_path / "run")
    weights = model_copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01  # one bit of the last weight
    weights.write_bytes(bytes(data))
    changed = calls(run_suite(suite(model_copy), tmp_path / "run"))
    assert changed["baseline"]["academic/tiny_mc"] > 0 and changed["W8A8_INT8"]["academic/tiny_mc"] > 0
    untouched = calls(run_suite(suite(other), tmp_path / "run"))
    assert untouched["baseline"] == untouched["W8A8_INT8"] == {"academic/tiny_mc": 0}


def test_chat_template_and_generation_settings_recompute_only_what_uses_them(tmp_path, model_copy):
    suites = {"academic": {"tasks": ["tiny_mc"], "limit": 8}, "similarity": {"limit": 4, "max_gen_toks": 16}}
    run_suite(suite(model_copy, **suites), tmp_path / "run")
    template = model_copy / "chat_template.jinja"
    template.write_text(template.read_text().replace("User: ", "Human: "))
    after = calls(run_suite(suite(model_copy, **suites), tmp_path / "run"))
    for name in ("baseline", "W8A8_INT8"):
        assert after[name]["academic/tiny_mc"] == 0 and after[name]["similarity/tiny_chat"] > 0
    suites["similarity"]["max_gen_toks"] = 12
    after = calls(run_suite(suite(model_copy, **suites), tmp_path / "run"))
    assert after["baseline"]["academic/tiny_mc"] == 0 and after["baseline"]["similarity/tiny_chat"] > 0


def test_truncated_weights_and_missing_shards_are_caught_before_loading(tmp_path, model_copy):
    weights = model_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ModelLoadError, match="truncated safetensors file"):
        resolve_model(str(model_copy))
    (model_copy / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}})
    )
    with pytest.raises(ModelLoadError, match="shards that are missing: model-00001"):
        resolve_model(str(model_copy))


def test_malformed_and_empty_task_data_are_errors_with_the_line(tmp_path):
    from evalsuite.suites.academic import resolve_tasks
    from evalsuite.suites.task_checks import TaskDataError

    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "mine.yaml").write_text(
        "task: mine\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: mine.jsonl\ntest_split: test\n"
        "output_type: multiple_choice\ndoc_to_text: q\ndoc_to_target: 0\ndoc_to_choice: [a, b]\n"
    )
    (folder / "mine.jsonl").write_text('{"q": 1}\n{"q": 2,}\n')
    config = parse_suite(
        {"name": "s", "variants": ["W4A16"], "suites": {"academic": {"tasks": ["mine"], "include": [str(folder)]}}}
    )
    with pytest.raises(TaskDataError, match=r"mine.jsonl:2: not valid JSON"):
        resolve_tasks(config.suites.academic)
    (folder / "mine.jsonl").write_text("\n")
    with pytest.raises(TaskDataError, match="the dataset is empty"):
        resolve_tasks(config.suites.academic)


def test_unwritable_output_directory(tmp_path):
    from evalsuite.runner import RunError

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(RunError, match="cannot write to the output directory"):
        run_suite(suite(TINY), blocker / "run")


RESUME_SUITE = {
    "name": "resume",
    "model": {"path": "embedded:tiny"},
    "variants": ["W4A16"],
    "suites": {"academic": {"tasks": ["tiny_mc", "tiny_arith"], "limit": 48}},
    "run": {"batch_size": 4, "bootstrap_iters": 50},
}
STOP_AT_BATCH = 12  # the run signals itself right after storing this batch: mid-run on any machine

# Runs `evalsuite run` in a subprocess that signals itself after its STOP_AT_BATCH-th stored batch and says
# on stderr how many answers it had stored by then: the interrupt lands at the same point on a fast GPU
# machine and on a slow CPU one (a sleep-and-poll loop lost the race on an H200). Python's own SIGINT handler is
# put back first, as a terminal's Ctrl-C finds it: a child of a background job inherits SIGINT ignored, and Python
# then installs none (the test ran to the end with rc 0 when CI was started with `&`).
DRIVER = """
import os, signal, sys
from evalsuite.cli import main
from evalsuite.store import Store

signal.signal(signal.SIGINT, signal.default_int_handler)

put, batches = Store.put_responses, []

def put_then_maybe_stop(self, model_key, rows):
    put(self, model_key, rows)
    batches.append(len(rows))
    if len(batches) == {stop}:
        print(f"stored {{sum(batches)}} answers", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.{sig})

Store.put_responses = put_then_maybe_stop
sys.exit(main(["run", {suite!r}, "--out", {out!r}]))
"""


def _responses(run_dir):
    path = run_dir / "store.sqlite"
    if not path.exists():
        return 0
    with sqlite3.connect(path, timeout=5) as conn:
        return conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=600)


def _interrupted(suite_file, run_dir, sig: str) -> tuple[subprocess.CompletedProcess, int]:
    """The interrupted run and how many answers it had stored when the signal was sent."""
    code = DRIVER.format(stop=STOP_AT_BATCH, sig=sig, suite=str(suite_file), out=str(run_dir))
    done = _run(["-c", code])
    stored = re.search(r"stored (\d+) answers", done.stderr)
    assert stored, f"the run ended before its batch {STOP_AT_BATCH} (rc {done.returncode}): {done.stderr[-2000:]}"
    return done, int(stored.group(1))


def test_kill_9_then_rerun_completes_with_no_duplicates_and_equal_metrics(tmp_path):
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(yaml.safe_dump(RESUME_SUITE))
    killed, stored = _interrupted(suite_file, tmp_path / "killed", "SIGKILL")
    assert killed.returncode == -signal.SIGKILL
    assert _responses(tmp_path / "killed") == stored  # every committed batch survived the kill
    Store(tmp_path / "killed" / "store.sqlite").close()  # readable after the kill
    for out in ("killed", "straight"):
        done = _run(["-m", "evalsuite", "run", str(suite_file), "--out", str(tmp_path / out)])
        assert done.returncode == 0, done.stderr[-2000:]
    a = json.loads((tmp_path / "killed" / "results.json").read_text())
    b = json.loads((tmp_path / "straight" / "results.json").read_text())
    assert _responses(tmp_path / "killed") == _responses(tmp_path / "straight")  # nothing duplicated or missing
    assert _responses(tmp_path / "straight") > stored
    for ma, mb in zip(a["metrics"], b["metrics"], strict=True):
        assert (ma["task"], ma["metric"], ma["variant"], ma["n"]) == (mb["task"], mb["metric"], mb["variant"], mb["n"])
        assert ma["value"] == pytest.approx(mb["value"], abs=1e-9)


def test_ctrl_c_keeps_what_is_done_and_says_how_to_resume(tmp_path):
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(yaml.safe_dump(RESUME_SUITE))
    done, stored = _interrupted(suite_file, tmp_path / "run", "SIGINT")
    assert done.returncode == 130, done.stderr[-2000:]
    assert "run the same command again to resume" in done.stdout + done.stderr
    assert _responses(tmp_path / "run") == stored


def test_rotation_and_algorithm_options_are_part_of_the_key(tmp_path):
    variants = [
        "W8A8_INT8",
        {"scheme": "W8A8_INT8", "rotation": "hadamard"},
        {"scheme": "W8A8_INT8", "algorithm": "smoothquant", "options": {"alpha": 0.5}},
        {"name": "sq-alpha-0.8", "scheme": "W8A8_INT8", "algorithm": "smoothquant", "options": {"alpha": 0.8}},
    ]
    config = parse_suite(
        {
            "name": "s",
            "model": {"path": "embedded:tiny"},
            "variants": variants,
            "suites": {"academic": {"tasks": ["tiny_mc"], "limit": 6}},
            "run": {"batch_size": 8, "bootstrap_iters": 0, "calibration": {"samples": 4, "seq_len": 64}},
        }
    )
    counted = calls(run_suite(config, tmp_path / "run"))
    keys = {name: info["model_key"] for name, info in run_suite(config, tmp_path / "run").data["variants"].items()}
    assert all(c["academic/tiny_mc"] > 0 for c in counted.values()), counted
    assert len(set(keys.values())) == len(keys)


def _edit_one_answer(store_path) -> None:
    """Change one byte of one cached generation, as a hand edit or a damaged page would (the file stays a
    valid database)."""
    with sqlite3.connect(store_path) as conn:
        key, value = conn.execute(
            "SELECT key, value FROM responses WHERE kind = 'generate_until' ORDER BY key LIMIT 1"
        ).fetchone()
        edited = value[:-2] + ("7" if value[-2] != "7" else "8") + value[-1:]
        conn.execute("UPDATE responses SET value = ? WHERE key = ?", (edited, key))


def test_an_edited_cached_answer_is_recomputed_and_counted_never_served(tmp_path, model_copy):
    config = suite(model_copy, academic={"tasks": ["tiny_arith"], "limit": 6})
    first = run_suite(config, tmp_path / "run")
    _edit_one_answer(tmp_path / "run" / "store.sqlite")
    rescored = config.model_copy(update={"run": config.run.model_copy(update={"bootstrap_iters": 40})})
    again = run_suite(rescored, tmp_path / "run")  # other settings: the task is scored again from the answers
    assert again.data["provenance"]["store_rows_recomputed"]["checksum mismatch"] == 1
    recomputed = {name for name, c in calls(again).items() if sum(c.values())}
    assert len(recomputed) == 1  # the model whose answer it was, for that answer alone
    values = lambda data: [(m["variant"], m["task"], m["metric"], m["value"]) for m in data["metrics"]]  # noqa: E731
    assert values(again.data) == values(first.data)
    clean = run_suite(rescored, tmp_path / "run")  # the recomputed row was stored with its checksum
    assert clean.data["provenance"]["store_rows_recomputed"]["checksum mismatch"] == 0


def test_an_edited_task_result_is_scored_again_not_served(tmp_path, model_copy):
    config = suite(model_copy, academic={"tasks": ["tiny_mc"], "limit": 6})
    first = run_suite(config, tmp_path / "run")
    with sqlite3.connect(tmp_path / "run" / "store.sqlite") as conn:
        conn.execute("UPDATE samples SET records = replace(records, '\"value\": 0.', '\"value\": 1.') "
                     "WHERE task_key LIKE 'result:%'")  # fmt: skip
    again = run_suite(config, tmp_path / "run")
    assert again.data["provenance"]["store_rows_recomputed"]["checksum mismatch"] == 2  # baseline and variant
    assert again.data["metrics"] == first.data["metrics"]
    assert all(sum(c.values()) == 0 for c in calls(again).values())  # rescored from the cached answers


def test_a_store_that_is_not_a_database_is_a_clear_error_before_any_model_loads(tmp_path, model_copy):
    from evalsuite.store import StoreError

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "store.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=r"cannot open the run store .*store\.sqlite: .*move the file away"):
        run_suite(suite(model_copy), tmp_path / "run")


def test_a_second_run_on_the_same_directory_is_refused_while_the_first_holds_it(tmp_path, model_copy):
    from evalsuite.runner import RunError, lock_run_dir

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    held = lock_run_dir(run_dir)  # as a first run in progress holds it
    with pytest.raises(RunError, match=rf"{run_dir} is in use by another evalsuite run \(pid {os.getpid()} "):
        run_suite(suite(model_copy), run_dir)
    held.close()
    assert run_suite(suite(model_copy), run_dir).data["variants"]


def test_the_fidelity_panel_is_served_from_the_store_on_a_rerun(tmp_path, model_copy, monkeypatch):
    from evalsuite.suites import fidelity

    config = suite(
        model_copy, academic={"tasks": ["tiny_mc"], "limit": 4}, fidelity={"texts": ["tiny_ppl"], "limit": 4}
    )
    first = run_suite(config, tmp_path / "run")

    def must_not_run(*args, **kwargs):
        raise AssertionError("the fidelity panel was recomputed")

    monkeypatch.setattr(fidelity, "_panel_batch", must_not_run)
    again = run_suite(config, tmp_path / "run")
    assert again.data["suites"]["fidelity"]["W8A8_INT8"] == first.data["suites"]["fidelity"]["W8A8_INT8"]
    assert again.data["variants"]["W8A8_INT8"]["model_calls_by_task"]["fidelity/tiny_ppl"] == 0
    with sqlite3.connect(tmp_path / "run" / "store.sqlite") as conn:  # an edited panel is recomputed, not served
        conn.execute(
            "UPDATE responses SET value = replace(value, 'agree', 'agree ') WHERE rowid IN "
            "(SELECT rowid FROM responses WHERE kind = 'fidelity' LIMIT 1)"
        )
    monkeypatch.undo()
    third = run_suite(config, tmp_path / "run")
    assert third.data["provenance"]["store_rows_recomputed"]["checksum mismatch"] == 1
    assert third.data["suites"]["fidelity"]["W8A8_INT8"] == first.data["suites"]["fidelity"]["W8A8_INT8"]


def test_similarity_scores_are_served_from_the_store_when_the_answers_are_the_same(tmp_path, model_copy, monkeypatch):
    from evalsuite.suites import similarity

    config = suite(model_copy, similarity={"limit": 3, "max_gen_toks": 8})
    first = run_suite(config, tmp_path / "run")

    def must_not_run(*args, **kwargs):
        raise AssertionError("the answers were embedded again")

    monkeypatch.setattr(similarity, "compare", must_not_run)
    assert run_suite(config, tmp_path / "run").data["suites"]["similarity"] == first.data["suites"]["similarity"]


def test_a_rerun_served_from_the_store_loads_and_quantizes_nothing(tmp_path, model_copy, monkeypatch):
    from evalsuite import models

    config = suite(model_copy, ("W8A8_INT8", "W4A16"))
    first = run_suite(config, tmp_path / "run")
    loads = []
    real_load = models.load

    def counted(*args, **kwargs):
        loads.append(args)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(models, "load", counted)
    again = run_suite(config, tmp_path / "run")
    assert loads == []  # no model was loaded, so none was quantized
    assert again.data["metrics"] == first.data["metrics"] and again.data["recovery"] == first.data["recovery"]
    assert {k: v["model_key"] for k, v in again.data["variants"].items()} == {
        k: v["model_key"] for k, v in first.data["variants"].items()
    }
    assert again.data["variants"]["W4A16"]["layers"] == first.data["variants"]["W4A16"]["layers"]
    more = run_suite(suite(model_copy, ("W8A8_INT8", "W4A16", "NVFP4")), tmp_path / "run")
    assert len(loads) == 1 and more.data["variants"]["NVFP4"]["model_calls"] > 0  # the new variant alone


def test_an_edited_model_record_is_not_served_the_model_is_built_again(tmp_path, model_copy):
    config = suite(model_copy, ("W4A16",))
    first = run_suite(config, tmp_path / "run")
    with sqlite3.connect(tmp_path / "run" / "store.sqlite") as conn:
        ratio = """replace(description, '"compression_ratio": ', '"compression_ratio": 9')"""
        conn.execute(f"UPDATE models SET description = {ratio} WHERE description LIKE '%W4A16%'")
    again = run_suite(config, tmp_path / "run")
    assert again.data["provenance"]["store_rows_recomputed"]["checksum mismatch"] == 1
    ratio = again.data["variants"]["W4A16"]["compression_ratio"]
    assert ratio == first.data["variants"]["W4A16"]["compression_ratio"] and ratio < 9
