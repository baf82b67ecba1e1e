"""Task names checked as the suite file loads, from lm-eval's task YAML read line by line (evalsuite.task_names):
a typo names its file, line and field with a close match, and never waits for lm-eval's full task index."""

import logging
import os
import textwrap

import pytest

from evalsuite import task_names
from evalsuite.cli import main
from evalsuite.config import ConfigError, load_suite
from evalsuite.task_names import TaskNames, cached_names, read_names, task_problems


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def no_full_index(monkeypatch):
    """lm-eval's full task index (and the TaskManager that builds it) fail if anything asks for them."""

    def fail(*args, **kwargs):
        raise AssertionError("lm-eval's full task index was built")

    monkeypatch.setattr("lm_eval.tasks._index.TaskIndex.build", fail)
    monkeypatch.setattr(task_names, "task_manager", fail)


@pytest.fixture
def cold_cache(monkeypatch, tmp_path):
    """No task names in memory or on disk: the line reader runs."""
    monkeypatch.setattr(task_names, "cache_dir", lambda: tmp_path / "cache")
    task_names.lm_eval_names.cache_clear()
    yield tmp_path / "cache"
    task_names.lm_eval_names.cache_clear()


SUITE = """\
    name: typo
    model:
      path: embedded:tiny
    variants:
      - W8A8_INT8
    suites:
      academic:
        tasks:
          - arc_challenge
          - arc_easyy
          - {name: hellaswg, num_fewshot: 10, metric: acc_norm}
          - name: leaderboard_gpqq
            metric: acc_norm
          - mmlu
    """


def test_task_typos_are_refused_with_file_line_field_and_a_close_match_before_any_model_loads(
    tmp_path, monkeypatch, capsys, no_full_index, cold_cache
):
    def no_model(*args, **kwargs):
        raise AssertionError("a model loaded")

    monkeypatch.setattr("evalsuite.models.load", no_model)
    monkeypatch.setattr("evalsuite.models.resolve_model", no_model)
    path = write(tmp_path / "suite.yaml", SUITE)
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"{path}:10: suites.academic.tasks[1]: unknown task 'arc_easyy'. Did you mean 'arc_easy'?" in err
    assert f"{path}:11: suites.academic.tasks[2].name: unknown task 'hellaswg'. Did you mean 'hellaswag'?" in err
    assert f"{path}:12: suites.academic.tasks[3].name: unknown task 'leaderboard_gpqq'. Did you mean " in err
    assert "arc_challenge" not in err and "mmlu" not in err
    assert list(cold_cache.glob("task-names-*.json")), "the names read are cached on disk"
    assert not (tmp_path / "run").exists()


def test_a_name_with_no_close_match_lists_the_built_in_tasks(no_full_index):
    [(path, message)] = task_problems(["zzzqqq"])
    assert path == ("tasks", 0)
    assert "unknown task 'zzzqqq': neither built in (tiny_arith, tiny_mc, tiny_ppl) nor an lm-eval task" in message


def test_a_missing_include_folder_names_its_line(tmp_path, no_full_index):
    path = write(
        tmp_path / "suite.yaml",
        SUITE.replace("        tasks:", f"        include: [{tmp_path / 'gone'}]\n        tasks:"),
    )
    with pytest.raises(ConfigError, match=r"suite\.yaml:8: suites\.academic\.include\[0\]: .*gone does not exist"):
        load_suite(path)


def test_lm_eval_tasks_groups_and_tags_and_the_preset_suites_pass_without_the_full_index(no_full_index, cold_cache):
    assert task_problems(["arc_easy", "mmlu", "ai2_arc", "leaderboard_gpqa", "tiny_mc"]) == []  # task, group, tag
    for preset in ("openllm_v1", "openllm_v2", "realworld"):
        load_suite(preset)


def test_the_line_reader_names_what_lm_eval_s_index_names():
    """Every task, group and tag of the installed lm-eval, no more and no fewer, and no file it cannot decide on."""
    names = read_names(task_names.lm_eval_tasks_dir())
    assert names.unsure == ()
    assert names.names == set(task_names.task_manager(True).all_tasks)


def test_the_line_reader_registers_names_as_lm_eval_does(tmp_path):
    from lm_eval.tasks import TaskManager

    write(tmp_path / "plain.yaml", "# task: commented_out\ntask: plain_task\ntag: [t_flow_a, 't_flow_b']  # a note\n")
    write(
        tmp_path / "quoted.yaml", '"dataset_name": "x"\n"task": "quoted_task"\ntag:\n  - t_block_a\n  - "t_block_b"\n'
    )
    write(tmp_path / "_base.yaml", "tag: base_tag\noutput_type: multiple_choice\n")
    write(tmp_path / "child.yaml", "include: _base.yaml\ntask: child_task\n")
    write(tmp_path / "named_base", "task: inherited_task\n")  # no .yaml: read only through the include
    write(tmp_path / "inherits.yaml", "include: named_base\nnum_fewshot: 1\n")
    write(tmp_path / "group.yaml", "group: my_group\ntask:\n  - plain_task\n  - task: inline_task\n    x: 1\n")
    write(tmp_path / "old_style.yaml", "group: old_group\ntask: old_task\n")  # lm-eval registers the group only
    write(tmp_path / "python.yaml", "class: !function task.Thing\ntask: py_task\ntag: py_tag\n")
    write(tmp_path / "broken_include.yaml", "include: nowhere.yaml\ntask: skipped_task\n")
    write(tmp_path / "deeper" / "deep.yaml", "task: deep_task\n")
    write(tmp_path / "__pycache__" / "ignored.yaml", "task: ignored_task\n")
    expected = {"plain_task", "t_flow_a", "t_flow_b", "quoted_task", "t_block_a", "t_block_b", "child_task",
                "base_tag", "inherited_task", "my_group", "old_group", "py_task", "py_tag", "deep_task"}  # fmt: skip
    names = read_names(tmp_path)
    assert names.names == expected and names.unsure == ()
    assert set(TaskManager(include_path=str(tmp_path), include_defaults=False).all_tasks) == expected


@pytest.mark.parametrize(
    "text",
    ["task: &anchor anchored\n", "task: >\n  folded\n", 'task: "tab\\there"\n', "task: 12\n", "tag: [a, [b]]\n"],
    ids=["anchor", "folded", "escape", "number", "nested-list"],
)
def test_a_value_the_line_reader_cannot_read_marks_the_file_unsure(tmp_path, text):
    path = write(tmp_path / "odd.yaml", text if text.startswith("task") else "task: fine\n" + text)
    names = read_names(tmp_path)
    assert names.unsure == (str(path),) and not names.names


def test_an_unknown_name_goes_to_the_full_index_when_a_file_was_unsure(monkeypatch, caplog):
    class Manager:
        all_tasks = ["read_task", "late_task"]

    monkeypatch.setattr(task_names, "lm_eval_names", lambda: TaskNames(frozenset({"read_task"}), ("odd.yaml",)))
    monkeypatch.setattr(task_names, "task_manager", lambda include_defaults: Manager())
    with caplog.at_level(logging.INFO, logger="evalsuite"):
        assert task_problems(["read_task", "late_task"]) == []
        [(_, message)] = task_problems(["late_tsk"])
    assert "Did you mean 'late_task'?" in message
    assert "1 lm-eval task files do not read line by line (odd.yaml, ...); building lm-eval's full" in caplog.text


def test_the_cache_is_used_and_invalidated_when_a_folder_or_the_version_changes(tmp_path, monkeypatch):
    monkeypatch.setattr(task_names, "cache_dir", lambda: tmp_path / "cache")
    root = tmp_path / "tasks"
    write(root / "a" / "one.yaml", "task: one\n")
    assert cached_names(root, "1.0").names == {"one"}
    reads = []
    monkeypatch.setattr(task_names, "read_names", lambda folder: reads.append(folder) or read_names(folder))
    assert cached_names(root, "1.0").names == {"one"} and reads == []  # from disk
    write(root / "a" / "two.yaml", "task: two\n")
    assert cached_names(root, "1.0").names == {"one", "two"} and reads == [root]
    write(root / "a" / "b" / "three.yaml", "task: three\n")
    assert cached_names(root, "1.0").names == {"one", "two", "three"} and len(reads) == 2
    assert cached_names(root, "2.0").names == {"one", "two", "three"} and len(reads) == 3
    assert len(os.listdir(tmp_path / "cache")) == 1  # the folder's latest index only, no partial file


def test_a_task_added_to_a_suite_include_folder_is_seen_at_once(tmp_path, no_full_index):
    folder = tmp_path / "mine"
    write(folder / "a.yaml", "task: my_a\n")
    assert task_problems(["my_a"], [str(folder)]) == []
    [(_, message)] = task_problems(["my_b"], [str(folder)])
    assert "unknown task 'my_b'. Did you mean 'my_a'?" in message
    write(folder / "b.yaml", "task: my_b\n")
    assert task_problems(["my_b"], [str(folder)]) == []
