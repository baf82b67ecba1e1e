"""Baseline and variant given different prompts (or documents) are refused, with a message that names the
document and shows the first differing text of the two prompts."""

import dataclasses
import hashlib
import re

import pytest

from evalsuite.config import parse_suite
from evalsuite.pairing import ComparabilityError, aligned
from evalsuite.runner import run_suite
from evalsuite.suites import academic


def record(doc_id, prompt, choices=("a", "b"), prompt_hash=None):
    return {
        "doc_id": doc_id,
        "filter": "none",
        "prompt": prompt,
        "choices": list(choices),
        "prompt_hash": prompt_hash or hashlib.sha256(f"{prompt}|{choices}".encode()).hexdigest()[:16],
    }


def test_a_variant_given_another_prompt_template_is_refused_with_the_differing_text(tmp_path, monkeypatch):
    """The variant really is evaluated with another doc_to_text (through lm-eval), as a changed task file
    between the two evaluations would do; building the results must refuse."""
    run_task = academic.run_task

    def reworded(lm, task, *args, **kwargs):
        if lm.label != "baseline":
            task = dataclasses.replace(task, config={**task.config, "doc_to_text": "Q: {{question}}\nAnswer:"})
        return run_task(lm, task, *args, **kwargs)

    monkeypatch.setattr(academic, "run_task", reworded)
    config = parse_suite(
        {
            "name": "s",
            "variants": ["W8A8_INT8"],
            "suites": {"academic": {"tasks": ["tiny_mc"], "limit": 6}},
            "run": {"batch_size": 8, "bootstrap_iters": 0},
        }
    )
    with pytest.raises(ComparabilityError) as caught:
        run_suite(config, tmp_path / "run")
    message = str(caught.value)
    assert message.startswith("academic/tiny_mc (W8A8_INT8): document 0 was given different prompts"), message
    assert "the prompt first differs at character 1: baseline 'Question: What is" in message, message
    assert "vs variant 'Q: What is" in message, message
    assert re.search(r"prompt hash [0-9a-f]{16} vs [0-9a-f]{16}", message), message
    assert "evaluate both with the same task files" in message, message


def test_the_differing_part_is_shown_from_the_middle_of_a_long_prompt():
    shared = "Passage: " + "the river runs to the sea. " * 20
    base = [record(0, "same"), record(7, shared + "Question: which river?\nAnswer:")]
    variant = [record(0, "same"), record(7, shared + "Question: which sea?\nAnswer:")]
    with pytest.raises(ComparabilityError) as caught:
        aligned(base, variant, "academic/t (v)")
    message = str(caught.value)
    at = len(shared) + len("Question: which ")
    assert "document 7 was given different prompts to the baseline and the variant (the prompt first " in message
    assert f"first differs at character {at}:" in message, message
    assert "Question: which river?\\nAnswer:' vs variant '" in message, message
    assert "Question: which sea?\\nAnswer:';" in message, message
    assert "the river runs to the sea. the river" not in message, "the shared start should be left out"


def test_differing_choices_are_shown_when_the_prompts_are_equal():
    base = [record(3, "Question: colour?\nAnswer:", (" red", " blue"))]
    variant = [record(3, "Question: colour?\nAnswer:", (" red", " green"))]
    with pytest.raises(ComparabilityError) as caught:
        aligned(base, variant, "academic/t (v)")
    message = str(caught.value)
    assert "document 3 was given different prompts" in message, message
    assert (
        """the choices first differ at character 11: baseline '[" red", " blue"]' vs variant '[" red", " green"]'"""
        in message
    )


def test_equal_text_with_another_hash_says_another_argument_differs():
    base = [record(1, "Question: 2+2?\nAnswer:", prompt_hash="aaaa")]
    variant = [record(1, "Question: 2+2?\nAnswer:", prompt_hash="bbbb")]
    with pytest.raises(ComparabilityError, match=r"another argument of the request differs \(generation settings\)"):
        aligned(base, variant, "academic/t (v)")


def test_different_documents_are_named():
    base = [record(i, f"p{i}") for i in (0, 1, 2, 3)]
    variant = [record(i, f"p{i}") for i in (0, 1, 5)]
    with pytest.raises(ComparabilityError) as caught:
        aligned(base, variant, "academic/t (v)")
    message = str(caught.value)
    assert "different documents (4 vs 3 records; baseline only: 2, 3; variant only: 5)" in message, message
    assert "same task data and limit" in message, message


def test_same_prompts_in_another_order_are_aligned():
    base = [record(i, f"p{i}") for i in (2, 0, 1)]
    variant = [record(i, f"p{i}") for i in (1, 2, 0)]
    b, v = aligned(base, variant, "academic/t (v)")
    assert [r["doc_id"] for r in b] == [r["doc_id"] for r in v] == [0, 1, 2]


def test_prompt_sets_rendered_differently_are_refused_naming_the_prompt():
    from evalsuite.suites.base import SuiteRun
    from evalsuite.suites.similarity import paired_answers

    base = SuiteRun(outputs={"tiny_chat": (["a", "b", "c"], ["h0", "h1", "h2"])})
    other = SuiteRun(outputs={"tiny_chat": (["a", "b", "c"], ["h0", "x1", "h2"])})
    same = SuiteRun(outputs={"tiny_chat": (["a", "z", "c"], ["h0", "h1", "h2"])})
    runs = {"baseline": base, "W4A16": other, "W8A8_INT8": same}
    assert paired_answers(runs, "W8A8_INT8", "tiny_chat") == (["a", "b", "c"], ["a", "z", "c"])
    with pytest.raises(ComparabilityError, match=r"tiny_chat: prompt 1 reached the baseline and W4A16"):
        paired_answers(runs, "W4A16", "tiny_chat")
