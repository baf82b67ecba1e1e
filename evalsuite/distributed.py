"""Data parallelism over torch.distributed, as `torchrun` starts it (NCCL on GPUs, gloo on CPU).

    torchrun --nproc-per-node 2 -m evalsuite run suite.yaml

Every rank loads and quantizes its own copy of each model and builds the same requests. Each rank computes
a disjoint share of them (whole batches in the same order as one process would form them, or whole
documents for perplexity) and commits them to the run's store; after a barrier every rank reads all of them
back, so every rank holds the same results, and rank 0 alone writes results.json and the reports. A rank
that dies loses only its batch in flight; a rerun resumes from the store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from evalsuite.errors import UserError


class DistributedError(UserError, RuntimeError):
    pass


@dataclass(frozen=True)
class Shard:
    rank: int
    world: int
    local_rank: int

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mine(self, index: int) -> bool:
        return index % self.world == self.rank

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def from_environment() -> Shard | None:
    """The shard torchrun describes in the environment (process group started), or None for one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            if local_rank >= torch.cuda.device_count():
                raise DistributedError(
                    f"rank {rank} is local rank {local_rank} but this machine has {torch.cuda.device_count()} "
                    "GPU(s): start as many ranks per node as there are GPUs (torchrun --nproc-per-node), or hide "
                    "the GPUs (CUDA_VISIBLE_DEVICES=) to run the ranks on the CPU"
                )
            torch.cuda.set_device(local_rank)
        torch.distributed.init_process_group(backend=backend)
    return Shard(rank, world, local_rank)


def device_for(shard: Shard | None, requested: str) -> str:
    """Each rank on its own GPU when the run asks for CUDA (or auto finds one)."""
    if shard is None or requested not in ("auto", "cuda"):
        return requested
    return f"cuda:{shard.local_rank}" if torch.cuda.is_available() else "cpu"
