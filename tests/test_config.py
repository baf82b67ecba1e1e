"""Bad suite files are rejected with the file, the line and the field, before any model loads."""

import textwrap

import pytest

from evalsuite.config import ConfigError, load_suite, parse_suite
from evalsuite.models import ModelLoadError, resolve_model
from evalsuite.suites.task_checks import UnknownTaskError, check_task_names


def write(tmp_path, text):
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_the_demo_suite_loads():
    config = load_suite(None)
    assert config.name == "demo" and config.model.path == "embedded:tiny"
    assert [v.name for v in config.variants][:3] == ["W8A8_INT8", "W8A8_FP8", "W4A16"]


def test_unknown_key_names_file_line_and_field(tmp_path):
    path = write(
        tmp_path,
        """\
        name: t
        variants: [W4A16]
        suites:
          academic:
            tasks: [tiny_mc]
        run:
          batchsize: 8
        """,
    )
    with pytest.raises(ConfigError) as err:
        load_suite(path)
    assert f"{path}:7: run.batchsize: unknown field 'batchsize'" in str(err.value)


def test_wrong_type_names_the_line(tmp_path):
    path = write(
        tmp_path,
        """\
        name: t
        variants: [W4A16]
        suites:
          academic:
            tasks: [tiny_mc]
            limit: many
        """,
    )
    with pytest.raises(ConfigError, match=rf"{path}:6: suites.academic.limit: .*integer"):
        load_suite(path)


def test_unknown_scheme_suggests_a_close_match_with_its_line(tmp_path):
    path = write(
        tmp_path,
        """\
        name: t
        variants:
          - W8A8_INT8
          - W4A16_ASM
        suites:
          academic:
            tasks: [tiny_mc]
        """,
    )
    expected = rf"{path}:4: variants\[1\]\.scheme: unknown scheme 'W4A16_ASM'. Did you mean"
    with pytest.raises(ConfigError, match=expected):
        load_suite(path)


def test_unknown_algorithm_and_reserved_and_duplicate_names(tmp_path):
    with pytest.raises(ConfigError, match="unknown algorithm 'gtpq'"):
        parse_suite(
            {
                "name": "t",
                "variants": [{"scheme": "W4A16", "algorithm": "gtpq"}],
                "suites": {"academic": {"tasks": ["tiny_mc"]}},
            }
        )
    with pytest.raises(ConfigError, match="reserved"):
        parse_suite(
            {
                "name": "t",
                "variants": [{"name": "baseline", "scheme": "W4A16"}],
                "suites": {"academic": {"tasks": ["tiny_mc"]}},
            }
        )
    with pytest.raises(ConfigError, match="repeated: W4A16"):
        parse_suite({"name": "t", "variants": ["W4A16", "W4A16"], "suites": {"academic": {"tasks": ["tiny_mc"]}}})


def test_invalid_inline_scheme_explains_itself():
    with pytest.raises(ConfigError, match="variants\\[0\\].scheme: .*group_size"):
        parse_suite(
            {
                "name": "t",
                "variants": [{"name": "x", "scheme": {"weights": {"strategy": "group"}}}],
                "suites": {"academic": {"tasks": ["tiny_mc"]}},
            }
        )


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, "name: t\nvariants: [W4A16\n")
    with pytest.raises(ConfigError, match=rf"{path}:\d+: not valid YAML"):
        load_suite(path)


def test_missing_suite_file():
    with pytest.raises(ConfigError, match="does not exist.*built-in suite"):
        load_suite("no/such/suite.yaml")


def test_unknown_task_suggests_before_any_model_loads():
    with pytest.raises(UnknownTaskError, match="unknown task 'tiny_arth'. Did you mean 'tiny_arith'"):
        check_task_names(["tiny_mc", "tiny_arth"])


def test_missing_model_path_and_path_without_a_model(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"))
    with pytest.raises(ModelLoadError, match="holds no model"):
        resolve_model(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="holds no weights"):
        resolve_model(str(tmp_path))
