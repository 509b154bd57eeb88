"""Run a function in N local processes that form a torch.distributed group (what torchrun does).

The parent waits for all of them. Each process gets an equal share of the CPU threads, so two processes on two cores
do not oversubscribe them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from typing import Any, Callable

import torch
import torch.multiprocessing as mp

from llmrecipe import preemption
from llmrecipe.host import core_count
from llmrecipe.training.distributed import World, init_process_group

Target = Callable[..., None]
"""`target(*args, world)`: importable by name (the processes are spawned), args plain data."""


def spawn(target: Target, args: tuple[Any, ...], nproc: int, device: str) -> None:
    """Call `target(*args, world)` in `nproc` fresh processes of one group and wait for them.

    A stop request to this process (SIGTERM, SIGINT, max_time) is passed on (`preemption.FORWARD_SIGNAL`), so the processes save a
    checkpoint at the end of their step and exit; this process then raises `preemption.Interrupted`.
    """
    port = _free_port()
    with preemption.deferred():
        group = mp.start_processes(_process, args=(nproc, port, target, args, device), nprocs=nproc,
                                   start_method="spawn", join=False)
        forwarded = False
        try:
            while not group.join(timeout=0.5):
                if not forwarded and preemption.pending() is not None:
                    for process in group.processes:
                        with contextlib.suppress(ProcessLookupError):  # it may have stopped on its own signal
                            os.kill(process.pid, preemption.FORWARD_SIGNAL)
                    forwarded = True
        except mp.ProcessExitedException as exited:
            stopped = [reason for reason, code in preemption.EXIT_CODES.items() if code == exited.exit_code]
            if stopped:
                request = preemption.pending() or preemption.Request(stopped[0])
                raise preemption.Interrupted(request, saved="a checkpoint of the training processes") from None
            if exited.signal_name and (request := preemption.pending()) is not None:
                raise preemption.Interrupted(request) from None  # a process stopped before it could save
            raise


def _process(rank: int, nproc: int, port: int, target: Target, args: tuple[Any, ...], device: str) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(nproc),
                       "LOCAL_WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(max(1, core_count() // nproc))
    # A forward from the parent that lands after handling() has put the handlers back (this process already
    # stopped on the group's own signal) must not kill it while it exits.
    signal.signal(preemption.FORWARD_SIGNAL, signal.SIG_IGN)
    with preemption.handling():  # signals become stop requests; the parent's max_time deadline comes along
        world: World = init_process_group(device)
        try:
            target(*args, world)
        except preemption.Interrupted as stop:
            raise SystemExit(stop.exit_code) from None  # the parent reads why from the exit code
        finally:
            torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
