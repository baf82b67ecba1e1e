"""`EvalLM`: the one model interface. An lm-eval `LM` over any causal LM (baseline or quantized variant),
with length-sorted batching and a content-addressed response cache in the run's store.

    lm = EvalLM(model, tokenizer, batch_size=32, store=store, model_key=key)
    lm.loglikelihood(requests)          # [(logprob, is_greedy)], as lm-eval's HF backend scores them
    lm.loglikelihood_rolling(requests)  # [logprob of the whole string, windowed]
    lm.generate_until(requests)         # [greedy (or seeded sampled) continuation, cut at the first stop]

Tokenization follows lm-eval's HF backend exactly (trailing spaces of the context move to the continuation;
an empty context is replaced by the prefix token), so scores are comparable with `lm_eval --model hf`.
Each batch's results are committed to the store as soon as it finishes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import torch
from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from tqdm import tqdm

from evalsuite.errors import UserError
from evalsuite.guards import check_logits
from evalsuite.hashing import digest
from evalsuite.lm_sampling import Sampler, next_tokens, sampler
from evalsuite.lm_scoring import (
    Batch,
    Row,
    batches,
    encode_pairs,
    gather_scores,
    pack_width,
    packed_mask,
    plan_rows,
)
from evalsuite.sdpa_backends import variable_shape_attention

DEFAULT_MAX_GEN_TOKS = 256
STOP_CHECK_EVERY = 8  # decode steps between reads of the new tokens by the host
SCORING_PHASES = ("tokenize", "plan", "forward", "scores")  # each ends at a host sync, so the sums are honest


class GenerationError(UserError, ValueError):
    """Generation settings that cannot work with this model (say, more new tokens than it has positions)."""


def request_key(model_key: str, kind: str, args: tuple) -> str:
    return digest(model_key, kind, list(args))


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
        share_context: bool = True,
        share_prefix: bool = True,
        cuda_graphs: bool = True,
        shard=None,
        device: torch.device | None = None,
    ):
        """`model` is the module, or a zero-argument callable that loads it on first use (then `device` says
        where it will live): a rerun served from the store never loads it."""
        super().__init__()
        self._model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.store = store
        self.model_key = model_key
        self.label = label
        self.progress = progress
        self.share_context = share_context
        self.share_prefix = share_prefix
        self.cuda_graphs = cuda_graphs
        self.shard = shard  # evalsuite.distributed.Shard: compute only this rank's share of the batches
        self._static = None
        self.decoders_used: list[str] = []  # which decoders generated, and why (results.json)
        self.model_calls = 0
        self.seconds = dict.fromkeys(SCORING_PHASES, 0.0)  # where scoring time goes, summed over calls
        self.task_name = ""
        self._max_length = max_length
        self._device = device if device is not None else next(self.model.parameters()).device

    @property
    def model(self) -> torch.nn.Module:
        if not isinstance(self._model, torch.nn.Module):
            self._model = self._model()
        return self._model

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

    def _encode_requests(self, pairs: list[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        return encode_pairs(self, pairs)

    # --- the cache -------------------------------------------------------------------------------------

    def cached(self, kind: str, args: list[tuple], compute: Callable[[list[int]], Iterator[Batch]]) -> list:
        """Serve cached results of one request kind, compute the rest batch by batch (`compute(todo)` yields
        [(index, JSON-able value)] per batch; in a distributed run only the batches for which `skips` is
        False), committing each batch to the store. The built-in kinds go through it, and so does any request
        kind a suite defines (fidelity's per-text panels)."""
        keys = [request_key(self.model_key, kind, a) for a in args]
        if self.shard is not None:
            self.shard.barrier()  # every rank reads the same snapshot of the store before any writes to it
        found = self.store.get_responses(keys) if self.store is not None else {}
        if self.shard is not None:
            self.shard.barrier()
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
        if self.shard is not None:  # every rank now reads back what the others computed
            self.shard.barrier()
            missing = [i for i, r in enumerate(results) if r is None]
            found = self.store.get_responses([keys[i] for i in missing])
            for i in missing:
                results[i] = found.get(keys[i])
            if any(r is None for r in results):
                raise RuntimeError(f"{kind}: results of other ranks are missing from the store after the barrier")
        return [tuple(r) if isinstance(r, list) else r for r in results]

    def skips(self, batch_number: int) -> bool:
        """In a distributed run, whether this batch belongs to another rank."""
        return self.shard is not None and not self.shard.mine(batch_number)

    # --- scoring ---------------------------------------------------------------------------------------

    @torch.no_grad()
    def _forward(self, input_ids: torch.Tensor, describe, keep: list[int], inputs_of=None, **kwargs) -> torch.Tensor:
        """Logits at the sequence positions `keep` only: (B, len(keep), V)."""
        self.model_calls += 1
        keep_t = torch.tensor(keep, device=self.device)
        # no KV cache: scoring reads each row once; a cache would hold every layer's keys and values, gigabytes
        # for a batch of long packed rows, allocated anew for each batch shape
        with variable_shape_attention(self.device):
            logits = self.model(input_ids=input_ids, logits_to_keep=keep_t, use_cache=False, **kwargs).logits
        where = f"{self.label or 'model'} / {self.task_name or 'task'}"
        inputs_of = inputs_of or (lambda r: input_ids[r : r + 1])
        check_logits(logits, self.model, inputs_of, where, describe)
        return logits

    def _score_batches(self, items: list[tuple[int, list[int], list[int]]], sharded: bool = True) -> Iterator[Batch]:
        """Log-probability and greediness of each continuation; items are (index, context ids, continuation ids).
        Rows as `plan_rows` lays them out (identical inputs once, inputs with a common prefix packed behind
        it), longest first, right-padded, plain and packed rows in separate batches; in a distributed run
        (sharded) only this rank's batches."""
        started = time.perf_counter()
        width = pack_width(self.model.config)
        rows = plan_rows(items, self.max_length, self.share_context, self.share_prefix, width)
        planned = batches(rows, self.batch_size)
        self.seconds["plan"] += time.perf_counter() - started
        for number, chunk in enumerate(planned):
            if sharded and self.skips(number):
                continue
            yield self._score_chunk(chunk)

    def _score_chunk(self, chunk: list[Row]) -> Batch:
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eot_token_id
        width = max(len(r.tokens) for r in chunk)
        input_ids = torch.tensor([r.tokens + [pad] * (width - len(r.tokens)) for r in chunk], device=self.device)
        kwargs = {}
        if chunk[0].positions is not None:
            positions = [r.positions + [0] * (width - len(r.tokens)) for r in chunk]
            kwargs["position_ids"] = torch.tensor(positions, device=self.device)
            kwargs["attention_mask"] = packed_mask(chunk, width, self.model, self.device)
        keep = sorted({p for r in chunk for _, preds, _ in r.targets for p in preds})
        where = {p: i for i, p in enumerate(keep)}
        describe = lambda b: repr(self.tok_decode(chunk[b].tokens)[-200:])  # noqa: E731
        started = time.perf_counter()
        logits = self._forward(input_ids, describe, keep, **kwargs)  # (B, K, V); the finiteness check syncs
        forwarded = time.perf_counter()
        scores = gather_scores(chunk, logits, where, self.device)
        self.seconds["forward"] += forwarded - started
        self.seconds["scores"] += time.perf_counter() - forwarded
        return scores

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        args = [tuple(r.args) for r in requests]

        def compute(todo: list[int]) -> Iterator[Batch]:
            started = time.perf_counter()
            encoded = self._encode_requests([args[i] for i in todo])
            self.seconds["tokenize"] += time.perf_counter() - started
            yield from self._score_batches([(i, *pair) for i, pair in zip(todo, encoded, strict=True)])

        return self.cached("loglikelihood", args, compute)

    def _loglikelihood_tokens(self, requests, **kwargs) -> list[tuple[float, bool]]:
        results: dict[int, tuple[float, bool]] = {}
        items = [(i, ctx, cont) for i, (_, ctx, cont) in enumerate(requests)]
        for batch in self._score_batches(items, sharded=False):
            results.update(batch)
        return [results[i] for i in range(len(requests))]

    def _windows(self, text: str) -> list[tuple[list[int], list[int]]]:
        """lm-eval's disjoint rolling windows over a document: (context, continuation) token lists."""
        return list(
            map(
                lm_utils.make_disjoint_window,
                lm_utils.get_rolling_token_windows(
                    token_list=self.tok_encode(text, add_special_tokens=False),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                ),
            )
        )

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Documents that fit one window are batched together (in a distributed run, whole batches per rank,
        formed as one process forms them); longer documents are scored afterwards, whole documents per rank."""
        args = [tuple(r.args) for r in requests]

        def compute(todo: list[int]) -> Iterator[Batch]:
            windows = {i: self._windows(args[i][0]) for i in todo}
            single = [i for i in todo if len(windows[i]) == 1]
            for batch in self._score_batches([(i, *windows[i][0]) for i in single]):
                yield [(i, logprob) for i, (logprob, _) in batch]
            multi = [i for i in todo if len(windows[i]) > 1]
            if self.shard is not None:
                multi = [i for n, i in enumerate(multi) if self.shard.mine(n)]
            items, owner, left, total = [], {}, {}, {}
            for i in multi:
                for ctx, cont in windows[i]:
                    owner[len(items)] = i
                    items.append((len(items), ctx, cont))
                left[i], total[i] = len(windows[i]), 0.0
            for batch in self._score_batches(items, sharded=False):  # a document is done with all its windows
                done = []
                for w, (logprob, _) in batch:
                    i = owner[w]
                    total[i] += logprob
                    left[i] -= 1
                    if left[i] == 0:
                        done.append((i, total[i]))
                if done:
                    yield done

        return self.cached("loglikelihood_rolling", args, compute)

    # --- generation ------------------------------------------------------------------------------------

    def _decoder(self, batch: int, length: int):
        """On CUDA, a static-cache decoder whose whole step is one CUDA graph (decode_graph.pick_decoder says
        which and why) for this batch size and a cache rounded up to 128 tokens (the last one is kept, so
        consecutive batches of a task reuse its graph); elsewhere an eager decoder over a growing cache."""
        from evalsuite.decode_graph import pick_decoder

        static = self.device.type == "cuda" and self.cuda_graphs
        if static:
            length = min(-(-length // 128) * 128, self.max_length + DEFAULT_MAX_GEN_TOKS)
            if self._static is not None and (self._static.batch_size, self._static.max_len) == (batch, length):
                return self._static
        decoder, path = pick_decoder(self.model, batch, length, self.cuda_graphs)
        self.decoders_used += [path] if path not in self.decoders_used else []
        self._static = decoder if static else None
        return decoder

    @torch.no_grad()
    def _decode(
        self, contexts: list[list[int]], until: list[str], max_new: int, samplers: list[Sampler | None]
    ) -> list[str]:
        """Decode a batch over a static KV cache (CUDA-graph steps on GPU); each row stops at its first stop
        string or the end-of-text token. The new tokens stay on the device and are read once every
        STOP_CHECK_EVERY steps, so the host queues steps without waiting for each; a row's stop strings are
        looked for in the decoded tail it grew by. Tokens past a stop are cut from the text, as lm-eval does."""
        n = len(contexts)
        decoder = self._decoder(n, max(len(c) for c in contexts) + max_new)
        with variable_shape_attention(self.device):
            logits = decoder.prefill(contexts)
        self.model_calls += 1
        new_ids = torch.empty(n, max_new, dtype=torch.long, device=self.device)
        finite = torch.ones(n, dtype=torch.bool, device=self.device)
        generated: list[list[int]] = [[] for _ in contexts]
        done = [False] * n
        stops = [s for s in until if s]
        window = max((len(s) for s in stops), default=0) + 4  # tokens enough to spell any stop string
        read = 0
        for step in range(max_new):
            finite &= torch.isfinite(logits[:n]).all(dim=-1)
            next_ids = next_tokens(logits[:n], samplers)  # (B,)
            new_ids[:, step] = next_ids
            if (step + 1) % STOP_CHECK_EVERY == 0 or step == max_new - 1:
                self._check_finite(finite, contexts, generated)
                block = new_ids[:, read : step + 1].tolist()
                read = step + 1
                for b in range(n):
                    if not done[b]:
                        done[b] = self._extend(generated[b], block[b], stops, window)
                if all(done):
                    break
            if step < max_new - 1:
                logits = decoder.step(next_ids)
                self.model_calls += 1
        texts = []
        for ids in generated:
            text = self.tok_decode(ids)
            for stop in stops:
                text = text.split(stop)[0]
            texts.append(text)
        return texts

    def _extend(self, ids: list[int], block: list[int], stops: list[str], window: int) -> bool:
        """Append a block of new tokens to a row up to its end-of-text token; whether the row is finished."""
        for t in block:
            if t == self.eot_token_id:
                return True
            ids.append(t)
        tail = self.tok_decode(ids[-(len(block) + window) :])
        return any(s in tail for s in stops)

    def _check_finite(self, finite: torch.Tensor, contexts: list[list[int]], generated: list[list[int]]) -> None:
        check_logits(
            torch.where(finite, 0.0, float("nan"))[:, None],
            self.model,
            lambda r: torch.tensor([contexts[r] + generated[r]], device=self.device),
            f"{self.label or 'model'} / {self.task_name}",
            lambda r: repr(self.tok_decode(contexts[r])[-200:]),
        )

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy continuations, or seeded samples where a request's settings say do_sample with a seed."""
        args = [(r.args[0], dict(r.args[1])) for r in requests]
        eos = self.tok_decode([self.eot_token_id])

        def settings(kwargs: dict) -> tuple[list[str], int]:
            until = kwargs.get("until", [])
            until = [until] if isinstance(until, str) else list(until)
            return until + ([eos] if eos not in until else []), int(kwargs.get("max_gen_toks", DEFAULT_MAX_GEN_TOKS))

        samplers = [sampler(context, kwargs, self.device) for context, kwargs in args]  # checks seeds up front
        longest = max((settings(kwargs)[1] for _, kwargs in args), default=0)
        if longest > self.max_length:  # the prompt would be cut from its start
            raise GenerationError(
                f"{self.label or 'model'} / {self.task_name}: max_gen_toks {longest} leaves no room for the prompt "
                f"in a model of {self.max_length} positions; ask for fewer new tokens (e.g. max_gen_toks or "
                f"judge.max_tokens {self.max_length // 4})"
            )

        def compute(todo: list[int]) -> Iterator[Batch]:
            groups: dict[str, list[int]] = {}
            for i in todo:
                groups.setdefault(json.dumps(settings(args[i][1])), []).append(i)
            number = -1
            for key, members in groups.items():
                until, max_new = json.loads(key)
                encoded = {i: self.tok_encode(args[i][0])[-(self.max_length - max_new) :] for i in members}
                members.sort(key=lambda i: (-len(encoded[i]), encoded[i]))
                for start in range(0, len(members), self.batch_size):
                    number += 1
                    if self.skips(number):
                        continue
                    chunk = members[start : start + self.batch_size]
                    texts = self._decode([encoded[i] for i in chunk], until, max_new, [samplers[i] for i in chunk])
                    yield list(zip(chunk, texts, strict=True))

        return self.cached("generate_until", [(c, json.dumps(k, sort_keys=True)) for c, k in args], compute)
