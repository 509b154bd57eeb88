"""Learning-rate schedules as pure functions of the step, so a resumed run needs no schedule state."""

from __future__ import annotations

import math

from llmrecipe.recipe.pretrain import OptimConfig


def learning_rate(optim: OptimConfig, step: int, total_steps: int) -> float:
    """Linear warmup to `lr`, then constant or cosine decay to `lr * min_lr_ratio` at the last step."""
    if step < optim.warmup:
        return optim.lr * (step + 1) / optim.warmup
    if optim.schedule == "constant":
        return optim.lr
    min_lr = optim.lr * optim.min_lr_ratio
    progress = (step - optim.warmup) / max(1, total_steps - 1 - optim.warmup)
    return min_lr + 0.5 * (optim.lr - min_lr) * (1.0 + math.cos(math.pi * min(1.0, progress)))
