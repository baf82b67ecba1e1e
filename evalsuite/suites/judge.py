"""The judge suite (Arena-Hard style): a judge compares a variant's answer with the baseline's answer to the
same prompt, twice with the positions swapped, through a strict verdict template. Unparseable verdicts are
counted and excluded; the result is win/tie/loss counts and a win-rate with a bootstrap interval.

Judges: a local causal LM through `EvalLM` (`model: embedded:tiny` or a Hugging Face directory), or any
OpenAI-compatible chat-completions endpoint (`endpoint: http://host/v1`, key from the environment variable
named by `api_key_env`). Verdicts are cached in the run's store per (judge, template, question, answers).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from lm_eval.api.instance import Instance

from evalsuite.config import JudgeSuite
from evalsuite.errors import UserError
from evalsuite.hashing import text_digest
from evalsuite.reports import format as fmt
from evalsuite.suites.base import BASELINE, CompareContext, ModelContext, Section, Suite, SuiteRun, measure

log = logging.getLogger("evalsuite")
VERDICT = re.compile(r"\[\[(A>>B|A>B|A=B|B>A|B>>A)\]\]")
TEMPLATES = {
    # The embedded model's own format: it was trained to check answers about its world this way (it recalls
    # the fact, checks each answer, then gives the label).
    "tiny": "Question: {question}\nAnswer A: {answer_a}\nAnswer B: {answer_b}\nVerdict:",
    # For capable judges: a strict Arena-Hard-like instruction with a closed set of verdict labels.
    "arena": (
        "Please act as an impartial judge and evaluate the quality of the responses provided by two AI "
        "assistants to the user prompt displayed below. Judge correctness first, then helpfulness, relevance "
        "and concision. Do not let the order of the responses, their length or the assistants' names influence "
        "you. After a short explanation, output your final verdict as exactly one of these labels:\n"
        "[[A>>B]] (A is significantly better), [[A>B]] (A is slightly better), [[A=B]] (tie), "
        "[[B>A]] (B is slightly better), [[B>>A]] (B is significantly better).\n\n"
        "<|User Prompt|>\n{question}\n\n<|The Start of Assistant A's Answer|>\n{answer_a}\n"
        "<|The End of Assistant A's Answer|>\n\n<|The Start of Assistant B's Answer|>\n{answer_b}\n"
        "<|The End of Assistant B's Answer|>"
    ),
}


class JudgeError(UserError, RuntimeError):
    pass


def template_text(name_or_text: str) -> str:
    text = TEMPLATES.get(name_or_text, name_or_text)
    missing = [f for f in ("{question}", "{answer_a}", "{answer_b}") if f not in text]
    if missing:
        raise JudgeError(
            f"judge template {name_or_text!r} is neither built in ({', '.join(TEMPLATES)}) nor a template with "
            f"{', '.join(missing)}"
        )
    return text


def parse_verdict(text: str) -> str | None:
    """The last verdict label in a judge's answer (a judge may restate the labels before deciding)."""
    found = VERDICT.findall(text or "")
    return found[-1] if found else None


ONE_LINE_TEMPLATES = {"tiny"}  # templates whose verdict ends its first line; the others reason before deciding


class LocalJudge:
    """A causal LM judging greedily through EvalLM; its answers are cached through EvalLM's own store key.
    It stops at the end of the first line for a one-line template, else at end of text or `max_gen_toks`."""

    def __init__(self, lm, max_gen_toks: int, one_line: bool):
        self.lm = lm
        self.max_gen_toks = max_gen_toks
        self.until = ["\n"] if one_line else []
        self.identity = lm.model_key

    def judge(self, prompts: list[str]) -> list[str]:
        kwargs = {"until": self.until, "max_gen_toks": self.max_gen_toks, "do_sample": False}
        return self.lm.generate_until([Instance("generate_until", {}, (p, kwargs), i) for i, p in enumerate(prompts)])


class EndpointJudge:
    """An OpenAI-compatible chat-completions endpoint, temperature 0, answers cached in the store."""

    def __init__(self, endpoint: str, model: str, api_key_env: str | None, store, max_tokens: int, timeout_s: float):
        self.url = endpoint.rstrip("/") + "/chat/completions"
        self.model = model
        self.key = os.environ.get(api_key_env) if api_key_env else None
        if api_key_env and not self.key:
            raise JudgeError(f"the judge's API key variable {api_key_env} is not set in the environment")
        self.store = store
        self.max_tokens = max_tokens
        self.timeout_s = timeout_s
        # max_tokens is part of the answer's key: a verdict cut short must not be served after raising it
        self.identity = text_digest(f"{self.url}|{model}|max_tokens={max_tokens}")
        self.calls = 0

    def _ask(self, prompt: str) -> str:
        body = json.dumps(
            {
                "model": self.model,
                "messages": [{"role": "user", "content": prompt}],
                "temperature": 0,
                "max_tokens": self.max_tokens,
            }
        ).encode()
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        for attempt in range(3):
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    self.calls += 1
                    return json.loads(response.read())["choices"][0]["message"]["content"] or ""
            except urllib.error.HTTPError as err:
                if err.code < 500 and err.code != 429:
                    raise JudgeError(
                        f"judge endpoint {self.url} answered HTTP {err.code}: {err.read()[:200]!r}"
                    ) from None
            except (urllib.error.URLError, TimeoutError) as err:
                if attempt == 2:
                    raise JudgeError(f"judge endpoint {self.url} unreachable: {err}") from None
            except (KeyError, IndexError, json.JSONDecodeError) as err:
                raise JudgeError(f"judge endpoint {self.url} returned no chat completion ({err})") from None
            time.sleep(0.5 * 2**attempt)
        raise JudgeError(f"judge endpoint {self.url} kept failing (HTTP 429/5xx)")

    def judge(self, prompts: list[str]) -> list[str]:
        from evalsuite.lm import request_key

        keys = [request_key(self.identity, "judge", (p,)) for p in prompts]
        found = self.store.get_responses(keys) if self.store is not None else {}
        out = []
        for key, prompt in zip(keys, prompts, strict=True):
            if key not in found:
                found[key] = self._ask(prompt)
                if self.store is not None:
                    self.store.put_responses(self.identity, [(key, "judge", found[key])])
            out.append(found[key])
        return out


@dataclass
class Game:
    prompt_index: int
    variant_is_a: bool
    verdict: str | None

    @property
    def score(self) -> float | None:
        """1 win, 0.5 tie, 0 loss from the variant's side; None when the verdict did not parse."""
        if self.verdict is None:
            return None
        if self.verdict == "A=B":
            return 0.5
        a_wins = self.verdict.startswith("A")
        return 1.0 if a_wins == self.variant_is_a else 0.0


def play(judge, template: str, questions: list[str], baseline: list[str], variant: list[str]) -> list[Game]:
    """Two games per question: (A=baseline, B=variant) and swapped."""
    prompts, games = [], []
    for i, (q, b, v) in enumerate(zip(questions, baseline, variant, strict=True)):
        prompts.append(template.format(question=q, answer_a=b, answer_b=v))
        games.append((i, False))
        prompts.append(template.format(question=q, answer_a=v, answer_b=b))
        games.append((i, True))
    answers = judge.judge(prompts)
    return [Game(i, variant_is_a, parse_verdict(a)) for (i, variant_is_a), a in zip(games, answers, strict=True)]


def summarize(games: list[Game], iters: int, seed: int) -> dict:
    scores = [g.score for g in games]
    valid = [s for s in scores if s is not None]
    wins, ties = sum(s == 1.0 for s in valid), sum(s == 0.5 for s in valid)
    out = {
        "wins": wins,
        "ties": ties,
        "losses": len(valid) - wins - ties,
        "unparseable": len(scores) - len(valid),
        "games": len(scores),
        "win_rate": (wins + 0.5 * ties) / len(valid) if valid else None,
        "ci_low": None,
        "ci_high": None,
        "bootstrap_iters": iters,
    }
    by_prompt: dict[int, list[float]] = {}
    for g in games:
        if g.score is not None:
            by_prompt.setdefault(g.prompt_index, []).append(g.score)
    if iters > 0 and len(by_prompt) >= 2:
        groups = list(by_prompt.values())
        sums = np.array([sum(x) for x in groups])
        counts = np.array([len(x) for x in groups])
        idx = np.random.default_rng(seed).integers(0, len(groups), size=(iters, len(groups)))
        rates = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
        out["ci_low"], out["ci_high"] = float(np.quantile(rates, 0.025)), float(np.quantile(rates, 0.975))
    return out


class Judge(Suite):
    """Pairwise judging of each variant's answers against the baseline's, both orders: a win-rate."""

    name, title = "judge", "Judged against the baseline (both orders)"
    Spec = JudgeSuite

    def plan(self) -> None:
        from evalsuite import models
        from evalsuite.suites.similarity import limited, load_prompts

        self.sets = {Path(n).stem: limited(load_prompts(n, "judge"), self.spec.limit) for n in self.spec.prompts}
        judge = self.spec.judge
        self.template = template_text(judge.template)
        self.source = models.resolve_model(judge.model) if judge.model else None
        if judge.endpoint and judge.api_key_env and not os.environ.get(judge.api_key_env):
            raise JudgeError(f"suites.judge.judge.api_key_env: {judge.api_key_env} is not set in the environment")

    def evaluate(self, ctx: ModelContext) -> SuiteRun:
        from evalsuite.suites.similarity import answer_sets

        return answer_sets(ctx, self.name, self.sets, self.spec.max_gen_toks)

    def _judge(self, ctx: CompareContext):
        spec, run = self.spec.judge, ctx.config.run
        if not spec.model:
            judge = EndpointJudge(
                spec.endpoint, spec.name, spec.api_key_env, ctx.store, spec.max_tokens, spec.timeout_s
            )
            return judge, f"{spec.name} at {spec.endpoint}"
        from evalsuite import models
        from evalsuite.lm import EvalLM
        from evalsuite.variants import baseline_record, model_key

        source, dtype = self.source, models.compute_dtype("auto", ctx.device)
        key = model_key(source, baseline_record(0), dtype, ctx.device, run.batch_size)
        tokenizer = models.load_tokenizer(source)
        judge_lm = EvalLM(  # loaded only for games missing from the store
            lambda: models.load(source, ctx.device, "auto").model,
            tokenizer,
            run.batch_size,
            models.max_length(source, tokenizer),
            ctx.store,
            key,
            "judge",
            device=ctx.device,
        )
        judge = LocalJudge(judge_lm, spec.max_tokens, spec.template in ONE_LINE_TEMPLATES)
        return judge, f"{spec.model} ({source.identity[:12]})"

    def compare(self, runs: dict[str, SuiteRun], ctx: CompareContext) -> dict:
        from evalsuite.suites.similarity import paired_answers

        judge, identity = self._judge(ctx)
        template_hash = text_digest(self.template)
        iters, seed = ctx.config.run.bootstrap_iters, ctx.config.run.seed
        out: dict = {}
        for variant in runs:
            if variant == BASELINE:
                continue
            for name, prompts in self.sets.items():
                base, var = paired_answers(runs, variant, name)
                games = play(judge, self.template, [p["prompt"] for p in prompts], base, var)
                summary = summarize(games, iters, seed)
                summary.update(judge=identity, template_hash=template_hash)
                out.setdefault(variant, {})[name] = summary
                log.info("  judge %-10s %-12s win-rate %s", variant, name, summary["win_rate"])
        return out

    @classmethod
    def measures(cls, section: dict) -> list[dict]:
        return [
            measure(cls.name, name, "win_rate", variant, s.get("win_rate"), s.get("ci_low"))
            for variant, sets in section.items()
            for name, s in sets.items()
        ]

    @classmethod
    def report(cls, data: dict) -> Section | None:
        rows = []
        for v, sets in data.get("suites", {}).get(cls.name, {}).items():
            for name, j in sets.items():
                rate = (
                    "n/a"
                    if j["win_rate"] is None
                    else f"{fmt.pct(j['win_rate'])} {fmt.interval(j['ci_low'], j['ci_high'])}"
                )
                rows.append(
                    [v, name, f"{j['wins']} / {j['ties']} / {j['losses']}", str(j["unparseable"]), rate, j["judge"]]
                )
        header = ["variant", "prompts", "wins / ties / losses", "unparseable", "win-rate vs baseline", "judge"]
        note = (
            "Win-rate counts a win as 1 and a tie as ½ over the games whose verdict parsed; 50% means the judge "
            "cannot tell the variant from the baseline. Unparseable verdicts are excluded."
        )
        return Section("judge", cls.title, header, rows, note=note) if rows else None
