"""pass@k, opt-in execution, and the code suite's verdicts from real sandboxed runs."""

import pytest

from evalsuite.config import CodeSuite, ConfigError, parse_suite
from evalsuite.suites import code, sandbox


def test_unbiased_pass_at_k():
    assert code.pass_at_k(10, 0, 1) == 0.0
    assert code.pass_at_k(10, 10, 5) == 1.0
    assert code.pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert code.pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    with pytest.raises(ValueError, match="at least 5 samples"):
        code.pass_at_k(2, 1, 5)


def suite(**code_section):
    return {"name": "t", "variants": ["W4A16"], "suites": {"code": code_section}}


def test_execution_is_opt_in_and_checked_before_any_model():
    with pytest.raises(ConfigError, match="allow_code_execution: true"):
        parse_suite(suite(tasks=["tiny_code"]))
    with pytest.raises(ConfigError, match=r"k=\[5\] but n=2"):
        parse_suite(suite(allow_code_execution=True, n=2, k=[1, 5], temperature=0.8))
    with pytest.raises(ConfigError, match="would all be identical"):
        parse_suite(suite(allow_code_execution=True, n=4, k=[1]))


def test_bad_problem_files_name_the_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"task_id": "a", "prompt": "", "test": "", "entry_point": "f"}\n{oops\n')
    with pytest.raises(code.CodeTaskError, match=rf"{path}:2: not valid JSON"):
        code.load_problems(str(path))
    path.write_text('{"task_id": "a", "prompt": ""}\n')
    with pytest.raises(code.CodeTaskError, match=rf"{path}:1: missing field\(s\) test, entry_point"):
        code.load_problems(str(path))
    path.write_text("\n")
    with pytest.raises(code.CodeTaskError, match="holds no problems"):
        code.load_problems(str(path))


class ScriptedLM:
    """Stands in for EvalLM: answers each prompt from a table (the canonical solution, or a wrong one)."""

    def __init__(self, answers):
        self.answers = answers
        self.task_name = ""

    def generate_until(self, requests):
        return [self.answers[r.args[0]] for r in requests]


def test_verdicts_come_from_running_the_tests():
    problems = code.load_problems("tiny_code")[:6]
    config = CodeSuite(allow_code_execution=True, timeout_s=5, workers=2)
    limits = sandbox.Limits(timeout_s=5, sandbox_uid=None)
    right = ScriptedLM({p["prompt"]: p["canonical_solution"] for p in problems})
    result = code.run_code_task(right, "tiny_code", problems, config, 0, limits, None)
    assert result.metrics["pass@1"].value == 1.0 and result.details["passed"] == 6
    wrong = ScriptedLM({p["prompt"]: "    return None\n" for p in problems})
    loop = dict(wrong.answers)
    loop[problems[0]["prompt"]] = "    while True:\n        pass\n"
    result = code.run_code_task(
        ScriptedLM(loop),
        "tiny_code",
        problems,
        config.model_copy(update={"timeout_s": 2}),
        0,
        sandbox.Limits(timeout_s=2, sandbox_uid=None),
        None,
    )
    assert result.metrics["pass@1"].value == 0.0
    assert (result.details["timeout"], result.details["failed"]) == (1, 5)
    assert result.samples[0]["statuses"] == ["timeout"]


def test_a_bad_entry_point_or_test_is_refused_with_the_line_before_any_model(tmp_path):
    path = tmp_path / "p.jsonl"
    good = '{"task_id": "a", "prompt": "", "test": "def check(c):\\n    assert c()\\n", "entry_point": "f"}\n'
    path.write_text(good + good.replace('"entry_point": "f"', '"entry_point": "f(1)"'))
    with pytest.raises(code.CodeTaskError, match=rf"{path}:2: entry_point 'f\(1\)' is not a Python identifier"):
        code.load_problems(str(path))
    path.write_text(good + good.replace("def check(c):", "def check(c)"))
    with pytest.raises(code.CodeTaskError, match=rf"{path}:2: the test does not compile"):
        code.load_problems(str(path))


def test_run_as_nobody_that_cannot_run_python_is_refused_naming_the_suite_key():
    import os

    if os.geteuid() != 0:
        pytest.skip("needs root: run_as applies when the evaluator is root")
    probe = sandbox.Limits(timeout_s=5)
    try:
        sandbox.run_check("def f():\n    return 1\n", "def check(c):\n    assert c() == 1\n", "f", probe)
    except sandbox.SandboxError:
        with pytest.raises(code.CodeTaskError, match=r"suites\.code\.run_as is nobody, but uid 65534 could not"):
            code.sandbox_limits(CodeSuite(allow_code_execution=True, run_as="nobody"))
    else:
        assert code.sandbox_limits(CodeSuite(allow_code_execution=True, run_as="nobody"))[1] is None
