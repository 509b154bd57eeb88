"""What the training executors share: their spec in the trainer's terms."""

from __future__ import annotations

from typing import Any

from llmrecipe.models.family import Family
from llmrecipe.plan.specs import TrainingSpec
from llmrecipe.training.config import TrainConfig


def train_config(spec: TrainingSpec, arch: Family, **extra: Any) -> TrainConfig:
    """The trainer's configuration of a training spec, with the family's FSDP unit and FLOPs per token (for MFU)."""
    return TrainConfig.of(spec, fsdp_unit=arch.fsdp_unit, flops_per_token=arch.flops_per_token(spec.model), **extra)
