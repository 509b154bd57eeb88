"""Training steps in a process group: started here (`run.nproc`), or joined as rank 0 of a torchrun launch.

`train_in_group` runs an executor's training function in this process, in `nproc` spawned processes, or, under
torchrun, in this process joined to the launch's group. Under `torchrun --nproc-per-node N -m llmrecipe run RECIPE`
every process runs the same command, but only rank 0 schedules: it takes the workdir lock, skips cached steps, runs
the data steps and writes the run record, exactly as a one-process run does. When it starts a step whose executor
trains in a group (`Executor.joins_group`), it first tells the other ranks the step's kind, spec and folders; they
run that step's training with it, then wait for the next. When the run has finished, rank 0 dismisses them. If rank
0 fails it reports the error and exits; the other ranks, waiting for its next word, see it gone and exit quietly.

Messages are JSON on a gloo group of their own with a long timeout: the other ranks may wait for hours while rank 0
prepares data, far longer than a training collective should ever wait.
"""

from __future__ import annotations

import contextlib
import datetime
import json
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from llmrecipe.errors import StepError
from llmrecipe.host import core_count, launched_by_torchrun, torchrun_world
from llmrecipe.run.context import StepContext
from llmrecipe.run.record import StepEvents
from llmrecipe.run.reporter import LineReporter

WAIT_FOR_RANK_0 = datetime.timedelta(days=30)

GroupTarget = Callable[[dict[str, Any], StepContext, Any], None]
"""`f(raw_spec, ctx, world)`: one process's share of a training step (a module-level function: it is spawned)."""
StepRunner = Callable[[dict[str, Any], StepContext], dict[str, Any]]


def train_in_group(target: GroupTarget, raw_spec: dict[str, Any], ctx: StepContext, nproc: int, device: str) -> None:
    """Run `target` in this process, in `nproc` processes started here, or as rank 0 of the torchrun launch this
    process belongs to (whose other ranks `follow` it into the step)."""
    from llmrecipe.training.distributed import World, init_process_group

    if launched_by_torchrun():
        target(raw_spec, ctx, init_process_group(device))
    elif nproc > 1:
        from llmrecipe.training.launch import spawn

        ctx.log(f"training in {nproc} processes")
        spawn(_in_spawned_process, (target, raw_spec, context_fields(ctx)), nproc, device)
    else:
        target(raw_spec, ctx, World())


def _in_spawned_process(target: GroupTarget, raw_spec: dict[str, Any], fields: dict[str, Any], world: Any) -> None:
    target(raw_spec, context_from(fields, world.is_main), world)


def context_fields(ctx: StepContext) -> dict[str, Any]:
    """What another process needs to rebuild `ctx`: its name, folders and event log (JSON, so it can cross process
    borders)."""
    events = ctx.event.path if isinstance(ctx.event, StepEvents) else None
    return {"name": ctx.name, "inputs": {k: str(v) for k, v in ctx.inputs.items()}, "out_dir": str(ctx.out_dir),
            "scratch_dir": str(ctx.scratch_dir), "device": ctx.device, "events": events,
            "external": [f.model_dump(mode="json") for f in ctx.external]}


def context_from(fields: dict[str, Any], main: bool) -> StepContext:
    """The step context of one process of a group: the main process reports and logs events, the others are silent."""
    from llmrecipe.plan.plan import ExternalFile

    ctx = StepContext(name=fields["name"], inputs={k: Path(v) for k, v in fields["inputs"].items()},
                      out_dir=Path(fields["out_dir"]), scratch_dir=Path(fields["scratch_dir"]), device=fields["device"],
                      reporter=LineReporter() if main else _Silent(),
                      external=[ExternalFile.model_validate(f) for f in fields.get("external", [])])
    if main and fields.get("events"):
        ctx.event = StepEvents(fields["events"], fields["name"])
    return ctx


@contextlib.contextmanager
def process_executors(executors: Mapping[str, Any], device: str) -> Iterator[Mapping[str, StepRunner] | None]:
    """The executor table this process runs a plan with: `executors` in a plain run; under torchrun, rank 0's
    (which calls the other ranks into each training step), and None for the other ranks, which have trained along
    in every step by the time this yields."""
    if not launched_by_torchrun():
        yield executors
        return
    crew = Crew(device)
    try:
        if torchrun_world()[0] != 0:
            crew.follow(executors)
            yield None
            return
        yield crew.leading(executors)
        crew.dismiss()  # only after success: on failure rank 0 exits with the error and torchrun stops the rest
    finally:
        crew.close()


class Crew:
    """This process's place in a torchrun launch: the training group and the channel rank 0 speaks on."""

    def __init__(self, device: str):
        import torch.distributed as dist

        from llmrecipe.training.distributed import init_process_group

        self.world = init_process_group(device)
        self._channel = dist.new_group(backend="gloo", timeout=WAIT_FOR_RANK_0)

    def leading(self, executors: Mapping[str, Any]) -> dict[str, StepRunner]:
        """Rank 0's executors: one that trains in a group first calls the other ranks to join it."""
        return {kind: self._calling_crew(kind, executor) if executor.joins_group else on_every_core(executor)
                for kind, executor in executors.items()}

    def follow(self, executors: Mapping[str, Any]) -> None:
        """Ranks other than 0: train in every step rank 0 announces, until it dismisses us."""
        while (message := self._receive()) is not None:
            ctx = context_from(message["context"], main=False)
            try:
                executors[message["kind"]].join(message["spec"], ctx, self.world)
            except StepError:
                pass  # rank 0 meets the same error, reports it and exits; torchrun then stops this process

    def dismiss(self) -> None:
        self._send(None)

    def close(self) -> None:
        import torch.distributed as dist

        dist.destroy_process_group()

    def _calling_crew(self, kind: str, executor: StepRunner) -> StepRunner:
        def run(spec: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
            self._send({"kind": kind, "spec": spec, "context": context_fields(ctx)})
            return executor(spec, ctx)

        return run

    def _send(self, message: dict[str, Any] | None) -> None:
        import torch
        import torch.distributed as dist

        payload = torch.frombuffer(bytearray(json.dumps(message).encode()), dtype=torch.uint8)
        dist.broadcast(torch.tensor([payload.numel()]), src=0, group=self._channel)
        dist.broadcast(payload, src=0, group=self._channel)

    def _receive(self) -> dict[str, Any] | None:
        import torch
        import torch.distributed as dist

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
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(core_count())
        try:
            return executor(spec, ctx)
        finally:
            torch.set_num_threads(threads)

    return run


class _Silent(LineReporter):
    """Processes other than rank 0 say nothing: one voice per run."""

    def _say(self, text: str) -> None:
        pass

    def progress(self, name: str, total: int, unit: str, completed: int = 0):
        progress = super().progress(name, total, unit, completed)
        progress._print = lambda now: None
        return progress
