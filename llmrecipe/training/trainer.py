"""The trainer: one loop for every task (language modelling, packed SFT, classification, ...), resumable at any
checkpoint with byte-identical results on a CPU.

A task supplies each step's batches, an objective module (its loss as a sum, and a count) and its validation
metrics; everything else is here, so every task has all of it: DDP or FSDP2 across processes, torch.compile (the loss
inside the compiled graph), bf16 autocast, activation checkpointing, gradient accumulation without a gradient
reduction per micro-batch, clipping, non-finite handling (stop, skip, roll back), validation, early stopping, the best
and last weights, metrics with MFU, and exact resume with any number of processes.

On a GPU the host waits for the device once per optimizer step, when it reads the step's loss and gradient norm
(both needed to decide whether to apply the update); micro-batches never wait, and the next batch is built in a
background thread meanwhile.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from llmrecipe import preemption
from llmrecipe.errors import StepError
from llmrecipe.training.checkpoint import latest_checkpoint, load_checkpoint, load_model_weights, save_best, save_checkpoint
from llmrecipe.training.config import TrainConfig
from llmrecipe.training.distributed import World, all_reduce_sum, barrier, distribute, gradient_sync
from llmrecipe.training.metrics import MetricsLog
from llmrecipe.training.optim import build_optimizer
from llmrecipe.training.prefetch import Prefetcher
from llmrecipe.training.saved import CHECKPOINTS
from llmrecipe.training.schedule import learning_rate
from llmrecipe.training.speed import Speed
from llmrecipe.training.task import Batch, StepBatch, Task, share

STOP_REASONS = tuple(preemption.EXIT_CODES)
"""Why a run may be asked to stop (SIGINT, SIGTERM, max_time), in the order the processes agree on them."""
MAX_ROLLBACKS = 5
"""With on_nonfinite = "rollback", give up after this many: the run is diverging, not hitting one bad batch."""


class TrainerIO(Protocol):
    """Where the trainer reports and keeps its resume state (an executor's StepContext is one)."""

    scratch_dir: Path
    event: Callable[[dict[str, Any]], None]

    def log(self, message: str) -> None: ...

    def progress(self, total: int, unit: str, completed: int = 0) -> Any: ...


def total_steps(config: TrainConfig, task: Task) -> int:
    """The budget in optimizer steps: as configured, or from epochs of the task's examples."""
    if config.total_steps is not None:
        return config.total_steps
    total = max(1, math.ceil(config.epochs * task.examples / config.batch_size))
    if config.optim.warmup >= total:
        raise StepError(f"{config.epochs} epochs of {task.examples:g} examples in batches of {config.batch_size} are "
                        f"{total} steps, not more than optim.warmup = {config.optim.warmup}; lower the warmup or raise "
                        "budget.epochs")
    return total


class Trainer:
    def __init__(self, model: nn.Module, task: Task, config: TrainConfig, io: TrainerIO, world: World = World()):
        self.model, self.task, self.config, self.io, self.world = model, task, config, io, world
        self.runner: nn.Module | None = None
        """The module `fit` calls: the task's objective, distributed and compiled."""
        self.total_steps = total_steps(config, task)
        self.checkpoints = io.scratch_dir / CHECKPOINTS

    def fit(self) -> dict[str, Any]:
        """Train the model in place for the budget (or until early stopping); returns the summary metrics and the
        metrics records. Leaves the last weights in the model, and the best ones in `<scratch>/best/`."""
        c, world, task = self.config, self.world, self.task
        model = self._prepared_model()
        self.runner = runner = distribute(task.objective(model).to(c.device), model, self._blocks(model), world, c.sharding,
                            c.precision, c.device, c.compile, task.variable_shapes)
        optimizer = build_optimizer(model, c.optim, c.device)
        counters = self._start(model, optimizer, runner)
        metrics = MetricsLog(self.io.scratch_dir / "metrics.jsonl", counters["step"], self.io.event,
                             enabled=world.is_main, tensorboard=c.tensorboard)
        speed = Speed(c.device, c.precision, c.flops_per_token, world.size, world.is_main, counters["train_seconds"],
                      counters["tokens"])
        feed = Prefetcher(task, share(c.batch_size, world.size, world.rank), c.micro_batch_size, c.device,
                          self.total_steps)
        progress = self.io.progress(self.total_steps, "steps", completed=counters["step"])
        last_val: dict[str, float] = {}
        stopped_early, rollbacks, grad_norm = False, 0, float("nan")
        step = counters["step"]
        try:
            with preemption.deferred():  # a stop request (SIGTERM, SIGINT, max_time) waits for a step's end
                while step < self.total_steps:
                    lr = learning_rate(c.optim, step, self.total_steps)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    torch.manual_seed(c.seed * 1_000_003 + step)  # dropout masks are a function of the step too
                    batch = feed.get(step)
                    speed.start()
                    skipped = step in counters["skip_steps"]  # a batch that once gave a non-finite loss, before a rollback
                    if skipped:  # a batch left out after a rollback: nothing to reduce, every process asks alike
                        loss, grad_norm, stop = 0.0, float("nan"), preemption.pending()
                    else:
                        loss, grad_norm, stop = self._train_step(runner, model, batch)
                    if not skipped and not (math.isfinite(loss) and math.isfinite(grad_norm)):
                        optimizer.zero_grad(set_to_none=True)
                        if c.on_nonfinite == "rollback":
                            rollbacks += 1
                            counters = self._roll_back(model, optimizer, counters, step, rollbacks, loss)
                            metrics.truncate(counters["step"])
                            step = counters["step"]
                            continue
                        self._nonfinite(step, loss, grad_norm)  # stop raises; skip goes on without this batch
                        counters["skip_steps"] = sorted({*counters["skip_steps"], step})
                        skipped = True
                    if not skipped:
                        optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    step += 1
                    speed.stop(batch.tokens)
                    counters.update(step=step, tokens=speed.tokens, train_seconds=speed.seconds)
                    if not skipped:
                        counters["unlogged_losses"].append(loss)

                    if (step % c.log_every == 0 or step == self.total_steps) and counters["unlogged_losses"]:
                        losses = counters["unlogged_losses"]
                        metrics.write({"step": step, "loss": sum(losses) / len(losses), "lr": lr, "grad_norm": grad_norm,
                                       "tokens": counters["tokens"], **speed.figures()})
                        counters["unlogged_losses"] = []
                    if step % c.eval_every == 0 or step == self.total_steps:
                        if (scores := self.evaluate(runner, task.validation_batches())) is not None:
                            last_val = scores
                            metrics.write({"step": step, **scores})
                            stopped_early = self._track_best(counters, scores["val_loss"], model)
                    saved = step % c.checkpoint_every == 0 and step < self.total_steps and not stopped_early
                    if saved:
                        save_checkpoint(self.checkpoints, model, optimizer, counters, world)
                    if stop is not None and step < self.total_steps and not stopped_early:
                        if not saved:
                            save_checkpoint(self.checkpoints, model, optimizer, counters, world)
                        raise preemption.Interrupted(stop, saved=f"checkpoint at step {step} of {self.total_steps}")
                    progress.advance(1, loss=loss, lr=lr, tok_s=speed.tokens_per_s(),
                                     **({"val_loss": last_val["val_loss"]} if last_val else {}))
                    if stopped_early:
                        self.io.log(f"early stopping at step {step}: no better validation loss in "
                                    f"{c.early_stopping_patience} evaluations")
                        break
        finally:
            feed.close()
            progress.close()
        barrier(world)
        return self._summary(counters, last_val, stopped_early, speed, metrics.records, runner)

    # --- one optimizer step -------------------------------------------------------------------------------------

    def _train_step(self, runner: nn.Module, model: nn.Module,
                    batch: StepBatch) -> tuple[float, float, preemption.Request | None]:
        """Forward and backward over this process's micro-batches, then clip; returns the global batch's mean loss,
        the gradient norm and whether any process was asked to stop, read from the device together (the step's one
        host sync; the stop requests ride along in the loss's all-reduce, so every process stops at the same step)."""
        scale = self.world.size / batch.normalizer  # processes average gradients; the loss is a global mean
        total = torch.zeros((), device=self.config.device)
        last = len(batch.micro_batches) - 1
        for index, micro in enumerate(batch.micro_batches):
            with gradient_sync(runner, index == last):
                with self._autocast():
                    stats = runner(**micro)
                (stats["loss"] * scale).backward()
            total += stats["loss"].detach().float()
        norm = _clip_gradients(model, self.config.optim.grad_clip)
        asked = torch.tensor([float(self._local_stop() == reason) for reason in STOP_REASONS], device=total.device)
        summed = all_reduce_sum(torch.cat([total[None], asked]), self.world)
        loss, grad_norm, *stops = torch.cat([summed[:1] / batch.normalizer, norm.float()[None], summed[1:]]).tolist()
        stop = next((preemption.Request(reason) for reason, count in zip(STOP_REASONS, stops) if count), None)
        return loss, grad_norm, stop

    @staticmethod
    def _local_stop() -> str | None:
        request = preemption.pending()
        return request.reason if request is not None else None

    # --- validation ---------------------------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, runner: nn.Module, batches: list[Batch] | None) -> dict[str, float] | None:
        """The task's validation metrics over `batches` (each process scores its share; every process runs the same
        number of forwards, which FSDP's collectives need); None without batches."""
        if not batches:
            return None
        size = math.ceil(len(batches) / self.world.size)
        mine = batches[self.world.rank * size : (self.world.rank + 1) * size]
        padding = size - len(mine)  # forwards this process runs only to keep step with the others
        was_training = runner.training
        runner.eval()
        totals: dict[str, torch.Tensor] = {}
        for index, batch in enumerate(mine + [batches[0]] * padding):
            with self._autocast():
                stats = runner(**{k: v.to(self.config.device) for k, v in batch.items()})
            for name, value in stats.items():
                counted = value.float() if index < len(mine) else torch.zeros_like(value, dtype=torch.float32)
                totals[name] = totals[name] + counted if name in totals else counted
        runner.train(was_training)
        flat = all_reduce_sum(torch.cat([t.reshape(-1) for t in totals.values()]), self.world).cpu()
        sizes = [t.numel() for t in totals.values()]
        summed = {name: part.reshape(t.shape) for (name, t), part in zip(totals.items(), flat.split(sizes))}
        return self.task.validation_metrics(summed)

    # --- state ----------------------------------------------------------------------------------------------------

    def _prepared_model(self) -> nn.Module:
        model = self.model.to(self.config.device).train()
        for module in model.modules():  # the families' modules read it in their forward
            if hasattr(module, "activation_checkpointing"):
                module.activation_checkpointing = self.config.activation_checkpointing
        return model

    def _blocks(self, model: nn.Module) -> list[nn.Module]:
        """The modules FSDP shards one by one: the entries of the model's block lists (the family's FSDP unit)."""
        unit = self.config.fsdp_unit
        if unit is None:
            return []
        return [block for name, module in model.named_modules()
                if name.rsplit(".", 1)[-1] == unit and isinstance(module, nn.ModuleList) for block in module]

    def _start(self, model: nn.Module, optimizer: torch.optim.Optimizer, runner: nn.Module) -> dict[str, Any]:
        """The loop's counters, from the newest intact checkpoint or fresh; saved in every checkpoint."""
        counters: dict[str, Any] = {"step": 0, "tokens": 0, "train_seconds": 0.0, "best_val_loss": None,
                                    "best_step": None, "evals_without_improvement": 0, "skip_steps": [],
                                    "unlogged_losses": [], "base_val_loss": None,
                                    "base_scores": {}}
        if (checkpoint := latest_checkpoint(self.checkpoints, self.io.log)) is not None:
            counters.update(load_checkpoint(checkpoint, model, optimizer, self.config.device, self.world))
            self.io.log(f"resumed from checkpoint at step {counters['step']}")
            return counters
        if self.config.score_start and (scores := self.evaluate(runner, self.task.validation_batches())):
            counters["base_val_loss"] = scores["val_loss"]  # the starting model, for comparison
            counters["base_scores"] = scores
        if self.config.on_nonfinite == "rollback":
            save_checkpoint(self.checkpoints, model, optimizer, counters, self.world)  # something to roll back to
        return counters

    def _roll_back(self, model: nn.Module, optimizer: torch.optim.Optimizer, counters: dict[str, Any], step: int,
                   rollbacks: int, loss: float) -> dict[str, Any]:
        if rollbacks > MAX_ROLLBACKS:
            raise StepError(f"the loss became non-finite {rollbacks} times; lower optim.lr or set optim.grad_clip")
        self.io.log(f"loss became {loss} at step {step}: rolling back")
        skip_steps = sorted({*counters["skip_steps"], step})
        restored = {**counters, **load_checkpoint(latest_checkpoint(self.checkpoints, self.io.log), model, optimizer,
                                                  self.config.device, self.world)}
        return {**restored, "skip_steps": skip_steps}

    def _nonfinite(self, step: int, loss: float, grad_norm: float) -> None:
        what = f"training loss became {loss}" if not math.isfinite(loss) else f"the gradient norm became {grad_norm}"
        if self.config.on_nonfinite == "stop":
            raise StepError(f"{what} at step {step}; lower optim.lr or set optim.grad_clip, or set on_nonfinite = "
                            "'skip' or 'rollback', then run again (it resumes from the last checkpoint)")
        self.io.log(f"{what} at step {step}: skipping that batch")

    def _track_best(self, counters: dict[str, Any], val_loss: float, model: nn.Module) -> bool:
        """Keep the best weights; True when early stopping's patience has run out."""
        if counters["best_val_loss"] is None or val_loss < counters["best_val_loss"]:
            counters.update(best_val_loss=val_loss, best_step=counters["step"], evals_without_improvement=0)
            save_best(self.io.scratch_dir / "best", model, self.world)
        else:
            counters["evals_without_improvement"] += 1
        patience = self.config.early_stopping_patience
        return patience is not None and counters["evals_without_improvement"] >= patience

    def _summary(self, counters: dict[str, Any], last_val: dict[str, float], stopped_early: bool, speed: Speed,
                 records: list[dict[str, Any]], runner: nn.Module) -> dict[str, Any]:
        train_losses = [r["loss"] for r in records if "loss" in r]
        summary = {
            "steps": counters["step"], "tokens": counters["tokens"],
            "train_loss": train_losses[-1] if train_losses else None,
            "val_loss": last_val.get("val_loss"), **{k: v for k, v in last_val.items() if k != "val_loss"},
            "best_val_loss": counters["best_val_loss"], "best_step": counters["best_step"],
            "stopped_early": stopped_early, "skipped_steps": counters["skip_steps"],
            "tokens_per_s": round(speed.tokens_per_s(), 1), "mfu": round(speed.mfu(), 4),
            "train_seconds": round(speed.seconds, 2), "peak_memory_bytes": speed.figures()["memory_bytes"],
            "metrics_records": records,
        }
        if speed.capped:
            summary["mfu_capped"] = True
        if self.config.score_start:
            summary["base_val_loss"] = counters["base_val_loss"]
            # the starting model's other validation metrics too (a preference step's reward accuracy, ...)
            summary.update({f"base_{name}": value for name, value in counters["base_scores"].items()
                            if name != "val_loss"})
        return summary

    def score_best(self) -> float | None:
        """After `fit`: the best weights' validation loss on the task's final batches (None without them, or
        without best weights); leaves the best weights in the model."""
        batches = self.task.final_batches()
        best = self.io.scratch_dir / "best" / "model.safetensors"
        if batches is None or not best.is_file():
            return None
        load_model_weights(best, self.model, self.config.device, self.world)
        scores = self.evaluate(self.runner, batches)
        return scores["val_loss"] if scores else None

    def _autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.config.device, self.config.precision)


def autocast(device: str, precision: str) -> contextlib.AbstractContextManager:
    """The forward passes' precision: bf16 autocast, or the weights' own dtype."""
    if precision == "bf16":
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _clip_gradients(model: nn.Module, max_norm: float | None) -> torch.Tensor:
    """The global norm of the trained parameters' gradients before clipping (clipping only when `max_norm` is set),
    as a tensor on the device: reading it is the caller's one sync."""
    trained = [p for p in model.parameters() if p.requires_grad and p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(trained, max_norm if max_norm is not None else float("inf"))
    return norm.full_tensor() if isinstance(norm, DTensor) else norm
