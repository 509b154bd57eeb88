"""Run a function in N local processes that form a torch.distributed group (what torchrun does).

The parent waits for all of them. Each process gets an equal share of the CPU threads, so two processes on two cores
do not oversubscribe them.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Callable

import torch
import torch.multiprocessing as mp

from llmrecipe.host import core_count
from llmrecipe.training.distributed import World, init_process_group

Target = Callable[..., None]
"""`target(*args, world)`: importable by name (the processes are spawned), args plain data."""


def spawn(target: Target, args: tuple[Any, ...], nproc: int, device: str) -> None:
    """Call `target(*args, world)` in `nproc` fresh processes of one group and wait for them."""
    port = _free_port()
    mp.start_processes(_process, args=(nproc, port, target, args, device), nprocs=nproc, start_method="spawn")


def _process(rank: int, nproc: int, port: int, target: Target, args: tuple[Any, ...], device: str) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(nproc),
                       "LOCAL_WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(max(1, core_count() // nproc))
    world: World = init_process_group(device)
    try:
        target(*args, world)
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
