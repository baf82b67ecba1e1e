"""Evaluation sets and the training stream for the embedded model, with evaluation items held out.

The evaluation sets are drawn first from their own seeded generator. The training stream then rejects any
item whose key (question, arithmetic pair, code prompt, chat message or story text) appears in them, in
any format, so every evaluation prompt is unseen during training.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import code_problems, world

EVAL_SEED = 20261123
EVAL_SIZES = {"mc": 300, "arith": 250, "ppl": 60, "code": 40, "chat": 60, "judge": 40}


@dataclass
class EvalSets:
    mc: list[world.Choice] = field(default_factory=list)
    arith: list[world.Sum] = field(default_factory=list)
    ppl: list[str] = field(default_factory=list)
    code: list[code_problems.Function] = field(default_factory=list)
    chat: list[tuple[str, str]] = field(default_factory=list)
    judge: list[tuple[str, str]] = field(default_factory=list)

    def held_out(self) -> set[str]:
        keys = {item.key for item in self.mc} | {item.key for item in self.arith} | set(self.ppl)
        keys |= {item.arith_key for item in self.mc if item.arith_key}
        keys |= {item.key for item in self.code}
        keys |= {user for user, _ in self.chat} | {user for user, _ in self.judge}
        keys |= {arith_key_of(user) for user, _ in self.chat + self.judge} - {None}
        return keys


def arith_key_of(question: str) -> str | None:
    """The arithmetic key behind a chat question such as 'What is 3 plus 4?', so held-out pairs stay out."""
    parts = question.removeprefix("What is ").rstrip("?").split()
    if not question.startswith("What is ") or len(parts) != 3:
        return None
    return f"{parts[1]}:{parts[0]}:{parts[2]}"


def _distinct(draw, n: int, key=lambda item: item.key) -> list:
    seen, items = set(), []
    while len(items) < n:
        item = draw()
        if key(item) not in seen:
            seen.add(key(item))
            items.append(item)
    return items


def build_eval_sets(seed: int = EVAL_SEED) -> EvalSets:
    rng = random.Random(seed)
    sets = EvalSets()
    sets.mc = _distinct(lambda: world.mc_item(rng), EVAL_SIZES["mc"])
    sets.arith = _distinct(lambda: world.arith_item(rng), EVAL_SIZES["arith"])
    sets.ppl = _distinct(lambda: " ".join(world.story(rng) for _ in range(3)), EVAL_SIZES["ppl"], key=str)
    sets.code = _distinct(lambda: code_problems.code_item(rng), EVAL_SIZES["code"])
    sets.chat = _distinct(lambda: world.chat_prompt_for(rng), EVAL_SIZES["chat"], key=lambda c: c[0])

    def factual():
        return world.fact_question(rng.choice(sorted(world.LEXICON)), rng.choice(world.FACT_QUESTIONS))

    chat_users = {user for user, _ in sets.chat}
    judge = _distinct(factual, EVAL_SIZES["judge"] + len(chat_users), key=lambda c: c[0])
    sets.judge = [item for item in judge if item[0] not in chat_users][: EVAL_SIZES["judge"]]
    return sets


def training_documents(seed: int, held_out: set[str]) -> Iterator[str | tuple[str, str]]:
    """An endless stream of training documents, none of which contains a held-out evaluation item. A code
    document comes as (prompt, body): the trainer tokenizes the two apart, as evaluation will see them."""
    rng = random.Random(seed)
    kinds = ["arith", "mc", "story", "facts", "code", "chat", "judge"]
    weights = [0.22, 0.22, 0.10, 0.05, 0.14, 0.12, 0.15]
    while True:
        kind = rng.choices(kinds, weights)[0]
        if kind == "arith":
            item = world.arith_item(rng)
            if item.key not in held_out:
                yield f"{world.arith_prompt(item)} {world.arith_answer(item)}"
        elif kind == "mc":
            item = world.mc_item(rng)
            if item.key not in held_out and item.arith_key not in held_out:
                yield f"{world.mc_prompt(item)} {item.choices[item.gold]}"
        elif kind == "story":
            text = " ".join(world.story(rng) for _ in range(rng.randint(1, 3)))
            if text not in held_out:
                yield text
        elif kind == "facts":
            yield world.fact_sheet(rng)
        elif kind == "code":
            item = code_problems.code_item(rng)
            if item.key not in held_out:
                yield item.prompt, item.body
        elif kind == "chat":
            user, answer = world.chat_prompt_for(rng)
            if user not in held_out and arith_key_of(user) not in held_out:
                yield world.chat_text(user, answer)
        else:
            prompt, verdict = world.judge_item(rng)
            question = prompt.split("\n", 1)[0].removeprefix("Question: ")
            if question not in held_out and arith_key_of(question) not in held_out:
                yield prompt + verdict


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def write_eval_files(sets: EvalSets, tasks_dir: Path) -> None:
    """Write the evaluation sets as the built-in task data under `tasks/`."""
    write_jsonl(
        tasks_dir / "academic" / "tiny_mc.jsonl",
        [{"kind": m.kind, "question": m.question, "choices": list(m.choices), "gold": m.gold} for m in sets.mc],
    )
    write_jsonl(
        tasks_dir / "academic" / "tiny_arith.jsonl",
        [{"question": a.question, "answer": str(a.value), "worked": world.arith_answer(a)} for a in sets.arith],
    )
    write_jsonl(tasks_dir / "academic" / "tiny_ppl.jsonl", [{"text": t} for t in sets.ppl])
    write_jsonl(
        tasks_dir / "code" / "tiny_code.jsonl",
        [
            {
                "task_id": f"tiny_code/{i}",
                "prompt": f.prompt,
                "canonical_solution": f.body,
                "test": "def check(candidate):\n" + "".join(f"    {t}\n" for t in f.tests),
                "entry_point": f.name,
            }
            for i, f in enumerate(sets.code)
        ],
    )
    write_jsonl(
        tasks_dir / "similarity" / "tiny_chat.jsonl",
        [{"id": f"tiny_chat/{i}", "prompt": u, "reference": r} for i, (u, r) in enumerate(sets.chat)],
    )
    write_jsonl(
        tasks_dir / "calibration" / "tiny_calib.jsonl", [{"text": t} for t in calibration_texts(sets.held_out())]
    )
    write_jsonl(
        tasks_dir / "judge" / "tiny_arena.jsonl",
        [{"id": f"tiny_arena/{i}", "prompt": u, "reference": r} for i, (u, r) in enumerate(sets.judge)],
    )


def calibration_texts(held_out: set[str], n: int = 128, words: int = 160, seed: int = 4242) -> list[str]:
    """Texts from the training distribution (never evaluation items) for calibrating quantization."""
    docs = training_documents(seed, held_out)
    texts = []
    while len(texts) < n:
        parts, count = [], 0
        while count < words:
            doc = next(docs)
            doc = "".join(doc) if isinstance(doc, tuple) else doc
            parts.append(doc)
            count += len(doc.split())
        texts.append("\n\n".join(parts))
    return texts
