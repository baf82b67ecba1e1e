"""Prompt templates compiled once build the same requests as lm-eval's per-document compilation."""

from lm_eval import utils as lm_utils
from lm_eval.api.model import LM

from evalsuite.bench_tasks import write_task_sets
from evalsuite.suites.academic import evaluate_tasks
from evalsuite.suites.templates import compiled_templates
from evalsuite.task_names import task_manager

SOURCE = "{{question.strip()}}\nA. {{choices[0]}}\nAnswer:"
DOC = {"question": "  Why? ", "choices": ["Because"]}


def test_a_source_is_compiled_once_and_renders_the_same():
    plain = lm_utils.apply_template(SOURCE, DOC)
    with compiled_templates() as compiled:
        first = lm_utils.env.from_string(SOURCE)
        assert lm_utils.env.from_string(SOURCE) is first
        assert [lm_utils.apply_template(SOURCE, DOC) for _ in range(3)] == [plain] * 3
        assert list(compiled) == [SOURCE]
    assert "from_string" not in lm_utils.env.__dict__  # the environment's own method again
    assert lm_utils.env.from_string(SOURCE) is not first


def test_nested_use_restores_the_outer_cache():
    with compiled_templates() as outer:
        outer_from_string = lm_utils.env.from_string
        with compiled_templates() as inner:
            lm_utils.apply_template(SOURCE, DOC)
        assert list(inner) == [SOURCE] and list(outer) == [SOURCE]  # the inner one compiled through the outer one
        assert lm_utils.env.from_string is outer_from_string
    assert "from_string" not in lm_utils.env.__dict__


class _Recorder(LM):
    """Records the requests lm-eval builds and answers them with fixed values."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def loglikelihood(self, requests, disable_tqdm=False):
        self.seen += [r.args for r in requests]
        return [(-1.0, False)] * len(requests)

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        raise NotImplementedError

    def generate_until(self, requests, disable_tqdm=False):
        self.seen += [(r.args[0], repr(r.args[1])) for r in requests]
        return ["42"] * len(requests)


def test_evaluate_builds_the_same_requests_with_templates_compiled_once(tmp_path):
    configs = write_task_sets(tmp_path, 0.002, 0, 3.0, 64)
    tasks = configs["mmlu"] + configs["hellaswag"] + configs["gsm8k"]
    runs = {}
    for once in (False, True):
        lm = _Recorder()
        evaluate_tasks(lm, tasks, None, 3, 1234, task_manager(False), compile_once=once)
        runs[once] = lm.seen
    assert len(runs[True]) > 10 and runs[True] == runs[False]


def test_an_lm_eval_without_the_environment_runs_as_it_is_and_says_so(monkeypatch, caplog):
    monkeypatch.delattr(lm_utils, "env")
    with caplog.at_level("WARNING"), compiled_templates() as compiled:
        pass
    assert compiled == {} and "compiled as lm-eval does" in caplog.text
