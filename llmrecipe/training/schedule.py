"""Learning-rate schedules as pure functions of the step, so a resumed run needs no schedule state."""

from __future__ import annotations

import math

from llmrecipe.recipe.pretrain import OptimConfig


def learning_rate(optim: OptimConfig, step: int, total_steps: int) -> float:
    """Linear warmup to `lr`; then constant, linear or cosine decay to `lr * min_lr_ratio` at the last step, or
    warmup-stable-decay (Hu et al., 2024): constant until the last `decay_fraction` of the steps, then linear."""
    if step < optim.warmup:
        return optim.lr * (step + 1) / optim.warmup
    if optim.schedule == "constant":
        return optim.lr
    min_lr = optim.lr * optim.min_lr_ratio
    if optim.schedule == "wsd":
        decay_steps = max(1, round(optim.decay_fraction * total_steps))
        decay_start = max(optim.warmup, total_steps - decay_steps)
        if step < decay_start:
            return optim.lr
        progress = (step + 1 - decay_start) / max(1, total_steps - decay_start)  # reaches 1 at the last step
        return optim.lr + (min_lr - optim.lr) * min(1.0, progress)
    progress = min(1.0, (step - optim.warmup) / max(1, total_steps - 1 - optim.warmup))
    if optim.schedule == "linear":
        return optim.lr + (min_lr - optim.lr) * progress
    return min_lr + 0.5 * (optim.lr - min_lr) * (1.0 + math.cos(math.pi * progress))
