"""torch.distributed for training: the process group, the module the trainer calls (DDP or FSDP2 around the task's
objective, compiled), gradient synchronisation across micro-batches, and sums across processes.

Every process computes the same global batch composition from (seed, step) and trains on its own contiguous slice of
it, so a run with N processes sees exactly the data of a one-process run; only float summation order differs.
"""

from __future__ import annotations

import contextlib
import inspect
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
    """Join the group described by the environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_RANK)."""
    if not dist.is_initialized():
        if device == "cuda":
            # The device first, and named to the group: NCCL then binds each rank to its own GPU at once instead of
            # guessing (and every rank creating a context on GPU 0).
            local = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(local)
            # NCCL for the model's tensors; gloo for the few CPU ones (control messages between ranks).
            dist.init_process_group("cpu:gloo,cuda:nccl", device_id=local)
        else:
            dist.init_process_group("gloo")
    return current_world()


def distribute(objective: nn.Module, model: nn.Module, blocks: nn.ModuleList | None, world: World, sharding: str,
               precision: str, device: str, compile: bool, dynamic: bool) -> nn.Module:
    """The module the trainer calls: the objective itself in one process, else wrapped by DDP or FSDP2 (FSDP2 also in
    a group of one, which shards nothing but runs the same code); compiled
    whole (one process, DDP: the loss inside the graph), or block by block under FSDP2 (each block's parameters are
    gathered just in time around its compiled code)."""
    if sharding == "fsdp" and dist.is_initialized():  # in a group of any size, one process included
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        # bf16 compute with fp32 gradient reduction: gradients summed over processes keep their precision.
        policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
                  if precision == "bf16" else MixedPrecisionPolicy())
        for block in blocks if blocks is not None else []:
            if compile:
                block.compile(dynamic=dynamic or None)
            fully_shard(block, mp_policy=policy)
        fully_shard(objective, mp_policy=policy)
        return objective
    if world.size > 1:
        from torch.nn.parallel import DistributedDataParallel

        # Our buffers (rotary tables, class weights) are functions of the shape: no sync before each forward. Newer
        # torch names that setting `forward_sync_buffers`; torch 2.11 knows only `broadcast_buffers`.
        no_buffer_sync = ({"forward_sync_buffers": False}
                          if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                          else {"broadcast_buffers": False})
        objective = DistributedDataParallel(
            objective, device_ids=[torch.cuda.current_device()] if device == "cuda" else None,
            gradient_as_bucket_view=True,  # gradients live in the all-reduce buckets: no copy in, none out
            **no_buffer_sync,
        )
    return torch.compile(objective, dynamic=dynamic or None) if compile else objective


def gradient_sync(runner: nn.Module, enabled: bool) -> contextlib.AbstractContextManager:
    """With gradient accumulation only the last micro-batch's backward needs to reduce gradients across processes:
    DDP through `no_sync`, FSDP2 through `set_requires_gradient_sync` (it has no `no_sync`)."""
    if hasattr(runner, "set_requires_gradient_sync"):
        runner.set_requires_gradient_sync(enabled)
        return contextlib.nullcontext()
    if enabled or not hasattr(runner, "no_sync"):
        return contextlib.nullcontext()
    return runner.no_sync()


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def all_reduce_sum(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """The tensor summed over processes (in place; on the tensor's device, so NCCL on GPUs)."""
    if world.size > 1:
        dist.all_reduce(tensor)
    return tensor


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()
