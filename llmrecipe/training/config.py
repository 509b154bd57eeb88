"""How to train, whatever the task: the trainer's own configuration, built by an executor from its spec."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

from llmrecipe.recipe.pretrain import OptimConfig


@dataclass(frozen=True)
class TrainConfig:
    optim: OptimConfig
    batch_size: int
    """Examples per optimizer step, over all processes."""
    micro_batch_size: int
    """Examples per forward pass and process."""
    total_steps: int | None
    """None with an epoch budget: the trainer derives it from the task's examples per epoch."""
    epochs: float | None
    eval_every: int
    early_stopping_patience: int | None
    on_nonfinite: Literal["stop", "skip", "rollback"]
    activation_checkpointing: bool
    checkpoint_every: int
    log_every: int
    tensorboard: bool
    device: Literal["cpu", "cuda"]
    precision: Literal["fp32", "bf16"]
    compile: bool
    sharding: Literal["ddp", "fsdp"]
    seed: int
    fsdp_unit: str | None = "blocks"
    """The model's module lists whose entries FSDP shards one by one (the family's unit); None: none."""
    flops_per_token: int = 0
    """Training FLOPs per token of the model, for MFU (0: not reported)."""
    score_start: bool = False
    """Measure the validation metrics of the starting weights too (`base_val_loss`): what a fine-tune improves on."""

    @classmethod
    def of(cls, spec: Any, **extra: Any) -> TrainConfig:
        """The fields of a training spec (any object with these attributes) plus `extra`."""
        values = {f.name: getattr(spec, f.name) for f in fields(cls) if hasattr(spec, f.name)}
        return cls(**{**values, **extra})
