"""Train the embedded reference model `embedded:tiny` on CPU, deterministically, from generated text.

    python -m evalsuite.reference.train                 # writes evalsuite/reference/tiny/ and tasks/*/*.jsonl
    python -m evalsuite.reference.train --steps 20 --out /tmp/tiny --no-write-tasks   # a short run

The same seed, torch version and thread count give the same bytes. The model is a Llama-architecture causal
LM in Hugging Face format (config.json, model.safetensors, tokenizer.json, tokenizer_config.json).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from pathlib import Path

import torch

from evalsuite.tasks import HERE as TASKS_DIR

from . import corpus, world

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "tiny"
EOS = "<|endoftext|>"
SEQ_LEN = 256
VOCAB_SIZE = 1024


def model_config(vocab_size: int):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=SEQ_LEN,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )


def train_tokenizer(documents: list[str]):
    """A byte-level BPE with single-digit numbers, so arithmetic sees one token per digit."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(documents, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=EOS, model_max_length=SEQ_LEN
    )
    fast.chat_template = world.CHAT_TEMPLATE
    return fast


def pack_rows(token_docs, eos_id: int, n_rows: int) -> torch.Tensor:
    """Rows of SEQ_LEN + 1 tokens, each starting at a document start; a document that overflows is cut."""
    rows, row = [], []
    for ids in token_docs:
        row.extend(ids + [eos_id])
        if len(row) >= SEQ_LEN + 1:
            rows.append(row[: SEQ_LEN + 1])
            row = []
            if len(rows) == n_rows:
                break
    return torch.tensor(rows, dtype=torch.long)  # (n_rows, SEQ_LEN + 1)


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(out: Path, steps: int, batch: int, seed: int, threads: int, write_tasks: bool, log_every: int) -> dict:
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    eval_sets = corpus.build_eval_sets()
    if write_tasks:
        corpus.write_eval_files(eval_sets, TASKS_DIR)
    docs = corpus.training_documents(seed, eval_sets.held_out())
    sample = itertools.islice(corpus.training_documents(seed + 1, set()), 20000)
    tokenizer = train_tokenizer(["".join(d) if isinstance(d, tuple) else d for d in sample])
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    assert eos_id == 0, "the EOS token must be id 0"
    encoded = (
        sum((tokenizer.encode(part) for part in d), []) if isinstance(d, tuple) else tokenizer.encode(d) for d in docs
    )
    data = pack_rows(encoded, eos_id, steps * batch)  # (steps*batch, SEQ_LEN+1)

    model = LlamaForCausalLM(model_config(len(tokenizer)))
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-3,
        betas=(0.9, 0.98),
    )
    start, losses = time.time(), []
    model.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, peak=3e-3, warmup=min(200, steps // 10 + 1))
        rows = data[step * batch : (step + 1) * batch]
        logits = model(input_ids=rows[:, :-1]).logits  # (B, T, V)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), rows[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if log_every and (step % log_every == 0 or step == steps - 1):
            recent = sum(losses[-log_every:]) / len(losses[-log_every:])
            print(f"step {step:5d}/{steps}  loss {recent:.4f}  {time.time() - start:6.0f}s", flush=True)

    out.mkdir(parents=True, exist_ok=True)
    model = model.to(torch.bfloat16)
    model.generation_config.pad_token_id = eos_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    summary = {
        "seed": seed,
        "steps": steps,
        "batch": batch,
        "seq_len": SEQ_LEN,
        "threads": threads,
        "tokens": steps * batch * SEQ_LEN,
        "final_loss": sum(losses[-50:]) / len(losses[-50:]),
        "seconds": round(time.time() - start, 1),
        "torch": torch.__version__,
    }
    (out / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the model (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=1200, help="optimizer steps (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=16, help="rows of 256 tokens per step (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads; part of what makes a run repeatable")
    parser.add_argument("--no-write-tasks", action="store_true", help="do not rewrite the built-in task data")
    parser.add_argument("--log-every", type=int, default=50)
    args = parser.parse_args(argv)
    summary = train(args.out, args.steps, args.batch, args.seed, args.threads, not args.no_write_tasks, args.log_every)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
