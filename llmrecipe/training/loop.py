"""The training loop: one visible function, resumable at any checkpoint with byte-identical results."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmrecipe.errors import StepError
from llmrecipe.plan.specs import PretrainSpec
from llmrecipe.run.context import StepContext
from llmrecipe.training.batches import TokenFile, step_offsets, validation_offsets
from llmrecipe.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from llmrecipe.training.metrics import MetricsLog
from llmrecipe.training.optim import build_adamw
from llmrecipe.training.schedule import learning_rate


@dataclass
class TrainData:
    train: TokenFile
    val: TokenFile | None
    """None when the validation split is too short for one window; validation is then skipped."""


def train(spec: PretrainSpec, model: nn.Module, data: TrainData, ctx: StepContext) -> dict[str, Any]:
    seq_len, vocab = spec.model.seq_len, spec.model.vocab_size
    model.to(spec.device).train()
    optimizer = build_adamw(model, spec.optim, spec.device)
    # Everything the loop carries from step to step; saved in each checkpoint so a resume continues it.
    counters: dict[str, Any] = {"step": 0, "tokens": 0, "best_val_loss": None, "unlogged_losses": []}
    checkpoints = ctx.scratch_dir / "checkpoints"
    if (checkpoint := latest_checkpoint(checkpoints)) is not None:
        counters = load_checkpoint(checkpoint, model, optimizer, spec.device)
        ctx.log(f"resumed from checkpoint at step {counters['step']}")
    metrics = MetricsLog(ctx.scratch_dir / "metrics.jsonl", counters["step"], ctx.event)
    forward = torch.compile(model) if spec.compile else model
    val_offsets = (
        validation_offsets(spec.seed, spec.eval_batches * spec.micro_batch_size, len(data.val), seq_len)
        if data.val is not None
        else None
    )
    first_step = counters["step"]
    progress = ctx.progress(spec.total_steps, "steps", completed=first_step)
    train_seconds, last_val = 0.0, None

    for step in range(counters["step"], spec.total_steps):
        clock = time.perf_counter()
        lr = learning_rate(spec.optim, step, spec.total_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        torch.manual_seed(spec.seed * 1_000_003 + step)  # dropout masks are a function of the step too
        offsets = step_offsets(spec.seed, step, spec.batch_size, len(data.train), seq_len)
        step_loss = 0.0
        for micro_offsets in offsets.split(spec.micro_batch_size):
            x, y = (t.to(spec.device) for t in data.train.windows(micro_offsets, seq_len))  # (b, T) each
            with _autocast(spec):
                logits = forward(x)  # (b, T, V)
            loss = F.cross_entropy(logits.float().view(-1, vocab), y.reshape(-1))
            # Every micro-batch has the same number of tokens, so averaging their means is the per-token mean.
            (loss / spec.grad_accum).backward()
            step_loss += loss.item() / spec.grad_accum
        if not math.isfinite(step_loss):
            raise StepError(
                f"training loss became {step_loss} at step {step}; lower optim.lr or set optim.grad_clip, "
                "then run again (it resumes from the last checkpoint)"
            )
        grad_norm = _clip_gradients(model, spec.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        counters["step"], counters["tokens"] = step + 1, counters["tokens"] + spec.tokens_per_step
        train_seconds += time.perf_counter() - clock
        counters["unlogged_losses"].append(step_loss)
        done = step + 1

        if done % spec.log_every == 0 or done == spec.total_steps:
            metrics.write(
                {"step": done, "loss": _mean(counters["unlogged_losses"]), "lr": lr, "grad_norm": grad_norm,
                 "tokens": counters["tokens"], "tokens_per_s": _rate(spec, done - first_step, train_seconds)}
            )
            counters["unlogged_losses"] = []
        if val_offsets is not None and (done % spec.eval_every == 0 or done == spec.total_steps):
            last_val = validation_loss(forward, data.val, val_offsets, spec)
            best = counters["best_val_loss"]
            counters["best_val_loss"] = last_val if best is None else min(best, last_val)
            metrics.write({"step": done, "val_loss": last_val})
        if done % spec.checkpoint_every == 0 and done < spec.total_steps:
            save_checkpoint(checkpoints, model, optimizer, counters)
        shown = {"loss": step_loss, "lr": lr, "tok_s": _rate(spec, done - first_step, train_seconds)}
        progress.advance(1, **shown, **({"val_loss": last_val} if last_val is not None else {}))
    progress.close()
    train_losses = [r["loss"] for r in metrics.records if "loss" in r]
    return {
        "steps": counters["step"],
        "tokens": counters["tokens"],
        "train_loss": train_losses[-1] if train_losses else None,
        "val_loss": last_val,
        "best_val_loss": counters["best_val_loss"],
        "tokens_per_s": round(_rate(spec, counters["step"] - first_step, train_seconds), 1),
        "metrics_records": metrics.records,
    }


@torch.no_grad()
def validation_loss(forward: nn.Module, val: TokenFile, offsets: torch.Tensor, spec: PretrainSpec) -> float:
    """Mean next-token loss over the fixed validation windows."""
    was_training = forward.training
    forward.eval()
    total, count = 0.0, 0
    for chunk in offsets.split(spec.micro_batch_size):
        x, y = (t.to(spec.device) for t in val.windows(chunk, spec.model.seq_len))
        with _autocast(spec):
            logits = forward(x)  # (b, T, V)
        total += F.cross_entropy(logits.float().view(-1, spec.model.vocab_size), y.reshape(-1), reduction="sum").item()
        count += y.numel()
    forward.train(was_training)
    return total / count


def _autocast(spec: PretrainSpec) -> contextlib.AbstractContextManager:
    if spec.precision == "bf16":
        return torch.autocast(device_type=spec.device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _clip_gradients(model: nn.Module, max_norm: float | None) -> float:
    """The global gradient norm before clipping (clipping only when `max_norm` is set)."""
    limit = max_norm if max_norm is not None else float("inf")
    return torch.nn.utils.clip_grad_norm_(model.parameters(), limit).item()


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _rate(spec: PretrainSpec, steps_this_session: int, seconds: float) -> float:
    return steps_this_session * spec.tokens_per_step / seconds if seconds > 0 else 0.0
