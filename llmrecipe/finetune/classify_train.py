"""The classification training loop: shuffled batches of whole examples, weighted cross-entropy, AdamW with the
pre-training schedule, validation loss, accuracy and macro-F1, early stopping, the best weights, exact resume.

Every random draw is a function of (seed, step): the example order of an epoch comes from (seed, epoch) and
dropout from (seed, step), so the data cursor of a resumed run is its step number (as in training/loop.py).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from llmrecipe.evals.classification import class_scores, confusion_matrix
from llmrecipe.finetune.classify_data import pad_right
from llmrecipe.finetune.classify_model import Classifier, predict_probabilities
from llmrecipe.plan.specs import FinetuneSpec
from llmrecipe.run.context import StepContext
from llmrecipe.training.checkpoint import latest_checkpoint, load_checkpoint, save_best, save_checkpoint
from llmrecipe.training.distributed import World, barrier, sum_over_processes, wrap
from llmrecipe.training.metrics import MetricsLog
from llmrecipe.training.optim import build_optimizer
from llmrecipe.training.schedule import learning_rate


@dataclass
class EncodedSplit:
    rows: list[list[int]]
    """Token ids per example (unpadded)."""
    labels: torch.Tensor
    """Class ids (N,)."""

    def __len__(self) -> int:
        return len(self.rows)


def total_steps(spec: FinetuneSpec, train: EncodedSplit) -> int:
    """Steps of the budget: as the plan derived them (steps, tokens), or from epochs of batches of examples."""
    if spec.total_steps is not None:
        return spec.total_steps
    return max(1, math.ceil(spec.epochs * math.ceil(len(train) / spec.batch_size)))


def batch_indices(seed: int, step: int, examples: int, batch_size: int) -> torch.Tensor:
    """The examples of step `step`: epochs walk a permutation drawn from (seed, epoch); the last batch may be short."""
    per_epoch = math.ceil(examples / batch_size)
    epoch, position = divmod(step, per_epoch)
    order = torch.randperm(examples, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return order[position * batch_size : (position + 1) * batch_size]


def train_classifier(
    model: Classifier, train: EncodedSplit, val: EncodedSplit | None, spec: FinetuneSpec, steps: int,
    weights: torch.Tensor | None, ctx: StepContext, world: World = World(),
) -> dict[str, Any]:
    """Train `model` in place for `steps` steps (or until early stopping); returns summary metrics and records.

    `spec` gives the training controls (optim, batch sizes, eval/checkpoint/log intervals, patience, precision,
    device, seed).
    """
    model.to(spec.device).train()
    wrapped = wrap(model, "ddp", world)
    forward = torch.compile(wrapped, dynamic=True) if spec.compile else wrapped  # batches vary in length
    optimizer = build_optimizer(model, spec.optim, spec.device)
    counters: dict[str, Any] = {"step": 0, "best_val_loss": None, "evals_without_improvement": 0, "unlogged_losses": []}
    checkpoints = ctx.scratch_dir / "checkpoints"
    if (checkpoint := latest_checkpoint(checkpoints)) is not None:
        counters = {**counters, **load_checkpoint(checkpoint, model, optimizer, spec.device)}
        ctx.log(f"resumed from checkpoint at step {counters['step']}")
    metrics = MetricsLog(ctx.scratch_dir / "metrics.jsonl", counters["step"], ctx.event, enabled=world.is_main,
                         tensorboard=spec.tensorboard)
    weights = weights.to(spec.device) if weights is not None else None
    val = _validation_subset(val, spec.eval_batches * spec.batch_size)
    progress = ctx.progress(steps, "steps", completed=counters["step"])
    last_val: dict[str, float] = {}
    stopped_early = False
    step = counters["step"]
    while step < steps:
        lr = learning_rate(spec.optim, step, steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        torch.manual_seed(spec.seed * 1_000_003 + step)  # dropout masks are a function of the step
        loss = accumulate_gradients(forward, spec, train, batch_indices(spec.seed, step, len(train), spec.batch_size),
                                    weights, world)
        grad_norm = _clip(model, spec.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        counters["step"] = step
        counters["unlogged_losses"].append(loss)
        if step % spec.log_every == 0 or step == steps:
            metrics.write({"step": step, "loss": sum(counters["unlogged_losses"]) / len(counters["unlogged_losses"]),
                           "lr": lr, "grad_norm": grad_norm})
            counters["unlogged_losses"] = []
        if val is not None and (step % spec.eval_every == 0 or step == steps):
            last_val = validate(model, val, spec)
            metrics.write({"step": step, **last_val})
            stopped_early = _track_best(counters, last_val["val_loss"], spec, ctx, model, world)
        if step % spec.checkpoint_every == 0 and step < steps and not stopped_early:
            save_checkpoint(checkpoints, model, optimizer, counters, world)
        progress.advance(1, loss=loss, lr=lr, **({"val_acc": last_val["val_accuracy"]} if last_val else {}))
        if stopped_early:
            ctx.log(f"early stopping at step {step}: no better validation loss in {spec.early_stopping_patience} evaluations")
            break
    progress.close()
    barrier(world)
    train_losses = [r["loss"] for r in metrics.records if "loss" in r]
    return {
        "steps": step,
        "train_loss": train_losses[-1] if train_losses else None,
        "val_loss": last_val.get("val_loss"),
        "val_accuracy": last_val.get("val_accuracy"),
        "val_macro_f1": last_val.get("val_macro_f1"),
        "best_val_loss": counters["best_val_loss"],
        "stopped_early": stopped_early,
        "metrics_records": metrics.records,
    }


def accumulate_gradients(
    forward: torch.nn.Module, spec: FinetuneSpec, train: EncodedSplit, chosen: torch.Tensor, weights: torch.Tensor | None,
    world: World,
) -> float:
    """Forward and backward over this process's share of the batch `chosen`; returns the batch's loss.

    The loss is the (class-weighted) mean over the whole batch whatever the micro-batching or process count:
    each micro-batch adds its weighted sum / the batch's total weight (times the process count, as DDP averages).
    """
    labels = train.labels[chosen]  # (B,)
    total_weight = float(weights.cpu()[labels].sum()) if weights is not None else float(len(labels))
    share = math.ceil(len(chosen) / world.size)
    mine = chosen[world.rank * share : (world.rank + 1) * share]
    micro = spec.micro_batch_size or spec.batch_size
    batch_loss = 0.0
    pieces = list(mine.split(micro))
    for index, piece in enumerate(pieces):
        ids, lengths = pad_right([train.rows[i] for i in piece.tolist()])  # (b, T), (b,)
        with _no_sync(forward, index == len(pieces) - 1):
            with _autocast(spec):
                logits = forward(ids.to(spec.device), lengths.to(spec.device))  # (b, C)
            loss_sum = F.cross_entropy(logits.float(), train.labels[piece].to(spec.device), weight=weights, reduction="sum")
            (loss_sum * (world.size / total_weight)).backward()
        batch_loss += loss_sum.item() / total_weight
    return sum_over_processes(batch_loss, world)


def validate(model: Classifier, val: EncodedSplit, spec: FinetuneSpec) -> dict[str, float]:
    """Mean cross-entropy (unweighted), accuracy and macro-F1 on the held-out examples."""
    probabilities = predict_probabilities(model, val.rows, spec.micro_batch_size or spec.batch_size, spec.device)
    picked = probabilities[torch.arange(len(val)), val.labels].clamp_min(1e-12)  # (N,)
    predictions = probabilities.argmax(dim=1).numpy()
    scores = class_scores(confusion_matrix(val.labels.numpy(), predictions, len(model.labels)))
    return {"val_loss": float(-picked.log().mean()), "val_accuracy": scores.accuracy, "val_macro_f1": scores.macro_f1}


def _track_best(counters: dict[str, Any], val_loss: float, spec: FinetuneSpec, ctx: StepContext, model: Classifier, world: World) -> bool:
    """Keep the best weights; True when early stopping's patience has run out."""
    if counters["best_val_loss"] is None or val_loss < counters["best_val_loss"]:
        counters["best_val_loss"], counters["evals_without_improvement"] = val_loss, 0
        save_best(ctx.scratch_dir / "best", model, world)
    else:
        counters["evals_without_improvement"] += 1
    patience = spec.early_stopping_patience
    return patience is not None and counters["evals_without_improvement"] >= patience


def _validation_subset(val: EncodedSplit | None, limit: int) -> EncodedSplit | None:
    """The first `limit` held-out examples, the same at every evaluation (None when there are none)."""
    if val is None or not len(val):
        return None
    return EncodedSplit(val.rows[:limit], val.labels[:limit])


def _clip(model: torch.nn.Module, max_norm: float | None) -> float:
    """The gradient norm of the trained parameters before clipping (clipping only when `max_norm` is set)."""
    trained = [p for p in model.parameters() if p.requires_grad]
    norm = torch.nn.utils.clip_grad_norm_(trained, max_norm if max_norm is not None else float("inf"))
    return float(norm)


def _autocast(spec: FinetuneSpec) -> contextlib.AbstractContextManager:
    if spec.precision == "bf16":
        return torch.autocast(device_type=spec.device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _no_sync(forward: torch.nn.Module, last_micro_batch: bool) -> contextlib.AbstractContextManager:
    """DDP all-reduces gradients after every backward; with accumulation only the last one needs it."""
    if last_micro_batch or not hasattr(forward, "no_sync"):
        return contextlib.nullcontext()
    return forward.no_sync()
