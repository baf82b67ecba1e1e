import pytest

from evalsuite.suites import similarity


def test_identical_answers_score_one_and_different_ones_less():
    refs = ["The frog is a green animal. It is small.", "12 plus 5 is 17."]
    same = similarity.compare(refs, refs)
    for metric in similarity.METRICS:
        assert same[metric] == pytest.approx([1.0, 1.0], abs=1e-4), metric
    other = similarity.compare(refs, ["The frog is a red vehicle. It is big.", "The bus is yellow."])
    for metric in similarity.METRICS:
        assert other[metric][0] < 1.0 and other[metric][1] < other[metric][0], metric


def test_summary_statistics():
    s = similarity.summarize([1.0, 0.5, 0.0, 1.0])
    assert (s["mean"], s["median"], s["min"], s["n"]) == (0.625, 0.75, 0.0, 4)


def test_prompt_files_are_checked_line_by_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "hi"}\n{"text": "no prompt"}\n')
    with pytest.raises(similarity.PromptSetError, match=rf"{path}:2: .*'prompt'"):
        similarity.load_prompts(str(path))
    assert len(similarity.load_prompts("tiny_chat")) == 60
