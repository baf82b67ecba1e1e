"""lm-eval task files read by our own loader (evalsuite.yaml_files.load_task_yaml): includes merged as lm-eval
merges them, `!function` tags resolved as lm-eval resolves them, and each broken file named with its line."""

import json
import textwrap
from pathlib import Path

import lm_eval
import pytest

from evalsuite.tasks import TaskFileError, task_config
from evalsuite.yaml_files import load_task_yaml


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


def test_includes_merge_under_the_file_and_functions_resolve_beside_it(tmp_path):
    write(tmp_path / "helpers.py", "def double(doc):\n    return doc * 2\n")
    (tmp_path / "pkg").mkdir()
    write(tmp_path / "pkg" / "more.py", "def triple(doc):\n    return doc * 3\n")
    write(tmp_path / "_base.yaml", "output_type: multiple_choice\nnum_fewshot: 5\ntask_list: [x]\n")
    task = write(
        tmp_path / "t.yaml",
        """\
        include: _base.yaml
        task: t
        num_fewshot: 0
        process_docs: !function helpers.double
        process_results: !function pkg.more.triple
        """,
    )
    config = load_task_yaml(task, TaskFileError)
    assert config["output_type"] == "multiple_choice" and config["num_fewshot"] == 0
    assert "include" not in config and "task_list" not in config  # an included file's task_list stays there
    assert config["process_docs"](2) == 4 and config["process_results"](2) == 6


def test_a_function_of_an_importable_module_resolves(tmp_path):
    task = write(tmp_path / "t.yaml", "task: t\nprocess_docs: !function json.dumps\n")
    assert load_task_yaml(task, TaskFileError)["process_docs"] is json.dumps


def test_an_lm_eval_task_reads_as_lm_eval_reads_it():
    path = Path(lm_eval.__file__).parent / "tasks" / "hellaswag" / "hellaswag.yaml"
    config = load_task_yaml(path, TaskFileError)
    assert config["task"] == "hellaswag"
    assert config["process_docs"].__module__ == "lm_eval.tasks.hellaswag.utils"


def test_the_builtin_tasks_read_with_their_base_file():
    config = task_config("tiny_mc")
    assert config["task"] == "tiny_mc" and "include" not in config
    assert all(path.startswith("/") for path in config["dataset_kwargs"]["data_files"].values())


def test_a_missing_function_names_the_file_line_and_tag(tmp_path):
    write(tmp_path / "helpers.py", "def double(doc):\n    return doc * 2\n")
    task = write(tmp_path / "t.yaml", "task: t\n\nprocess_docs: !function helpers.dubble\n")
    with pytest.raises(TaskFileError, match=r"t\.yaml:3: !function helpers\.dubble: .*helpers\.py defines no dubble"):
        load_task_yaml(task, TaskFileError)
    task = write(tmp_path / "t.yaml", "task: t\nprocess_docs: !function nowhere_module_xyz.f\n")
    with pytest.raises(TaskFileError, match=r"t\.yaml:2: !function nowhere_module_xyz\.f: No module named"):
        load_task_yaml(task, TaskFileError)
    task = write(tmp_path / "t.yaml", "task: t\nprocess_docs: !function double\n")
    with pytest.raises(TaskFileError, match=r"t\.yaml:2: !function double: name the function with its module"):
        load_task_yaml(task, TaskFileError)


def test_a_missing_include_and_an_include_cycle_are_named(tmp_path):
    task = write(tmp_path / "t.yaml", "include: _gone.yaml\ntask: t\n")
    with pytest.raises(TaskFileError, match=r"t\.yaml: include: no file .*_gone\.yaml"):
        load_task_yaml(task, TaskFileError)
    write(tmp_path / "a.yaml", "include: b.yaml\ntask: a\n")
    write(tmp_path / "b.yaml", "include: a.yaml\nnum_fewshot: 1\n")
    with pytest.raises(TaskFileError, match=r"a\.yaml: includes itself through .*a\.yaml -> .*b\.yaml"):
        load_task_yaml(tmp_path / "a.yaml", TaskFileError)


def test_a_repeated_key_is_refused_except_in_lm_eval_s_own_files(tmp_path):
    write(tmp_path / "_base.yaml", "num_fewshot: 0\nnum_fewshot: 5\n")
    task = write(tmp_path / "t.yaml", "include: _base.yaml\ntask: t\n")
    with pytest.raises(TaskFileError, match=r"_base\.yaml:2: num_fewshot repeats line 1"):
        load_task_yaml(task, TaskFileError)
    assert load_task_yaml(task, TaskFileError, repeated_keys=True)["num_fewshot"] == 5  # the last, as lm-eval
