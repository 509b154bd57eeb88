"""`torchrun --nproc-per-node N -m llmrecipe run RECIPE`: rank 0 runs the recipe, the other ranks train along.

torchrun starts the same command in every process. Only rank 0 schedules: it takes the workdir lock, skips cached
steps, runs the data steps and writes the run record, exactly as a one-process run does. When it starts a step
whose executor trains in a process group (`Executor.joins_group`), it first tells the other ranks the step's kind,
spec and folders; they run that step's training with it, then wait for the next. When the run has finished,
rank 0 dismisses them. If rank 0 fails it reports the error and exits; the other ranks, waiting for its next word,
see it gone and exit quietly, or torchrun stops them.

Messages are JSON on a gloo group of their own with a long timeout: the other ranks may wait for hours while
rank 0 prepares data, far longer than a training collective should ever wait.
"""

from __future__ import annotations

import datetime
import json
from typing import Any, Callable, Mapping

import torch
import torch.distributed as dist

from llmrecipe.errors import StepError
from llmrecipe.host import core_count
from llmrecipe.run.context import StepContext
from llmrecipe.training.distributed import init_process_group
from llmrecipe.training.launch import context_fields, context_from

WAIT_FOR_RANK_0 = datetime.timedelta(days=30)

StepRunner = Callable[[dict[str, Any], StepContext], dict[str, Any]]


class Crew:
    """This process's place in a torchrun launch: the training group and the channel rank 0 speaks on."""

    def __init__(self, device: str):
        self.world = init_process_group(device)
        self._channel = dist.new_group(backend="gloo", timeout=WAIT_FOR_RANK_0)

    def leading(self, executors: Mapping[str, Any]) -> dict[str, StepRunner]:
        """Rank 0's executors: one that trains in a group first calls the other ranks to join it."""
        return {kind: self._calling_crew(kind, executor) if executor.joins_group else on_every_core(executor)
                for kind, executor in executors.items()}

    def follow(self, executors: Mapping[str, Any]) -> None:
        """Ranks other than 0: train in every step rank 0 announces, until it dismisses us."""
        while (message := self._receive()) is not None:
            ctx = context_from(message["context"], self.world)
            try:
                executors[message["kind"]].join(message["spec"], ctx, self.world)
            except StepError:
                pass  # rank 0 meets the same error, reports it and exits; torchrun then stops this process

    def dismiss(self) -> None:
        self._send(None)

    def close(self) -> None:
        dist.destroy_process_group()

    def _calling_crew(self, kind: str, executor: StepRunner) -> StepRunner:
        def run(spec: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
            self._send({"kind": kind, "spec": spec, "context": context_fields(ctx)})
            return executor(spec, ctx)

        return run

    def _send(self, message: dict[str, Any] | None) -> None:
        payload = torch.frombuffer(bytearray(json.dumps(message).encode()), dtype=torch.uint8)
        dist.broadcast(torch.tensor([payload.numel()]), src=0, group=self._channel)
        dist.broadcast(payload, src=0, group=self._channel)

    def _receive(self) -> dict[str, Any] | None:
        size = torch.zeros(1, dtype=torch.int64)
        try:
            dist.broadcast(size, src=0, group=self._channel)
        except RuntimeError:  # rank 0 has gone: it failed and said why; a traceback here would only bury that
            raise SystemExit(1) from None
        payload = torch.empty(int(size.item()), dtype=torch.uint8)
        dist.broadcast(payload, src=0, group=self._channel)
        return json.loads(payload.numpy().tobytes())


def on_every_core(executor: StepRunner) -> StepRunner:
    """A step rank 0 runs alone, on all of this node's cores: torchrun gives every rank one thread
    (OMP_NUM_THREADS=1) so that the training ranks do not oversubscribe the node, but while rank 0 finetunes or
    evaluates alone the other ranks only wait for its next message."""

    def run(spec: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        threads = torch.get_num_threads()
        torch.set_num_threads(core_count())
        try:
            return executor(spec, ctx)
        finally:
            torch.set_num_threads(threads)

    return run
