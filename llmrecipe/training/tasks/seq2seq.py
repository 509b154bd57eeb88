"""Encoder-decoder training: the objective (cross-entropy of the decoder's predictions of its targets given the
encoded input), shared by span-corruption pre-training and text-to-text fine-tuning, and the fine-tuning task on
(input, output) pairs."""

from __future__ import annotations

from typing import Protocol, Sequence

import torch
from torch import nn

from llmrecipe.training.loss import IGNORE, cross_entropy_sum
from llmrecipe.training.task import Batch, StepBatch, epoch_order


def decoder_inputs(targets: torch.Tensor, start_id: int) -> torch.Tensor:
    """Targets (B, T) shifted right behind the start token (teacher forcing); IGNORE positions become the start id
    (they sit after the real targets, where the causal decoder never reads them)."""
    shifted = torch.cat([torch.full_like(targets[:, :1], start_id), targets[:, :-1]], dim=1)
    return torch.where(shifted == IGNORE, start_id, shifted)


class Seq2SeqObjective(nn.Module):
    """Summed cross-entropy at the decoder's target positions (IGNORE elsewhere), the input padded where
    `input_mask` (B, S) is False."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor, decoder_inputs: torch.Tensor, targets: torch.Tensor,
                input_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        logits = self.model(inputs, decoder_inputs, input_mask)  # (B, T, V)
        return {"loss": cross_entropy_sum(logits, targets), "count": (targets != IGNORE).sum()}


class Pair(Protocol):
    inputs: list[int]
    targets: list[int]


def padded_batch(pairs: Sequence[Pair], start_id: int) -> Batch:
    """Pairs -> a batch padded on the right to its longest input and target: `input_mask` marks real inputs, padded
    targets are IGNORE (so out of the loss)."""
    width = max(len(p.inputs) for p in pairs)
    length = max(len(p.targets) for p in pairs)
    inputs = torch.full((len(pairs), width), start_id, dtype=torch.long)
    targets = torch.full((len(pairs), length), IGNORE, dtype=torch.long)
    for row, pair in enumerate(pairs):
        inputs[row, : len(pair.inputs)] = torch.tensor(pair.inputs)
        targets[row, : len(pair.targets)] = torch.tensor(pair.targets)
    mask = torch.arange(width)[None, :] < torch.tensor([len(p.inputs) for p in pairs])[:, None]  # (B, S)
    return {"inputs": inputs, "decoder_inputs": decoder_inputs(targets, start_id), "targets": targets,
            "input_mask": mask}


class Seq2SeqTask:
    """Text-to-text fine-tuning: each step's examples (a fresh order per epoch) padded per micro-batch; the loss
    falls on the target tokens."""

    variable_shapes = True

    def __init__(self, train: Sequence[Pair], val: Sequence[Pair], seed: int, batch_size: int, eval_batches: int,
                 start_id: int):
        self.train, self.val, self.seed, self.batch_size = train, val, seed, batch_size
        self.eval_batches, self.start_id = eval_batches, start_id
        self.examples = len(train)
        self._orders: dict[int, torch.Tensor] = {}

    def objective(self, model: nn.Module) -> nn.Module:
        return Seq2SeqObjective(model)

    def train_batch(self, step: int, rows: range, micro_batch_size: int) -> StepBatch:
        order = epoch_order(self.seed, step, self.batch_size, len(self.train), self._orders).tolist()
        chosen = [self.train[i] for i in order]  # the global batch: every process knows its target count
        mine = chosen[rows.start : rows.stop]
        batches = [padded_batch(mine[i : i + micro_batch_size], self.start_id)
                   for i in range(0, len(mine), micro_batch_size)]
        return StepBatch(batches, sum(len(p.targets) for p in chosen),
                         sum(len(p.inputs) + len(p.targets) for p in chosen))

    def validation_batches(self) -> list[Batch]:
        held = list(self.val)[: self.eval_batches * self.batch_size]
        return [padded_batch(held[i : i + self.batch_size], self.start_id) for i in range(0, len(held), self.batch_size)]

    def final_batches(self) -> list[Batch] | None:
        return None

    def validation_metrics(self, totals: dict[str, torch.Tensor]) -> dict[str, float]:
        return {"val_loss": float(totals["loss"]) / max(1.0, float(totals["count"]))}
