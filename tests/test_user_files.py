"""Every YAML file a user writes (suite, gate, task) refuses a repeated key with file:line; task files are
checked before any model loads; gate files name file:line:field; a NaN recovery cannot pass or fail a gate;
the JUnit file stays valid XML whatever the names hold; a checkpoint lib's errors reach the CLI as user
errors."""

import json
import shutil
import textwrap
from xml.etree import ElementTree

import pytest
import torch
from safetensors.torch import save_file

from evalsuite.cli import main
from evalsuite.config import ConfigError, load_suite
from evalsuite.gating import GateConfig, GateConfigError, Rule, evaluate_gate, load_gate_config
from evalsuite.suites.task_checks import TaskDataError, UnknownTaskError, check_task_file, check_task_names
from evalsuite.tasks import ACADEMIC_DIR

SUITE = """\
name: t
variants: [W4A16]
suites:
  academic:
    tasks: [tiny_mc]
run:
  batch_size: 8
  seed: 1
  batch_size: 16
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_a_repeated_key_in_a_suite_file_names_both_lines(tmp_path):
    path = write(tmp_path, "suite.yaml", SUITE)
    with pytest.raises(ConfigError) as err:
        load_suite(path)
    assert f"{path}:9: run.batch_size repeats line 7; keep one" in str(err.value)
    repeated_list = SUITE.replace("run:\n  batch_size: 8\n  seed: 1\n  batch_size: 16\n", "variants: [W8A8_INT8]\n")
    path = write(tmp_path, "suite.yaml", repeated_list)
    with pytest.raises(ConfigError, match=rf"{path}:6: variants repeats line 2"):
        load_suite(path)


def test_a_repeated_key_in_a_gate_file_is_refused_not_the_last_one_kept(tmp_path, capsys):
    path = write(tmp_path, "gate.yaml", "rules:\n  - task: tiny_mc\n    min_recovery: 101\n    min_recovery: 50\n")
    with pytest.raises(GateConfigError, match=rf"{path}:4: rules\[0\]\.min_recovery repeats line 3"):
        load_gate_config(path)
    row = {"scope": "task", "suite": "academic", "task": "tiny_mc", "metric": "acc", "variant": "v",
           "primary": True, "recovery": 0.9, "ci_low": None, "ci_high": None}  # fmt: skip
    (tmp_path / "results.json").write_text(
        json.dumps({"schema_version": 1, "variants": {"baseline": {}, "v": {}}, "recovery": [row]})
    )
    assert main(["gate", str(tmp_path), "--config", str(path)]) == 2  # the last value (50) would pass
    assert "min_recovery repeats line 3" in capsys.readouterr().out
    path.write_text("rules:\n  - task: tiny_mc\n    min_recovery: 50\n")
    assert main(["gate", str(tmp_path), "--config", str(path)]) == 0


def test_gate_file_errors_name_file_line_and_field(tmp_path):
    path = write(tmp_path, "gate.yaml", "use: point\nrules:\n  - task: tiny_mc\n    min_recovry: 99\n")
    with pytest.raises(GateConfigError) as err:
        load_gate_config(path)
    assert f"{path}:4: rules[0].min_recovry: unknown field 'min_recovry'" in str(err.value)
    path = write(tmp_path, "gate.yaml", "use: middle\nrules: []\n")
    with pytest.raises(GateConfigError, match=rf"{path}:1: use: "):
        load_gate_config(path)
    path = write(tmp_path, "gate.yaml", "rules:\n  - task: tiny_mc\n    min_recovery: 0.99\n")
    with pytest.raises(GateConfigError, match=rf"{path}:3: rules\[0\]: min_recovery is a percentage"):
        load_gate_config(path)
    path = write(tmp_path, "gate.yaml", "- 99\n")
    with pytest.raises(GateConfigError, match=rf"{path}: a gate file is a mapping"):
        load_gate_config(path)


def _task_folder(tmp_path, mutate):
    folder = tmp_path / "tasks"
    folder.mkdir()
    text = (ACADEMIC_DIR / "tiny_mc.yaml").read_text().replace("task: tiny_mc", "task: my_mc")
    for data in [*ACADEMIC_DIR.glob("tiny_mc*.jsonl"), ACADEMIC_DIR / "_tiny_base.yaml"]:
        shutil.copy(data, folder / data.name)
    (folder / "my_mc.yaml").write_text(mutate(text))
    return folder


def test_a_task_file_with_a_misspelt_or_repeated_key_is_refused_before_any_model_loads(tmp_path):
    folder = _task_folder(tmp_path, lambda t: t.replace("doc_to_text:", "doc_to_txt:"))
    with pytest.raises(TaskDataError, match=r"my_mc\.yaml:\d+: unknown task field 'doc_to_txt'\. Did you mean "):
        check_task_file(folder / "my_mc.yaml")
    again = tmp_path / "again"
    again.mkdir()
    repeated = (folder / "my_mc.yaml").read_text().replace("doc_to_txt:", "doc_to_text:") + "task: other_mc\n"
    (again / "my_mc.yaml").write_text(repeated)
    with pytest.raises(UnknownTaskError, match=r"my_mc\.yaml:\d+: task repeats line \d+"):
        check_task_names(["my_mc"], (str(again),))


def test_the_built_in_task_files_pass_the_check():
    for path in ACADEMIC_DIR.glob("*.yaml"):
        check_task_file(path)


def test_a_nan_recovery_leaves_the_gate_undecided():
    nan_row = {"scope": "suite", "suite": "academic", "task": None, "metric": "average", "variant": "v",
               "primary": True, "recovery": float("nan"), "ci_low": None, "ci_high": None}  # fmt: skip
    data = {"variants": {"baseline": {}, "v": {}}, "recovery": [nan_row]}
    for threshold in (50, 101):
        outcome = evaluate_gate(data, GateConfig(rules=[Rule(min_recovery=threshold)]))
        assert outcome.exit_code == 2
        assert "not a number" in outcome.checks[0].reason


def test_junit_stays_valid_xml_with_control_characters_in_names(tmp_path):
    row = {"scope": "task", "suite": "academic", "task": "tiny\x07mc\x1b[0m", "metric": "acc", "variant": "v\x00",
           "primary": True, "recovery": 0.9, "ci_low": None, "ci_high": None}  # fmt: skip
    (tmp_path / "results.json").write_text(
        json.dumps({"schema_version": 1, "variants": {"baseline": {}, "v": {}}, "recovery": [row]})
    )
    junit = tmp_path / "junit.xml"
    assert main(["gate", str(tmp_path), "--min-recovery", "95", "--junit", str(junit)]) == 1
    case = ElementTree.parse(junit).getroot().find("testcase")
    assert case.get("name") == "v\\x00: tiny\\x07mc\\x1b[0m acc"


def test_a_checkpoint_with_two_config_groups_is_refused_before_any_model_loads(tmp_path, capsys):
    from evalsuite.config import parse_suite
    from evalsuite.models import resolve_model
    from evalsuite.variants import RunError, checkpoint_source

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    groups = {"a": {"targets": ["Linear"]}, "b": {"targets": ["Linear"]}}
    qc = {"quant_method": "compressed-tensors", "config_groups": groups}
    (ckpt / "config.json").write_text(json.dumps({"model_type": "llama", "quantization_config": qc}))
    save_file({"lm_head.weight": torch.zeros(2, 2)}, str(ckpt / "model.safetensors"))
    suite = {"name": "x", "model": {"path": "embedded:tiny"}, "variants": [{"name": "c", "path": str(ckpt)}],
             "suites": {"academic": {"tasks": ["tiny_mc"]}}}  # fmt: skip
    config = parse_suite(suite)
    with pytest.raises(
        RunError, match=r"variant 'c': .*has 2 config groups; several groups are supported when each names"
    ):
        checkpoint_source(config.variants[0], resolve_model("embedded:tiny"))


def test_a_row_missing_a_field_the_templates_read_is_refused_with_its_line(tmp_path):
    from evalsuite.config import AcademicSuite
    from evalsuite.suites.academic import resolve_tasks

    folder = _task_folder(tmp_path, lambda t: t)
    data = folder / "tiny_mc.jsonl"
    rows = data.read_text().splitlines()
    broken = json.loads(rows[2])
    del broken["question"]
    rows[2] = json.dumps(broken)
    data.write_text("\n".join(rows) + "\n")
    with pytest.raises(TaskDataError, match=rf"{data}:3: the document has no field 'question', which the task's "):
        resolve_tasks(AcademicSuite(tasks=["my_mc"], include=[str(folder)]))


def test_a_hub_task_without_data_dir_and_without_the_hub_is_refused_before_any_model_loads(monkeypatch, tmp_path):
    from evalsuite.config import AcademicSuite
    from evalsuite.suites.academic import resolve_tasks
    from evalsuite.suites.local_data import LocalDataError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache" / "hub"))
    with pytest.raises(LocalDataError, match=r"'arc_challenge' reads allenai/ai2_arc from the Hugging Face hub.*"
                       r"give the task a data_dir"):  # fmt: skip
        resolve_tasks(AcademicSuite(tasks=["arc_challenge"]))
    cached = tmp_path / "empty-cache" / "hub" / "datasets--allenai--ai2_arc"
    cached.mkdir(parents=True)
    assert resolve_tasks(AcademicSuite(tasks=["arc_challenge"]))[0].name == "arc_challenge"


@pytest.mark.parametrize("loader", ["prompts", "texts", "problems", "calibration"])
def test_every_jsonl_reader_names_the_line_of_a_row_that_is_not_an_object(tmp_path, loader):
    from evalsuite import calibration
    from evalsuite.suites import code, fidelity, similarity

    path = tmp_path / "set.jsonl"
    path.write_text('{"prompt": "a", "text": "b"}\n\n[1, 2]\n')
    read = {"prompts": similarity.load_prompts, "texts": fidelity.load_texts, "problems": code.load_problems,
            "calibration": calibration.load_texts}[loader]  # fmt: skip
    with pytest.raises(ValueError, match=rf"{path}:3: each line must be a JSON object, not list"):
        read(str(path))
