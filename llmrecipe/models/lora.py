"""LoRA (Hu et al., 2021): a frozen linear layer plus a trained low-rank update, y = W x + (alpha / r) * B A x.

`apply_lora` swaps each target nn.Linear for a `LoraLinear` that keeps the original weight (same state-dict
name, frozen) and adds `lora_A` (r, in) and `lora_B` (out, r). B starts at zero, so the wrapped model computes
exactly what the original did until training moves it. `merge_lora` folds B A into W and puts plain nn.Linear
layers back, so exporters and loaders see an ordinary model. `adapters_disabled` runs the wrapped model as the
original for a while: preference tuning's reference model is the same weights without their adapters, not a copy.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from llmrecipe.models.family import matches_target
from llmrecipe.recipe.finetune import LoraConfig

ADAPTER_KEYS = ("lora_A", "lora_B")
"""State-dict suffixes of adapter tensors."""


class LoraLinear(nn.Linear):
    """nn.Linear with a low-rank trained update; the base weight and bias stay frozen."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float):
        # Built on the meta device: no memory and no random draws for a weight that is replaced at once.
        super().__init__(base.in_features, base.out_features, bias=base.bias is not None, device="meta")
        self.weight, self.bias = base.weight, base.bias  # the same tensors: state-dict names are unchanged
        self.scale = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))  # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))  # (out, r)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear and the LoRA paper's code
        self.adapter_dropout = nn.Dropout(dropout)
        self.adapters_enabled = True
        """False inside `adapters_disabled`: the layer computes the frozen base weight's output alone."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.adapters_enabled:
            return F.linear(x, self.weight, self.bias)
        update = F.linear(F.linear(self.adapter_dropout(x), self.lora_A), self.lora_B)  # (..., out)
        return F.linear(x, self.weight, self.bias) + self.scale * update

    def merged(self) -> nn.Linear:
        """A plain nn.Linear computing the same function (in eval mode): W + scale * B A."""
        plain = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device=self.weight.device)
        with torch.no_grad():
            plain.weight.copy_(self.weight + self.scale * (self.lora_B @ self.lora_A))  # (out, in)
            if self.bias is not None:
                plain.bias.copy_(self.bias)
        return plain


def target_modules(model: nn.Module, targets: list[str]) -> list[str]:
    """Names of the nn.Linear modules matched by a target suffix, in model order."""
    return [name for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and any(matches_target(name, t) for t in targets)]


def apply_lora(model: nn.Module, config: LoraConfig) -> int:
    """Wrap the target linear layers, freeze every other parameter; returns the trainable parameter count.

    Seed torch before calling: the A matrices are drawn from the global generator.
    """
    names = target_modules(model, config.targets)
    if not names:
        raise ValueError(f"lora.targets {config.targets} match no linear layer of the model")
    for param in model.parameters():
        param.requires_grad_(False)
    for name in names:
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, child, LoraLinear(getattr(owner, child), config.rank, config.alpha, config.dropout))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@contextlib.contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block every LoRA layer of `model` computes its base weight's output alone: the model as it was
    before `apply_lora`, with no second copy of its weights. A model without adapters is unchanged."""
    layers = [module for module in model.modules() if isinstance(module, LoraLinear)]
    for layer in layers:
        layer.adapters_enabled = False
    try:
        yield model
    finally:
        for layer in layers:
            layer.adapters_enabled = True


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter tensors, by their full state-dict names (what adapter.safetensors holds)."""
    return {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()
            if name.rsplit(".", 1)[-1] in ADAPTER_KEYS}


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight in place, leaving plain nn.Linear layers; returns the model."""
    wrapped = [name for name, module in model.named_modules() if isinstance(module, LoraLinear)]
    for name in wrapped:
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, child, getattr(owner, child).merged())
    return model


def merge_adapter_tensors(weights: dict[str, torch.Tensor], adapter: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """Plain weights + adapter tensors (as saved) -> merged plain weights, without building a model."""
    merged = dict(weights)
    for name in adapter:
        if name.endswith(".lora_A"):
            module = name[: -len(".lora_A")]
            delta = adapter[f"{module}.lora_B"] @ adapter[name]  # (out, r) @ (r, in)
            merged[f"{module}.weight"] = weights[f"{module}.weight"] + scale * delta.to(weights[f"{module}.weight"])
    return merged
