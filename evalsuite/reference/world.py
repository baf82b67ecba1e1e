"""A small synthetic world: the facts, rules and text formats the embedded model learns.

Every built-in task asks about this world, so the embedded model can have a real baseline on all of them:
numbers (comparison, addition, subtraction), a lexicon of nouns with fixed categories and colours, short
stories, chat answers and pairwise verdicts (the tiny Python functions are in `code_problems.py`). Each
generator takes a `random.Random` and returns one item; `corpus.py` decides which items are held out for
evaluation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# noun -> (category, colour, size)
LEXICON: dict[str, tuple[str, str, str]] = {
    "dog": ("animal", "brown", "big"),
    "cat": ("animal", "gray", "small"),
    "frog": ("animal", "green", "small"),
    "horse": ("animal", "black", "big"),
    "duck": ("animal", "white", "small"),
    "fox": ("animal", "orange", "small"),
    "bear": ("animal", "brown", "big"),
    "crow": ("animal", "black", "small"),
    "pig": ("animal", "pink", "big"),
    "apple": ("fruit", "red", "small"),
    "banana": ("fruit", "yellow", "small"),
    "grape": ("fruit", "purple", "small"),
    "lemon": ("fruit", "yellow", "small"),
    "orange": ("fruit", "orange", "small"),
    "melon": ("fruit", "green", "big"),
    "cherry": ("fruit", "red", "small"),
    "plum": ("fruit", "purple", "small"),
    "carrot": ("vegetable", "orange", "small"),
    "pea": ("vegetable", "green", "small"),
    "onion": ("vegetable", "white", "small"),
    "pumpkin": ("vegetable", "orange", "big"),
    "beet": ("vegetable", "purple", "small"),
    "cabbage": ("vegetable", "green", "big"),
    "potato": ("vegetable", "brown", "small"),
    "hammer": ("tool", "gray", "small"),
    "saw": ("tool", "silver", "small"),
    "shovel": ("tool", "black", "big"),
    "rake": ("tool", "green", "big"),
    "wrench": ("tool", "silver", "small"),
    "drill": ("tool", "yellow", "small"),
    "ladder": ("tool", "gray", "big"),
    "car": ("vehicle", "blue", "big"),
    "bus": ("vehicle", "yellow", "big"),
    "truck": ("vehicle", "red", "big"),
    "boat": ("vehicle", "white", "big"),
    "bike": ("vehicle", "blue", "small"),
    "train": ("vehicle", "black", "big"),
    "tractor": ("vehicle", "green", "big"),
    "drum": ("instrument", "red", "big"),
    "flute": ("instrument", "silver", "small"),
    "guitar": ("instrument", "brown", "big"),
    "violin": ("instrument", "brown", "small"),
    "piano": ("instrument", "black", "big"),
    "bell": ("instrument", "gold", "small"),
    "harp": ("instrument", "gold", "big"),
}
CATEGORIES = sorted({c for c, _, _ in LEXICON.values()})
COLORS = sorted({c for _, c, _ in LEXICON.values()})
PLACES = {
    "animal": "farm",
    "fruit": "orchard",
    "vegetable": "garden",
    "tool": "shed",
    "vehicle": "street",
    "instrument": "hall",
}
NAMES = ["Tom", "Ana", "Ben", "Mia", "Sam", "Lea", "Max", "Zoe", "Leo", "Ivy", "Kim", "Raj"]
ORDINAL_WORDS = {"plus": "+", "minus": "-", "times": "*"}


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def plural_or(items: list[str]) -> str:
    return ", ".join(items[:-1]) + " or " + items[-1]


def describe(noun: str) -> str:
    """The one true description of a noun: what the chat suite expects and the judge checks."""
    category, color, size = LEXICON[noun]
    return (
        f"The {noun} is {article(color)} {color} {category}. It is {size}. You can find it in the {PLACES[category]}."
    )


# --- arithmetic ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sum:
    op: str
    a: int
    b: int

    @property
    def value(self) -> int:
        return self.a + self.b if self.op == "plus" else self.a - self.b

    @property
    def key(self) -> str:
        return f"{self.op}:{self.a}:{self.b}"

    @property
    def question(self) -> str:
        return f"What is {self.a} {self.op} {self.b}?"


def arith_item(rng: random.Random) -> Sum:
    a, b = rng.randrange(100), rng.randrange(100)
    if rng.random() < 0.5:
        return Sum("plus", a, b)
    return Sum("minus", max(a, b), min(a, b))


def arith_prompt(item: Sum) -> str:
    return f"Question: {item.question}\nAnswer:"


def arith_answer(item: Sum) -> str:
    """A worked answer, digit by digit, ending in 'The answer is N.' (what the exact-match filter reads)."""
    (a1, a0), (b1, b0) = divmod(item.a, 10), divmod(item.b, 10)
    if item.op == "plus":
        low = a0 + b0
        if low >= 10:
            steps = f"{a0} plus {b0} is {low}, write {low - 10} carry 1. {a1} plus {b1} plus 1 is {a1 + b1 + 1}."
        else:
            steps = f"{a0} plus {b0} is {low}, write {low}. {a1} plus {b1} is {a1 + b1}."
    elif a0 >= b0:
        steps = f"{a0} minus {b0} is {a0 - b0}. {a1} minus {b1} is {a1 - b1}."
    else:
        borrow = f"{a0} minus {b0} needs a borrow: {a0 + 10} minus {b0} is {a0 + 10 - b0}."
        steps = f"{borrow} {a1} minus 1 minus {b1} is {a1 - 1 - b1}."
    return f"{steps} The answer is {item.value}."


# --- multiple choice -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """One multiple-choice question. `key` identifies it for hold-out; `gold` indexes `choices`."""

    kind: str
    question: str
    choices: tuple[str, ...]
    gold: int
    arith_key: str | None = None  # the arithmetic pair behind a sum question, held out with it

    @property
    def key(self) -> str:
        return self.question


def mc_extreme(rng: random.Random) -> Choice:
    numbers = rng.sample(range(100), 4)
    largest = rng.random() < 0.5
    word = "largest" if largest else "smallest"
    target = max(numbers) if largest else min(numbers)
    question = f"Which number is the {word}: {plural_or([str(n) for n in numbers])}?"
    return Choice("extreme", question, tuple(str(n) for n in numbers), numbers.index(target))


def mc_category(rng: random.Random) -> Choice:
    categories = rng.sample(CATEGORIES, 4)
    words = [rng.choice([n for n, (c, _, _) in LEXICON.items() if c == cat]) for cat in categories]
    order = list(range(4))
    rng.shuffle(order)
    shuffled = [words[i] for i in order]
    question = f"Which of these is {article(categories[0])} {categories[0]}: {plural_or(shuffled)}?"
    return Choice("category", question, tuple(shuffled), order.index(0))


def mc_color(rng: random.Random) -> Choice:
    noun = rng.choice(sorted(LEXICON))
    color = LEXICON[noun][1]
    options = [color] + rng.sample([c for c in COLORS if c != color], 3)
    rng.shuffle(options)
    question = f"What color is {article(noun)} {noun}: {plural_or(options)}?"
    return Choice("color", question, tuple(options), options.index(color))


def mc_sum(rng: random.Random) -> Choice:
    item = arith_item(rng)
    value = item.value
    options = {value}
    while len(options) < 4:
        wrong = value + rng.choice([-11, -10, -9, -2, -1, 1, 2, 9, 10, 11])
        if wrong >= 0:
            options.add(wrong)
    options = sorted(options)
    rng.shuffle(options)
    question = f"{item.question.rstrip('?')}: {plural_or([str(o) for o in options])}?"
    return Choice("sum", question, tuple(str(o) for o in options), options.index(value), item.key)


MC_KINDS = (mc_extreme, mc_category, mc_color, mc_sum)


def mc_item(rng: random.Random) -> Choice:
    return rng.choice(MC_KINDS)(rng)


def mc_prompt(item: Choice) -> str:
    return f"Question: {item.question}\nAnswer:"


# --- prose ---------------------------------------------------------------------------------------------


def story(rng: random.Random, hero: str | None = None, noun: str | None = None) -> str:
    hero = hero or rng.choice(NAMES)
    friend = rng.choice([n for n in NAMES if n != hero])
    noun = noun or rng.choice(sorted(LEXICON))
    category, color, size = LEXICON[noun]
    place = PLACES[category]
    sentences = [f"{hero} saw {article(color)} {color} {noun} in the {place}."]
    events = {
        "animal": [f"The {noun} was {size} and friendly.", f"{hero} gave the {noun} some water."],
        "fruit": [f"{hero} picked the {noun} and ate it.", f"The {noun} was sweet."],
        "vegetable": [f"{hero} cooked the {noun} for dinner.", f"The {noun} was fresh."],
        "tool": [f"{hero} used the {noun} to fix the fence.", f"The {noun} was {size} and heavy."],
        "vehicle": [f"{hero} drove the {noun} to town.", f"The {noun} was fast."],
        "instrument": [f"{hero} played the {noun} for {friend}.", f"The {noun} sounded nice."],
    }[category]
    sentences += rng.sample(events, rng.randint(1, 2))
    other = rng.choice([n for n in LEXICON if n != noun])
    o_cat, o_color, _ = LEXICON[other]
    sentences.append(f"Then {friend} brought {article(o_color)} {o_color} {other} from the {PLACES[o_cat]}.")
    sentences.append(
        rng.choice(
            [
                f"{hero} and {friend} were happy.",
                f"At night {hero} went home.",
                f"{friend} said thank you to {hero}.",
                f"It was a good day for {hero}.",
            ]
        )
    )
    return " ".join(sentences)


def fact_sheet(rng: random.Random) -> str:
    noun = rng.choice(sorted(LEXICON))
    category, color, size = LEXICON[noun]
    facts = [
        f"{article(noun).capitalize()} {noun} is {article(category)} {category}.",
        f"The {noun} is {color}.",
        f"The {noun} is {size}.",
        f"You can find {article(noun)} {noun} in the {PLACES[category]}.",
    ]
    rng.shuffle(facts)
    return " ".join(facts)


# --- chat and judging ----------------------------------------------------------------------------------


FACT_QUESTIONS = ("color", "kind", "size", "place")


def fact_question(noun: str, kind: str) -> tuple[str, str]:
    """A short question about one fact of a noun, and its one true answer."""
    category, color, size = LEXICON[noun]
    return {
        "color": (f"What color is the {noun}?", f"The {noun} is {color}."),
        "kind": (f"What kind of thing is the {noun}?", f"The {noun} is {article(category)} {category}."),
        "size": (f"Is the {noun} big or small?", f"The {noun} is {size}."),
        "place": (f"Where can you find the {noun}?", f"You can find the {noun} in the {PLACES[category]}."),
    }[kind]


def chat_prompt_for(rng: random.Random) -> tuple[str, str]:
    """A user message and its reference answer."""
    kind = rng.random()
    if kind < 0.3:
        noun = rng.choice(sorted(LEXICON))
        return f"Tell me about the {noun}.", describe(noun)
    if kind < 0.55:
        return fact_question(rng.choice(sorted(LEXICON)), rng.choice(FACT_QUESTIONS))
    if kind < 0.75:
        item = arith_item(rng)
        return item.question, arith_answer(item)
    hero, noun = rng.choice(NAMES), rng.choice(sorted(LEXICON))
    return f"Write a short story about {hero} and the {noun}.", story(rng, hero=hero, noun=noun)


def chat_text(user: str, assistant: str) -> str:
    return f"User: {user}\nAssistant: {assistant}\n"


CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}User: {{ message['content'] }}\n"
    "{% elif message['role'] == 'assistant' %}Assistant: {{ message['content'] }}\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def wrong_fact(rng: random.Random, noun: str, kind: str) -> str:
    """A plausible but wrong answer to a fact question, for judge training."""
    category, color, size = LEXICON[noun]
    if kind == "color":
        return f"The {noun} is {rng.choice([c for c in COLORS if c != color])}."
    if kind == "kind":
        other = rng.choice([c for c in CATEGORIES if c != category])
        return f"The {noun} is {article(other)} {other}."
    if kind == "size":
        return f"The {noun} is {'small' if size == 'big' else 'big'}."
    place = rng.choice([p for c, p in PLACES.items() if c != category])
    return f"You can find the {noun} in the {place}."


JUDGE_VERDICTS = ("[[A>B]]", "[[B>A]]", "[[A=B]]")


def judge_prompt(question: str, answer_a: str, answer_b: str) -> str:
    return f"Question: {question}\nAnswer A: {answer_a}\nAnswer B: {answer_b}\nVerdict:"


def judge_item(rng: random.Random) -> tuple[str, str]:
    """A judging prompt over two answers to a fact question, and the worked verdict: the correct answer wins;
    two correct or two wrong answers tie."""
    noun, kind = rng.choice(sorted(LEXICON)), rng.choice(FACT_QUESTIONS)
    question, answer = fact_question(noun, kind)
    a_ok, b_ok = rng.random() < 0.5, rng.random() < 0.5
    answer_a = answer if a_ok else wrong_fact(rng, noun, kind)
    answer_b = answer if b_ok else wrong_fact(rng, noun, kind)
    return judge_prompt(question, answer_a, answer_b), " " + judge_reasoning(answer, answer_a, answer_b)


def judge_reasoning(truth: str, answer_a: str, answer_b: str) -> str:
    """The judge's worked verdict: recall the fact, check each answer against it, then the label."""
    a_ok, b_ok = answer_a == truth, answer_b == truth
    verdict = "[[A=B]]" if a_ok == b_ok else ("[[A>B]]" if a_ok else "[[B>A]]")
    return f"{truth} A is {'right' if a_ok else 'wrong'}. B is {'right' if b_ok else 'wrong'}. {verdict}"
