"""What the trainer asks of a task, whatever it trains: its batches, its objective and its validation metrics.

A task's batches are a pure function of (seed, step), so a resumed run's data cursor is its step and any number of
processes agree on the global batch without talking. Each process builds only its own rows of it; the loss is
normalised by the count over the whole global batch (known to every process without communication), so N
processes train exactly what one process does, up to float summation order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

Batch = dict[str, torch.Tensor]
"""A micro-batch: the keyword arguments of the task's objective, CPU tensors until the trainer moves them."""


@dataclass
class StepBatch:
    """This process's share of one optimizer step's global batch."""

    micro_batches: list[Batch]
    normalizer: float
    """The loss's denominator over the whole global batch: its target tokens, or its total class weight."""
    tokens: int
    """Tokens of the whole global batch, for throughput."""


class Task(Protocol):
    examples: float
    """Examples in one pass over the training data, for epoch budgets (windows, packed rows, labelled texts)."""
    variable_shapes: bool
    """Batches change shape from step to step (compile then traces dynamic shapes)."""

    def objective(self, model: nn.Module) -> nn.Module:
        """A module around `model` whose forward takes a Batch and returns summed statistics: at least `loss` (summed
        over the batch) and `count`. The trainer distributes and compiles this module, so the loss is computed inside
        the compiled graph."""
        ...

    def train_batch(self, step: int, rows: range, micro_batch_size: int) -> StepBatch:
        """Rows `rows` of step `step`'s global batch, in micro-batches. Called from a background thread: it must use
        no global random state."""
        ...

    def validation_batches(self) -> list[Batch]:
        """The held-out batches scored at every evaluation (the same each time); empty when there are none."""
        ...

    def final_batches(self) -> list[Batch] | None:
        """Batches on which the best weights are scored once training ends; None: no final score."""
        ...

    def validation_metrics(self, totals: dict[str, torch.Tensor]) -> dict[str, float]:
        """Metrics from the objective's statistics summed over the validation batches; `val_loss` among them."""
        ...


def share(rows: int, world_size: int, rank: int) -> range:
    """This process's contiguous share of `rows` (the last may be short, or empty)."""
    size = math.ceil(rows / world_size)
    return range(min(rows, rank * size), min(rows, (rank + 1) * size))


def epoch_order(seed: int, step: int, batch_size: int, examples: int, cache: dict[int, torch.Tensor]) -> torch.Tensor:
    """Example indices of step `step`: consecutive slices of a fresh permutation per epoch, so every example is seen
    once per epoch and a batch that crosses an epoch's end takes the next epoch's first examples. `cache` keeps the
    permutations drawn (one per epoch), so a step costs a slice, not a shuffle."""
    first = step * batch_size
    wanted = torch.arange(first, first + batch_size)
    epochs, offsets = wanted // examples, wanted % examples
    for epoch in epochs.unique().tolist():
        if epoch not in cache:
            cache[epoch] = torch.randperm(examples, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
            for old in [e for e in cache if e < epoch - 1]:
                del cache[old]
    return torch.stack([cache[int(e)][int(o)] for e, o in zip(epochs, offsets)])


def micro_batches(batch: Batch, micro_batch_size: int) -> list[Batch]:
    """A batch split along its first dimension into micro-batches."""
    names = list(batch)
    pieces = zip(*(batch[name].split(micro_batch_size) for name in names))
    return [dict(zip(names, piece)) for piece in pieces]
