"""Optimizers with decay only where it regularizes: weight matrices, not norms, biases or embeddings."""

from __future__ import annotations

import torch
from torch import nn

from llmrecipe.recipe.pretrain import OptimConfig


NO_DECAY = "no_weight_decay"
"""A parameter carrying this attribute as True is never decayed: e.g. a frozen matrix whose gradient is masked to a
few rows that learn (decay would make its frozen rows drift)."""


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for param in model.parameters():  # tied weights appear once
        if not param.requires_grad:
            continue
        decays = param.dim() >= 2 and id(param) not in embeddings and not getattr(param, NO_DECAY, False)
        (decay if decays else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, optim: OptimConfig, device: str) -> torch.optim.Optimizer:
    groups = parameter_groups(model, optim.weight_decay)
    if optim.name == "sgd":
        return torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum)
    return torch.optim.AdamW(
        groups,
        lr=optim.lr,
        betas=(optim.beta1, optim.beta2),
        fused=device in ("cpu", "cuda"),  # one kernel per parameter instead of a chain of for-each ops
    )
