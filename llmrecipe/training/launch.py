"""Run a training function in N local processes that form a torch.distributed group (what torchrun does).

The parent waits for all of them; rank 0 reports progress and writes the outputs. Each process gets an
equal share of the CPU threads so two processes on two cores do not oversubscribe them.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Callable

import torch
import torch.multiprocessing as mp

from llmrecipe.host import core_count
from llmrecipe.run.context import StepContext
from llmrecipe.run.record import StepEvents
from llmrecipe.run.reporter import LineReporter
from llmrecipe.training.distributed import World, init_process_group

Target = Callable[[dict[str, Any], StepContext, World], None]


def launch(target: Target, raw_spec: dict[str, Any], ctx: StepContext, nproc: int, device: str) -> None:
    """Call `target(raw_spec, ctx_of_that_process, world)` in `nproc` fresh processes and wait for them."""
    port = _free_port()
    mp.start_processes(_process, args=(nproc, port, target, raw_spec, context_fields(ctx), device), nprocs=nproc,
                       start_method="spawn")


def context_fields(ctx: StepContext) -> dict[str, Any]:
    """What another process needs to rebuild `ctx`: its name, folders and event log (JSON, so it can cross process
    borders)."""
    events = ctx.event.path if isinstance(ctx.event, StepEvents) else None
    return {"name": ctx.name, "inputs": {k: str(v) for k, v in ctx.inputs.items()}, "out_dir": str(ctx.out_dir),
            "scratch_dir": str(ctx.scratch_dir), "device": ctx.device, "events": events}


def context_from(fields: dict[str, Any], world: World) -> StepContext:
    """The step context of one process of a group: rank 0 reports and logs events, the others are silent."""
    ctx = StepContext(name=fields["name"], inputs={k: Path(v) for k, v in fields["inputs"].items()},
                      out_dir=Path(fields["out_dir"]), scratch_dir=Path(fields["scratch_dir"]), device=fields["device"],
                      reporter=LineReporter() if world.is_main else _Silent())
    if world.is_main and fields.get("events"):
        ctx.event = StepEvents(fields["events"], fields["name"])
    return ctx


def _process(rank: int, nproc: int, port: int, target: Target, raw_spec: dict[str, Any], paths: dict, device: str) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(nproc),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(max(1, core_count() // nproc))
    world = init_process_group(device)
    try:
        target(raw_spec, context_from(paths, world), world)
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Silent(LineReporter):
    """Processes other than rank 0 say nothing: one voice per run."""

    def _say(self, text: str) -> None:
        pass

    def progress(self, name: str, total: int, unit: str, completed: int = 0):
        progress = super().progress(name, total, unit, completed)
        progress._print = lambda now: None
        return progress
