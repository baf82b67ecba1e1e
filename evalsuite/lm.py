"""`EvalLM`: the one model interface. An lm-eval `LM` over any causal LM (baseline or quantized variant),
with length-sorted batching and a content-addressed response cache in the run's store.

    lm = EvalLM(model, tokenizer, batch_size=32, store=store, model_key=key)
    lm.loglikelihood(requests)          # [(logprob, is_greedy)], as lm-eval's HF backend scores them
    lm.loglikelihood_rolling(requests)  # [logprob of the whole string, windowed]
    lm.generate_until(requests)         # [greedy continuation, cut at the first stop string]

Tokenization follows lm-eval's HF backend exactly (trailing spaces of the context move to the continuation;
an empty context is replaced by the prefix token), so scores are comparable with `lm_eval --model hf`.
Each batch's results are committed to the store as soon as it finishes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from tqdm import tqdm

from evalsuite.guards import check_logits

DEFAULT_MAX_GEN_TOKS = 256

Batch = list[tuple[int, object]]  # (index into the request list, result)


def request_key(model_key: str, kind: str, args: tuple) -> str:
    payload = json.dumps([model_key, kind, list(args)], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


class EvalLM(TemplateLM):
    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        batch_size: int = 32,
        max_length: int | None = None,
        store=None,
        model_key: str = "",
        label: str = "",
        progress: bool = True,
    ):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.store = store
        self.model_key = model_key
        self.label = label
        self.progress = progress
        self.model_calls = 0
        self.task_name = ""
        self._max_length = max_length
        self._device = next(model.parameters()).device

    # --- tokenization, as lm-eval's HF backend does it ---------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        if self._max_length:
            return self._max_length
        from lm_eval.models.utils import resolve_max_length

        return resolve_max_length(self.model.config, self.tokenizer)

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        special = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        if add_special_tokens is None and self.tokenizer.bos_token and string.startswith(self.tokenizer.bos_token):
            special = {"add_special_tokens": False}
        return self.tokenizer.encode(string, **special)

    def tok_decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=False)

    def _encode_request(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        if context == "":
            cont = self.tok_encode(continuation, add_special_tokens=False)
            if self.prefix_token_id != cont[0]:
                return [self.prefix_token_id], cont
            return cont[:1], cont[1:]
        return self._encode_pair(context, continuation)

    # --- the cache -------------------------------------------------------------------------------------

    def _cached(self, kind: str, args: list[tuple], compute: Callable[[list[int]], Iterator[Batch]]) -> list:
        """Serve cached results, compute the rest batch by batch, committing each batch to the store."""
        keys = [request_key(self.model_key, kind, a) for a in args]
        found = self.store.get_responses(keys) if self.store is not None else {}
        results = [found.get(k) for k in keys]
        todo = [i for i, r in enumerate(results) if r is None]
        bar = tqdm(
            total=len(todo), desc=f"{self.label} {kind}".strip(), disable=not (self.progress and todo), leave=False
        )
        for batch in compute(todo):
            rows = []
            for i, value in batch:
                results[i] = value
                rows.append((keys[i], kind, value))
            if self.store is not None:
                self.store.put_responses(self.model_key, rows)
            bar.update(len(batch))
        bar.close()
        return [tuple(r) if isinstance(r, list) else r for r in results]

    # --- scoring ---------------------------------------------------------------------------------------

    @torch.no_grad()
    def _forward(self, input_ids: torch.Tensor, describe) -> torch.Tensor:
        self.model_calls += 1
        logits = self.model(input_ids=input_ids).logits  # (B, T, V)
        where = f"{self.label or 'model'} / {self.task_name or 'task'}"
        check_logits(logits, self.model, lambda r: input_ids[r : r + 1], where, describe)
        return logits

    def _score_batches(self, items: list[tuple[int, list[int], list[int]]]) -> Iterator[Batch]:
        """Log-probability and greediness of each continuation; items are (index, context ids, continuation ids).
        Longest first, right-padded; each row keeps at most max_length tokens, truncating the context."""
        order = sorted(items, key=lambda it: (-(len(it[1]) + len(it[2])), tuple(it[1] + it[2])))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            rows = [(ctx + cont)[-(self.max_length + 1) :][:-1] for _, ctx, cont in chunk]
            width = max(len(r) for r in rows)
            pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eot_token_id
            input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=self.device)
            describe = lambda r: repr(self.tok_decode(rows[r])[-200:])  # noqa: E731
            logprobs = F.log_softmax(self._forward(input_ids, describe).float(), dim=-1)  # (B, T, V)
            batch = []
            for row, (index, _, cont), lp in zip(rows, chunk, logprobs, strict=True):
                n = len(cont)
                cont_lp = lp[len(row) - n : len(row)]  # (n, V)
                target = torch.tensor(cont, device=self.device)
                greedy = bool((cont_lp.argmax(dim=-1) == target).all())
                batch.append((index, (float(cont_lp.gather(1, target[:, None]).sum()), greedy)))
            yield batch

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        args = [tuple(r.args) for r in requests]

        def compute(todo: list[int]) -> Iterator[Batch]:
            yield from self._score_batches([(i, *self._encode_request(*args[i])) for i in todo])

        return self._cached("loglikelihood", args, compute)

    def _loglikelihood_tokens(self, requests, **kwargs) -> list[tuple[float, bool]]:
        results: dict[int, tuple[float, bool]] = {}
        for batch in self._score_batches([(i, ctx, cont) for i, (_, ctx, cont) in enumerate(requests)]):
            results.update(batch)
        return [results[i] for i in range(len(requests))]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        args = [tuple(r.args) for r in requests]

        def compute(todo: list[int]) -> Iterator[Batch]:
            for i in todo:  # one document at a time: its windows are scored together, committed together
                windows = map(
                    lm_utils.make_disjoint_window,
                    lm_utils.get_rolling_token_windows(
                        token_list=self.tok_encode(args[i][0], add_special_tokens=False),
                        prefix_token=self.prefix_token_id,
                        max_seq_len=self.max_length,
                        context_len=1,
                    ),
                )
                scored = self._loglikelihood_tokens([(None, ctx, cont) for ctx, cont in windows])
                yield [(i, sum(lp for lp, _ in scored))]

        return self._cached("loglikelihood_rolling", args, compute)

    # --- generation ------------------------------------------------------------------------------------

    @torch.no_grad()
    def _greedy(self, contexts: list[list[int]], until: list[str], max_new: int) -> list[str]:
        """Greedy decoding of a left-padded batch with a KV cache; each row stops at its first stop string."""
        from transformers import DynamicCache

        width = max(len(c) for c in contexts)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eot_token_id
        input_ids = torch.tensor([[pad] * (width - len(c)) + c for c in contexts], device=self.device)
        mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in contexts], device=self.device)
        generated = [[] for _ in contexts]
        done = [False] * len(contexts)
        cache, step_ids, steps = DynamicCache(), input_ids, []
        for _ in range(max_new):
            positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -step_ids.shape[1] :]
            self.model_calls += 1
            out = self.model(
                input_ids=step_ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True
            )
            describe = lambda r: repr(self.tok_decode(contexts[r])[-200:])  # noqa: E731
            seen = lambda r: torch.cat([input_ids, *steps], dim=1)[r : r + 1]  # noqa: E731  (1, T + steps)
            check_logits(out.logits, self.model, seen, f"{self.label or 'model'} / {self.task_name}", describe)
            next_ids = out.logits[:, -1].argmax(dim=-1)  # (B,)
            steps.append(next_ids[:, None])
            for b, t in enumerate(next_ids.tolist()):
                if done[b]:
                    continue
                generated[b].append(t)
                text = self.tok_decode(generated[b])
                if t == self.eot_token_id or any(s and s in text for s in until):
                    done[b] = True
            if all(done):
                break
            step_ids = next_ids[:, None]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        texts = []
        for ids in generated:
            text = self.tok_decode([t for t in ids if t != self.eot_token_id])
            for stop in until:
                if stop:
                    text = text.split(stop)[0]
            texts.append(text)
        return texts

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        args = [(r.args[0], dict(r.args[1])) for r in requests]
        for _, kwargs in args:
            if kwargs.get("do_sample") and kwargs.get("temperature", 1.0) != 0:
                raise ValueError(
                    "EvalLM decodes greedily; a task asked for sampling (do_sample=True). "
                    "Set do_sample: false or temperature: 0 in its generation_kwargs"
                )
        eos = self.tok_decode([self.eot_token_id])

        def settings(kwargs: dict) -> tuple[list[str], int]:
            until = kwargs.get("until", [])
            until = [until] if isinstance(until, str) else list(until)
            return until + ([eos] if eos not in until else []), int(kwargs.get("max_gen_toks", DEFAULT_MAX_GEN_TOKS))

        def compute(todo: list[int]) -> Iterator[Batch]:
            groups: dict[str, list[int]] = {}
            for i in todo:
                groups.setdefault(json.dumps(settings(args[i][1])), []).append(i)
            for key, members in groups.items():
                until, max_new = json.loads(key)
                encoded = {i: self.tok_encode(args[i][0])[-(self.max_length - max_new) :] for i in members}
                members.sort(key=lambda i: (-len(encoded[i]), encoded[i]))
                for start in range(0, len(members), self.batch_size):
                    chunk = members[start : start + self.batch_size]
                    texts = self._greedy([encoded[i] for i in chunk], until, max_new)
                    yield list(zip(chunk, texts, strict=True))

        return self._cached("generate_until", [(c, json.dumps(k, sort_keys=True)) for c, k in args], compute)
