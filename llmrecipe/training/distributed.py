"""torch.distributed for training: the process group, model wrapping (DDP or FSDP2) and cross-process sums.

Every process computes the same global batch from (seed, step) and trains on its own contiguous slice of it,
so a run with N processes sees exactly the data of a one-process run; only float summation order differs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current_world() -> World:
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def init_process_group(device: str) -> World:
    """Join the group described by the environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)."""
    if not dist.is_initialized():
        # On GPUs, NCCL for the model's tensors and gloo for the few CPU ones (loss sums, control messages).
        backend = "cpu:gloo,cuda:nccl" if device == "cuda" else "gloo"
        dist.init_process_group(backend)
    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return current_world()


def wrap(model: nn.Module, sharding: str, world: World) -> nn.Module:
    """The module the loop calls: the model itself in one process, else DDP or FSDP2 around it."""
    if world.size == 1:
        return model
    if sharding == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in getattr(model, "blocks", []):
            fully_shard(block)  # each block's weights gathered just in time, then freed
        return fully_shard(model)
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model)


def sum_over_processes(value: float, world: World) -> float:
    if world.size == 1:
        return value
    total = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(total)
    return total.item()


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()
