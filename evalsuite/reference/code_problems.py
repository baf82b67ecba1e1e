"""The tiny Python functions of the embedded model's world (HumanEval format): a signature with a docstring,
the reference body, and asserts on `candidate`. `code_item` takes a `random.Random` and returns one problem;
`corpus.py` decides which are held out for evaluation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Function:
    """A HumanEval-style problem: `prompt` is the signature and docstring, `body` the reference solution."""

    name: str
    prompt: str
    body: str
    tests: tuple[str, ...]

    @property
    def key(self) -> str:
        return self.prompt


_ARG_FAMILIES = {
    # family: (docstring with {k}, body with {k}, python function to build test expectations)
    "add": ("Return x plus {k}.", "return x + {k}", lambda x, k: x + k),
    "sub": ("Return x minus {k}.", "return x - {k}", lambda x, k: x - k),
    "mul": ("Return x times {k}.", "return x * {k}", lambda x, k: x * k),
    "above": ("Return True if x is greater than {k}.", "return x > {k}", lambda x, k: x > k),
    "divisible": ("Return True if x is divisible by {k}.", "return x % {k} == 0", lambda x, k: x % k == 0),
}
_LIST_FAMILIES = {
    "total": ("Return the sum of the list.", "return sum({a})", sum),
    "largest": ("Return the largest item of the list.", "return max({a})", max),
    "smallest": ("Return the smallest item of the list.", "return min({a})", min),
    "count": ("Return the number of items in the list.", "return len({a})", len),
    "first": ("Return the first item of the list.", "return {a}[0]", lambda v: v[0]),
    "last": ("Return the last item of the list.", "return {a}[-1]", lambda v: v[-1]),
    "reverse": ("Return the list in reverse order.", "return {a}[::-1]", lambda v: v[::-1]),
    "sort": ("Return the list sorted from small to large.", "return sorted({a})", sorted),
}
_LIST_ARGS = ["xs", "items", "values", "nums", "data"]
_LIST_NAMES = ["get", "find", "compute", "make", "list"]


def code_item(rng: random.Random) -> Function:
    if rng.random() < 0.6:
        family = rng.choice(sorted(_ARG_FAMILIES))
        doc, body, fn = _ARG_FAMILIES[family]
        k = rng.randint(1, 30)
        name = f"{family}_{k}"
        prompt = f'def {name}(x):\n    """{doc.format(k=k)}"""\n'
        probes = [0, 1, 7, 12, 45, 60]
        tests = tuple(f"assert candidate({x}) == {fn(x, k)!r}" for x in probes)
        return Function(name, prompt, f"    {body.format(k=k)}\n", tests)
    family = rng.choice(sorted(_LIST_FAMILIES))
    doc, body, fn = _LIST_FAMILIES[family]
    arg = rng.choice(_LIST_ARGS)
    name = f"{rng.choice(_LIST_NAMES)}_{family}"
    prompt = f'def {name}({arg}):\n    """{doc}"""\n'
    probes = [[3, 1, 2], [5], [4, 9, 9, 0, 2], [10, -3, 8]]
    tests = tuple(f"assert candidate({p!r}) == {fn(list(p))!r}" for p in probes)
    return Function(name, prompt, f"    {body.format(a=arg)}\n", tests)
