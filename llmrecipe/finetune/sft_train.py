"""The SFT training loop over packed rows: exact resume, validation on held-out examples, early stopping.

It follows llmrecipe/training/loop.py (same checkpoints, metrics log and schedule); what differs is the batch:
rows of packed examples, drawn as a pure function of (seed, step) from a per-epoch permutation, with loss only
on the assistant's tokens, summed over the batch and divided by their count.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import torch
from torch import nn

from llmrecipe.errors import StepError
from llmrecipe.finetune.model_io import optimizer_groups
from llmrecipe.finetune.packing import Packed, rows
from llmrecipe.plan.specs import FinetuneSpec
from llmrecipe.run.context import StepContext
from llmrecipe.training.batches import IGNORE
from llmrecipe.training.checkpoint import latest_checkpoint, load_checkpoint, save_best, save_checkpoint
from llmrecipe.training.distributed import World
from llmrecipe.training.loss import cross_entropy_sum
from llmrecipe.training.metrics import MetricsLog
from llmrecipe.training.optim import build_optimizer
from llmrecipe.training.schedule import learning_rate


def step_rows(seed: int, step: int, batch_size: int, n_rows: int) -> torch.Tensor:
    """Row indices of step `step`: consecutive slices of a fresh permutation per epoch, so every row is seen once
    per epoch, and the cursor of a resumed run is just its step."""
    first = step * batch_size
    index = []
    for position in range(first, first + batch_size):
        epoch, offset = divmod(position, n_rows)
        permutation = torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        index.append(int(permutation[offset]))
    return torch.tensor(index)


def build_optimizer_for(model: nn.Module, spec: FinetuneSpec) -> torch.optim.Optimizer:
    if spec.lora is None:
        return build_optimizer(model, spec.optim, spec.device)
    groups = optimizer_groups(model, spec.optim.weight_decay)
    if spec.optim.name == "sgd":
        return torch.optim.SGD(groups, lr=spec.optim.lr, momentum=spec.optim.momentum)
    return torch.optim.AdamW(groups, lr=spec.optim.lr, betas=(spec.optim.beta1, spec.optim.beta2))


def train_sft(spec: FinetuneSpec, model: nn.Module, train: Packed, val: Packed | None, ctx: StepContext) -> dict[str, Any]:
    """Train `model` in place for `spec.total_steps` steps (or until early stopping); returns summary metrics."""
    model.to(spec.device).train()
    optimizer = build_optimizer_for(model, spec)
    counters: dict[str, Any] = {"step": 0, "best_val_loss": None, "evals_without_improvement": 0,
                                "unlogged_losses": [], "base_val_loss": None}
    checkpoints = ctx.scratch_dir / "checkpoints"
    if (checkpoint := latest_checkpoint(checkpoints)) is not None:
        counters = {**counters, **load_checkpoint(checkpoint, model, optimizer, spec.device)}
        ctx.log(f"resumed from checkpoint at step {counters['step']}")
    elif val is not None:
        counters["base_val_loss"] = validation_loss(model, val, spec)  # the starting model, for comparison
    metrics = MetricsLog(ctx.scratch_dir / "metrics.jsonl", counters["step"], ctx.event, tensorboard=spec.tensorboard)
    forward = torch.compile(model) if spec.compile else model
    progress = ctx.progress(spec.total_steps, "steps", completed=counters["step"])
    last_val, stopped_early, started, tokens = None, False, time.perf_counter(), 0

    step = counters["step"]
    while step < spec.total_steps:
        lr = learning_rate(spec.optim, step, spec.total_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        torch.manual_seed(spec.seed * 1_000_003 + step)  # dropout masks are a function of the step
        index = step_rows(spec.seed, step, spec.batch_size, len(train))
        step_loss, counted = accumulate(forward, spec, train, index)
        if not math.isfinite(step_loss):
            raise StepError(f"training loss became {step_loss} at step {step}; lower optim.lr or set optim.grad_clip, "
                            "then run again (it resumes from the last checkpoint)")
        if spec.optim.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], spec.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        tokens += counted
        counters["step"] = step
        counters["unlogged_losses"].append(step_loss)
        if step % spec.log_every == 0 or step == spec.total_steps:
            metrics.write({"step": step, "loss": sum(counters["unlogged_losses"]) / len(counters["unlogged_losses"]),
                           "lr": lr})
            counters["unlogged_losses"] = []
        if val is not None and (step % spec.eval_every == 0 or step == spec.total_steps):
            last_val = validation_loss(forward, val, spec)
            metrics.write({"step": step, "val_loss": last_val})
            if counters["best_val_loss"] is None or last_val < counters["best_val_loss"]:
                counters["best_val_loss"], counters["evals_without_improvement"] = last_val, 0
                save_best(ctx.scratch_dir / "best", model, World())
            else:
                counters["evals_without_improvement"] += 1
            patience = spec.early_stopping_patience
            stopped_early = patience is not None and counters["evals_without_improvement"] >= patience
        if step % spec.checkpoint_every == 0 and step < spec.total_steps and not stopped_early:
            save_checkpoint(checkpoints, model, optimizer, counters)
        progress.advance(1, loss=step_loss, lr=lr, **({"val_loss": last_val} if last_val is not None else {}))
        if stopped_early:
            ctx.log(f"early stopping at step {step}: no better validation loss in {spec.early_stopping_patience} evaluations")
            break
    progress.close()
    train_losses = [r["loss"] for r in metrics.records if "loss" in r]
    seconds = time.perf_counter() - started
    return {
        "steps": counters["step"],
        "train_loss": train_losses[-1] if train_losses else None,
        "val_loss": last_val,
        "best_val_loss": counters["best_val_loss"],
        "base_val_loss": counters["base_val_loss"],
        "stopped_early": stopped_early,
        "target_tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else 0.0,
        "metrics_records": metrics.records,
    }


def accumulate(forward: nn.Module, spec: FinetuneSpec, packed: Packed, index: torch.Tensor) -> tuple[float, int]:
    """Forward and backward over the step's rows in micro-batches; the loss is per assistant token of the batch."""
    count = max(1, int((packed.targets[index] != IGNORE).sum()))
    step_loss = 0.0
    for micro in index.split(spec.micro_batch_size):
        x, y, layout = rows(packed, micro, spec.device)  # (b, T), (b, T)
        with autocast(spec):
            logits = forward(x, cache=layout)  # (b, T, V)
        loss_sum = cross_entropy_sum(logits, y)
        (loss_sum / count).backward()
        step_loss += loss_sum.item() / count
    return step_loss, count


@torch.no_grad()
def validation_loss(forward: nn.Module, val: Packed, spec: FinetuneSpec) -> float:
    """Mean loss per assistant token over the first `eval_batches` batches of held-out rows (the same every time)."""
    was_training = forward.training
    forward.eval()
    index = torch.arange(min(len(val), spec.eval_batches * spec.batch_size))
    total, count = 0.0, 0
    for micro in index.split(spec.micro_batch_size):
        x, y, layout = rows(val, micro, spec.device)
        with autocast(spec):
            logits = forward(x, cache=layout)  # (b, T, V)
        total += cross_entropy_sum(logits, y).item()
        count += int((y != IGNORE).sum())
    forward.train(was_training)
    return total / max(1, count)


def autocast(spec: FinetuneSpec) -> contextlib.AbstractContextManager:
    if spec.precision == "bf16":
        return torch.autocast(device_type=spec.device, dtype=torch.bfloat16)
    return contextlib.nullcontext()

