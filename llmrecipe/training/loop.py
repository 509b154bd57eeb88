"""The training loop: one visible function, resumable at any checkpoint with byte-identical results.

Every random draw is a function of (seed, step): window offsets, masks, dropout. So the data cursor of a
resumed run is its step number, and N processes agree on the global batch without talking about it.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from llmrecipe.errors import StepError
from llmrecipe.plan.derive import flops_per_token, parameter_count
from llmrecipe.plan.specs import PretrainSpec
from llmrecipe.run.context import StepContext
from llmrecipe.training.batches import (
    IGNORE, TokenFile, mask_seed, step_batch, step_offsets, tiled_offsets, validation_offsets,
)
from llmrecipe.training.checkpoint import latest_checkpoint, load_checkpoint, load_model_weights, save_best, save_checkpoint
from llmrecipe.training.distributed import World, barrier, sum_over_processes, wrap
from llmrecipe.training.loss import cross_entropy_sum
from llmrecipe.training.metrics import MetricsLog
from llmrecipe.training.optim import build_optimizer
from llmrecipe.training.peak import matmul_peak_flops, peak_memory_bytes
from llmrecipe.training.schedule import learning_rate

MAX_ROLLBACKS = 5
"""With on_nonfinite = "rollback", give up after this many: the run is diverging, not hitting one bad batch."""


@dataclass
class TrainData:
    train: TokenFile
    val: TokenFile | None
    """None when the validation split is too short for one window; validation is then skipped."""


def train(spec: PretrainSpec, model: nn.Module, data: TrainData, ctx: StepContext, world: World = World()) -> dict[str, Any]:
    """Train `model` in place for `spec.total_steps` steps (or until early stopping); returns summary metrics."""
    if spec.batch_size % world.size:
        raise StepError(
            f"batch_size = {spec.batch_size} sequences do not split evenly over {world.size} processes; "
            f"launch a number of processes that divides it, or change batch_size"
        )
    model.to(spec.device).train()
    model.activation_checkpointing = spec.activation_checkpointing
    wrapped = wrap(model, spec.sharding, world)  # before the optimizer: FSDP replaces parameters by shards
    optimizer = build_optimizer(model, spec.optim, spec.device)
    # Everything the loop carries from step to step; saved in each checkpoint so a resume continues it.
    counters: dict[str, Any] = {"step": 0, "tokens": 0, "best_val_loss": None, "best_step": None,
                                "evals_without_improvement": 0, "skip_steps": [], "unlogged_losses": []}
    checkpoints = ctx.scratch_dir / "checkpoints"
    if (checkpoint := latest_checkpoint(checkpoints)) is not None:
        counters = {**counters, **load_checkpoint(checkpoint, model, optimizer, spec.device)}
        ctx.log(f"resumed from checkpoint at step {counters['step']}")
    elif spec.on_nonfinite == "rollback":
        save_checkpoint(checkpoints, model, optimizer, counters, world)  # something to roll back to
    metrics = MetricsLog(ctx.scratch_dir / "metrics.jsonl", counters["step"], ctx.event, enabled=world.is_main,
                         tensorboard=spec.tensorboard)
    forward = torch.compile(wrapped) if spec.compile else wrapped
    val_offsets = _validation_offsets(spec, data)
    speed = Speed(spec, model, world)
    progress = ctx.progress(spec.total_steps, "steps", completed=counters["step"])
    last_val, stopped_early, rollbacks = None, False, 0

    step = counters["step"]
    while step < spec.total_steps:
        speed.start()
        lr = learning_rate(spec.optim, step, spec.total_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        torch.manual_seed(spec.seed * 1_000_003 + step)  # dropout masks are a function of the step too
        skipped = step in counters["skip_steps"]  # a batch that once gave a non-finite loss, before a rollback
        step_loss = 0.0 if skipped else accumulate_gradients(forward, spec, data.train, step, world)
        if not math.isfinite(step_loss):
            optimizer.zero_grad(set_to_none=True)
            if spec.on_nonfinite == "stop":
                raise StepError(
                    f"training loss became {step_loss} at step {step}; lower optim.lr or set optim.grad_clip, or set "
                    "on_nonfinite = 'skip' or 'rollback', then run again (it resumes from the last checkpoint)"
                )
            ctx.log(f"loss became {step_loss} at step {step}: {'skipping that batch' if spec.on_nonfinite == 'skip' else 'rolling back'}")
            if spec.on_nonfinite == "rollback":
                rollbacks += 1
                if rollbacks > MAX_ROLLBACKS:
                    raise StepError(f"the loss became non-finite {rollbacks} times; lower optim.lr or set optim.grad_clip")
                skip_steps = sorted({*counters["skip_steps"], step})
                counters = {**counters, **load_checkpoint(latest_checkpoint(checkpoints), model, optimizer, spec.device)}
                counters["skip_steps"] = skip_steps
                metrics.truncate(counters["step"])
                step = counters["step"]
                continue
            counters["skip_steps"] = sorted({*counters["skip_steps"], step})
        if not skipped and math.isfinite(step_loss):
            grad_norm = _clip_gradients(model, spec.optim.grad_clip)
            optimizer.step()
        else:
            grad_norm = float("nan")
        optimizer.zero_grad(set_to_none=True)
        step += 1
        counters["step"], counters["tokens"] = step, counters["tokens"] + spec.tokens_per_step
        speed.stop()
        if math.isfinite(step_loss) and not skipped:
            counters["unlogged_losses"].append(step_loss)

        if (step % spec.log_every == 0 or step == spec.total_steps) and counters["unlogged_losses"]:
            metrics.write({"step": step, "loss": _mean(counters["unlogged_losses"]), "lr": lr, "grad_norm": grad_norm,
                           "tokens": counters["tokens"], **speed.figures()})
            counters["unlogged_losses"] = []
        if val_offsets is not None and (step % spec.eval_every == 0 or step == spec.total_steps):
            last_val = validation_loss(forward, data.val, val_offsets, spec, world)
            metrics.write({"step": step, "val_loss": last_val})
            if counters["best_val_loss"] is None or last_val < counters["best_val_loss"]:
                counters["best_val_loss"], counters["best_step"], counters["evals_without_improvement"] = last_val, step, 0
                save_best(ctx.scratch_dir / "best", model, world)
            else:
                counters["evals_without_improvement"] += 1
            patience = spec.early_stopping_patience
            stopped_early = patience is not None and counters["evals_without_improvement"] >= patience
        if step % spec.checkpoint_every == 0 and step < spec.total_steps and not stopped_early:
            save_checkpoint(checkpoints, model, optimizer, counters, world)
        progress.advance(1, loss=step_loss, lr=lr, tok_s=speed.tokens_per_s(),
                         **({"val_loss": last_val} if last_val is not None else {}))
        if stopped_early:
            ctx.log(f"early stopping at step {step}: no better validation loss in {spec.early_stopping_patience} evaluations")
            break
    progress.close()
    barrier(world)
    train_losses = [r["loss"] for r in metrics.records if "loss" in r]
    return {
        "steps": counters["step"],
        "tokens": counters["tokens"],
        "train_loss": train_losses[-1] if train_losses else None,
        "val_loss": last_val,
        "best_val_loss": counters["best_val_loss"],
        "best_step": counters["best_step"],
        "stopped_early": stopped_early,
        "skipped_steps": counters["skip_steps"],
        "tokens_per_s": round(speed.tokens_per_s(), 1),
        "mfu": round(speed.mfu(), 4),
        "train_seconds": round(speed.seconds, 2),
        "peak_memory_bytes": peak_memory_bytes(spec.device),
        "metrics_records": metrics.records,
    }


def accumulate_gradients(forward: nn.Module, spec: PretrainSpec, tokens: TokenFile, step: int, world: World) -> float:
    """Forward and backward over this process's share of step `step`'s global batch; returns the global loss.

    The loss is the sum over all predicted tokens of the global batch divided by their count, whatever the number
    of micro-batches or processes: each micro-batch adds its summed loss / the global count (times the process
    count, because DDP averages gradients over processes).
    """
    offsets = step_offsets(spec.seed, step, spec.batch_size, len(tokens), spec.model.seq_len)
    x, y = step_batch(tokens, offsets, spec.model, mask_seed(spec.seed, step))  # (B, T) each, the global batch
    count = max(1, int((y != IGNORE).sum()))
    share = spec.batch_size // world.size
    x, y = x[world.rank * share : (world.rank + 1) * share], y[world.rank * share : (world.rank + 1) * share]
    micro_batches = list(zip(x.split(spec.micro_batch_size), y.split(spec.micro_batch_size)))
    step_loss = 0.0
    for index, (xm, ym) in enumerate(micro_batches):
        last = index == len(micro_batches) - 1
        with _no_gradient_sync(forward, last):
            with _autocast(spec):
                logits = forward(xm.to(spec.device))  # (b, T, V)
            loss_sum = cross_entropy_sum(logits, ym.to(spec.device))
            (loss_sum * (world.size / count)).backward()
        step_loss += loss_sum.item() / count
    return sum_over_processes(step_loss, world)


EVAL_LOGITS = 1 << 22
"""Logits (windows x positions x vocabulary) per validation forward pass: 16 MB in fp32."""


@torch.no_grad()
def validation_loss(forward: nn.Module, val: TokenFile, offsets: torch.Tensor, spec: PretrainSpec, world: World) -> float:
    """Mean loss per predicted token over the fixed validation windows (each process scores its slice)."""
    was_training = forward.training
    forward.eval()
    x, y = step_batch(val, offsets, spec.model, mask_seed(spec.seed, -1))  # (N, T) each
    share = math.ceil(len(x) / world.size)
    # No activations are kept for a backward pass, so windows go through in chunks bounded by their logits, not by
    # the training micro-batch: tiny forwards of a small model spend more time in overhead than in matmuls.
    chunk = max(spec.micro_batch_size, EVAL_LOGITS // (spec.model.seq_len * spec.model.vocab_size))
    total, count = 0.0, 0
    for xm, ym in zip(x[world.rank * share :][:share].split(chunk), y[world.rank * share :][:share].split(chunk)):
        with _autocast(spec):
            logits = forward(xm.to(spec.device))  # (b, T, V)
        total += cross_entropy_sum(logits, ym.to(spec.device)).item()
        count += int((ym != IGNORE).sum())
    forward.train(was_training)
    return sum_over_processes(total, world) / max(1.0, sum_over_processes(count, world))


def score_best_weights(spec: PretrainSpec, model: nn.Module, data: TrainData, ctx: StepContext, world: World) -> float | None:
    """The best weights' loss on `final_eval_batches` batches of non-overlapping validation windows spread over the
    split (all of it when it holds no more), not only those that chose the weights; None without a final
    evaluation or without validation. Leaves the best weights in `model`."""
    best = ctx.scratch_dir / "best" / "model.safetensors"
    if spec.final_eval_batches is None or data.val is None or not best.is_file():
        return None
    load_model_weights(best, model, spec.device)
    offsets = tiled_offsets(spec.final_eval_batches * spec.batch_size, len(data.val), spec.model.seq_len)
    return validation_loss(model, data.val, offsets, spec, world)


class Speed:
    """Wall-clock throughput of this session's steps, and MFU against the device's measured matmul peak."""

    def __init__(self, spec: PretrainSpec, model: nn.Module, world: World):
        self.tokens_per_step = spec.tokens_per_step
        self.flops_per_token = flops_per_token(spec.model, parameter_count(spec.model))
        self.peak = matmul_peak_flops(spec.device, spec.precision) * world.size
        self.device = spec.device
        self.steps, self.seconds, self._clock = 0, 0.0, 0.0

    def start(self) -> None:
        self._clock = time.perf_counter()

    def stop(self) -> None:
        self.steps += 1
        self.seconds += time.perf_counter() - self._clock

    def tokens_per_s(self) -> float:
        return self.steps * self.tokens_per_step / self.seconds if self.seconds > 0 else 0.0

    def mfu(self) -> float:
        return self.tokens_per_s() * self.flops_per_token / self.peak if self.peak > 0 else 0.0

    def figures(self) -> dict[str, float]:
        """The metrics that depend on wall-clock time or the machine (left out of exactness comparisons)."""
        return {"tokens_per_s": round(self.tokens_per_s(), 1), "mfu": round(self.mfu(), 4),
                "memory_bytes": peak_memory_bytes(self.device)}


def _validation_offsets(spec: PretrainSpec, data: TrainData) -> torch.Tensor | None:
    if data.val is None:
        return None
    # Whole batches, not micro-batches: the validation windows must not depend on how many processes share a step.
    return validation_offsets(spec.seed, spec.eval_batches * spec.batch_size, len(data.val), spec.model.seq_len)


def _no_gradient_sync(forward: nn.Module, last_micro_batch: bool) -> contextlib.AbstractContextManager:
    """DDP all-reduces gradients after every backward; with accumulation only the last one needs it."""
    if last_micro_batch or not hasattr(forward, "no_sync"):
        return contextlib.nullcontext()
    return forward.no_sync()


def _autocast(spec: PretrainSpec) -> contextlib.AbstractContextManager:
    if spec.precision == "bf16":
        return torch.autocast(device_type=spec.device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _clip_gradients(model: nn.Module, max_norm: float | None) -> float:
    """The global gradient norm before clipping (clipping only when `max_norm` is set)."""
    limit = max_norm if max_norm is not None else float("inf")
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), limit)
    return (norm.full_tensor() if isinstance(norm, DTensor) else norm).item()


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)
